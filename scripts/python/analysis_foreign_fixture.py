"""Writes tests/fixtures/foreign_run/: a run as a PyTorch-style script would leave it (a CSV
training log with its own column names, .npy captures), plus the manifest.toml that maps it
onto cdsr-lab's canonical names, and expected.json with the statistics computed here in numpy.

Tensors come from real data: co-occurrence embeddings (d = 8 anchors) of the first 40 users of
tests/fixtures/food_kitchen_200users.txt; X = each user's last 5 Food (A) items, Y = last 6
Kitchen (B) items, X' = softmax(X Y^T * 0.3) Y (zeros where a user has no B item).

Run from the project root:  python3 scripts/python/analysis_foreign_fixture.py
"""
import json
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/foreign_run"
OUT.mkdir(parents=True, exist_ok=True)
N_A = 11837
D, L, LKV, BATCH = 8, 5, 6, 40

seqs = []
for line in (ROOT / "tests/fixtures/food_kitchen_200users.txt").read_text().splitlines():
    seqs.append([int(t.split("|")[0]) for t in line.split()[1:]])

freq = {}
for s in seqs:
    for i in s:
        freq[i] = freq.get(i, 0) + 1
anchors = [i for i, _ in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))[:D]]
emb = {}
for s in seqs:
    present = np.array([a in s for a in anchors], dtype=np.float64)
    for i in s:
        emb.setdefault(i, np.zeros(D))
        emb[i] += present
emb = {k: np.log1p(v) for k, v in emb.items()}

x = np.zeros((BATCH, L, D), np.float32)
y = np.zeros((BATCH, LKV, D), np.float32)
mask = np.zeros((BATCH, L), bool)
for b, s in enumerate(seqs[:BATCH]):
    qa = [i for i in s if i <= N_A][-L:]
    kb = [i for i in s if i > N_A][-LKV:]
    for j, it in enumerate(qa):
        x[b, L - len(qa) + j] = emb[it]
        mask[b, L - len(qa) + j] = True
    for j, it in enumerate(kb):
        y[b, LKV - len(kb) + j] = emb[it]
xp = np.zeros_like(x)
for b in range(BATCH):
    keys = y[b][np.abs(y[b]).sum(1) > 0]
    if len(keys) == 0:
        continue
    scores = x[b] @ keys.T * 0.3
    w = np.exp(scores - scores.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    xp[b] = (w @ keys) * mask[b][:, None]

np.save(OUT / "x_a.npy", x)
np.save(OUT / "xp_a.npy", xp)
np.save(OUT / "mask_a.npy", mask)

# Expected statistics, numpy in float64 (zero rows count as cos 0, like torch's cosine_similarity).
xv, pv = x[mask].astype(np.float64), xp[mask].astype(np.float64)
dot = (xv * pv).sum(1)
nx, npn = np.linalg.norm(xv, axis=1), np.linalg.norm(pv, axis=1)
cos = np.where((nx > 0) & (npn > 0), np.abs(dot) / np.maximum(nx * npn, 1e-300), 0.0)
par = np.where(nx > 0, dot**2 / np.maximum(nx**2, 1e-300), 0.0).sum() / (npn**2).sum()

# A training log with the script's own names: 'ep', 'phase' (trn/val/tst), 'dom' (food/kitchen).
rows = ["ep,phase,dom,Loss,NDCG@10,HR@10"]
for ep in (1, 2, 3):
    rows.append(f"{ep},trn,,{6.0 / ep:.4f},,")
    for dom, base in (("food", 0.10), ("kitchen", 0.07)):
        rows.append(f"{ep},val,{dom},,{base + 0.01 * ep:.4f},{2 * base + 0.01 * ep:.4f}")
for dom, base in (("food", 0.125), ("kitchen", 0.095)):
    rows.append(f"3,tst,{dom},,{base:.4f},{2 * base:.4f}")
(OUT / "log.csv").write_text("\n".join(rows) + "\n")

(OUT / "manifest.toml").write_text(
    """format = "cdsr-lab-foreign"
format_version = 1
run_id = "torch-abxi-gca0-s1"
model = "abxi"
dataset = "food-kitchen"
seed = 1
best_epoch = 3

[config]
hidden = 8
gca = { positions = [0], gate = "sigmoid" }

[params]
total = 123456

[metrics]
file = "log.csv"
epoch = "ep"
split = "phase"
domain = "dom"
[metrics.split_values]
trn = "train"
val = "valid"
tst = "test"
[metrics.domain_values]
food = "A"
kitchen = "B"
[metrics.rename]
"NDCG@10" = "ndcg@10"

[tensors]
"gca.0.A.x" = "x_a.npy"
"gca.0.A.x_prime" = "xp_a.npy"
"gca.0.A.mask" = "mask_a.npy"
"""
)
(OUT / "expected.json").write_text(
    json.dumps(
        {"cos_x_xprime": float(cos.mean()), "parallel_share": float(par), "n_valid": int(mask.sum())},
        indent=1,
    )
    + "\n"
)
print("wrote", OUT)
