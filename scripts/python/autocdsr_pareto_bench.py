"""numpy side of benches/autocdsr_pareto.rs: the same four measurements, same shapes.

The min-norm solve is MGDA's Frank-Wolfe written with numpy on a Gram matrix (the public
AutoCDSR code runs the same algorithm with numpy/torch); a_cd is the masked sum
(P * cross_mask).sum over valid query rows.

Run:  python3 scripts/python/autocdsr_pareto_bench.py
"""
import timeit

import numpy as np

rng = np.random.default_rng(7)
N = 700_000
ga = (rng.random(N, dtype=np.float32) - 0.5)
gr = (rng.random(N, dtype=np.float32) - 0.5)


def gram():
    return float(ga @ ga), float(ga @ gr), float(gr @ gr)


def from2(v11, v12, v22):
    if v12 >= v11:
        return 0.999, v11
    if v12 >= v22:
        return 0.001, v22
    g = -(v12 - v22) / (v11 + v22 - 2 * v12)
    return g, v22 + g * (v12 - v22)


def min_norm(m, max_iter=250, tol=1e-5):
    n = m.shape[0]
    best = None
    for i in range(n):
        for j in range(i + 1, n):
            c, d = from2(m[i, i], m[i, j], m[j, j])
            if best is None or d < best[2]:
                best = ((i, j), c, d)
    s = np.zeros(n)
    s[best[0][0]] = best[1]
    s[best[0][1]] = 1 - best[1]
    if n < 3:
        return s
    for _ in range(max_iter):
        ms = m @ s
        t = int(np.argmin(ms))
        nc, _ = from2(float(s @ ms), float(ms[t]), float(m[t, t]))
        new = nc * s
        new[t] += 1 - nc
        if np.abs(new - s).sum() < tol:
            return s
        s = new
    return s


PREFS = np.array([[0.0, 1.0], [1.0, 0.0], [0.7071, 0.7071]])


def pareto(g00, g01, g11, losses):
    c = g01 / np.sqrt(g00 * g11)
    g = np.array([[1.0, c], [c, 1.0]])
    l = np.asarray(losses) / np.linalg.norm(losses)
    w = PREFS - PREFS[1]
    coef = np.vstack([np.eye(2)] + [w[j][None] for j in range(3) if w[j] @ l > 0])
    s = min_norm(coef @ g @ coef.T)
    lam = s @ coef
    lam /= np.abs(lam).sum()
    return lam[0] / lam[1]


vecs = rng.random((5, 64), dtype=np.float32) - 0.5
m5 = (vecs.astype(np.float64) @ vecs.T.astype(np.float64))

B, H, L = 256, 2, 50
p = rng.random((B, H, L, L), dtype=np.float32)
p /= p.sum(-1, keepdims=True)
bi, ii = np.meshgrid(np.arange(B), np.arange(L), indexing="ij")
labels = ((bi + ii * 7) % 3 == 0)
valid = ii >= (bi % 30)


def a_cd():
    cross = (labels[:, :, None] != labels[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    raw = (p * cross[:, None]).sum(axis=(2, 3), dtype=np.float64)
    rows = valid.sum(1)
    return raw, np.where(rows[:, None] > 0, raw / np.maximum(rows, 1)[:, None], 0.0)


g = gram()
for name, fn in [("grad_gram_700k", gram),
                 ("pareto_weights_public_defaults", lambda: pareto(*g, [0.3, 6.2])),
                 ("min_norm_5x64", lambda: min_norm(m5)),
                 ("a_cd_256x2x50x50", a_cd)]:
    t = timeit.Timer(fn)
    n, _ = t.autorange()
    best = min(t.repeat(5, n)) / n
    print(f"{name}: {best * 1e6:.1f} us")
