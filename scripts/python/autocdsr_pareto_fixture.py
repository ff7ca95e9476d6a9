"""Independent fixture for cdsr_lab::train::pareto (tests/autocdsr_pareto.rs).

Exact minimum-norm elements of convex hulls, computed by enumerating every support set S and
solving the KKT system  [M_SS 1; 1^T 0] [c; mu] = [0; 1]  with numpy (no Frank-Wolfe), keeping
the feasible (c >= 0) solution of least cost. Pareto-MTL weights are then built from that exact
solution following the AutoCDSR recipe (objective order (a_cd, L_rec), preference vectors
[[0,1],[1,0],[.7071,.7071]], preferred index 1, l2-normalised gradients, weights normalised to
|l0|+|l1| = 1, coefficient l0/l1).

Run:  python3 scripts/python/autocdsr_pareto_fixture.py > tests/fixtures/autocdsr_pareto.json
"""
import itertools
import json

import numpy as np


def exact_min_norm(gram):
    n = gram.shape[0]
    best = None
    for k in range(1, n + 1):
        for s in itertools.combinations(range(n), k):
            s = list(s)
            a = np.zeros((k + 1, k + 1))
            a[:k, :k] = gram[np.ix_(s, s)]
            a[:k, k] = 1.0
            a[k, :k] = 1.0
            rhs = np.zeros(k + 1)
            rhs[k] = 1.0
            sol, *_ = np.linalg.lstsq(a, rhs, rcond=None)
            c = sol[:k]
            if np.any(c < -1e-12) or abs(c.sum() - 1) > 1e-9:
                continue
            if not np.allclose(a @ sol, rhs, atol=1e-9):
                continue
            full = np.zeros(n)
            full[s] = np.clip(c, 0, None)
            cost = float(full @ gram @ full)
            # prefer the lowest cost; among ties the smallest support (unique optimum weights
            # are only asserted when the fixture marks them unique)
            if best is None or cost < best[1] - 1e-12:
                best = (full, cost)
    return best


def unique_weights(gram, w, cost):
    """True when no other simplex point reaches the same cost (strictly convex on the face)."""
    support = np.flatnonzero(w > 1e-9)
    sub = gram[np.ix_(support, support)]
    return bool(np.linalg.matrix_rank(sub, tol=1e-9) == len(support)) and cost > 1e-9


PREFS = np.array([[0.0, 1.0], [1.0, 0.0], [0.7071, 0.7071]])


def pareto(g_acd, g_rec, losses, preferred=1):
    g = np.stack([g_acd / np.linalg.norm(g_acd), g_rec / np.linalg.norm(g_rec)])
    l = np.asarray(losses) / np.linalg.norm(losses)
    w = PREFS - PREFS[preferred]
    active = [j for j in range(len(PREFS)) if w[j] @ l > 0]
    coef = np.vstack([np.eye(2)] + [w[j][None, :] for j in active])
    vecs = coef @ g
    sol, cost = exact_min_norm(vecs @ vecs.T)
    lam = sol @ coef
    lam = lam / np.abs(lam).sum()
    return active, lam, cost


def main():
    rng = np.random.default_rng(20251122)
    cases = []
    for n, d in [(2, 3), (2, 10), (3, 2), (3, 3), (3, 7), (4, 3), (4, 6), (5, 4), (5, 9)]:
        for _ in range(4):
            v = rng.normal(size=(n, d))
            gram = v @ v.T
            w, cost = exact_min_norm(gram)
            cases.append({"vectors": v.tolist(), "weights": w.tolist(), "cost": cost,
                          "unique": unique_weights(gram, w, cost)})
    # hull containing the origin (cost 0) and a collinear triple
    for v in [np.array([[1.0, 1.0], [-1.0, 1.0], [0.0, -1.0]]),
              np.array([[1.0, 2.0], [3.0, 6.0], [-0.5, -1.0]])]:
        gram = v @ v.T
        w, cost = exact_min_norm(gram)
        cases.append({"vectors": v.tolist(), "weights": w.tolist(), "cost": cost,
                      "unique": unique_weights(gram, w, cost)})

    pcases = []
    for d, losses in [(5, [0.3, 6.2]), (8, [0.05, 4.0]), (6, [1.0, 1.0]), (4, [2.0, 0.5]),
                      (7, [0.9, 3.1]), (3, [0.01, 9.0])]:
        ga, gr = rng.normal(size=d), rng.normal(size=d)
        if losses == [0.05, 4.0]:
            gr = ga + 0.3 * gr  # strongly aligned gradients
        active, lam, cost = pareto(ga, gr, losses)
        pcases.append({"g_acd": ga.tolist(), "g_rec": gr.tolist(), "losses": losses,
                       "active": active, "lambda": lam.tolist(),
                       "coefficient": float(lam[0] / lam[1]), "cost": cost})
    print(json.dumps({"min_norm": cases, "pareto": pcases}, indent=1))


if __name__ == "__main__":
    main()
