"""Independent numpy fixture of ABXI's layouts for tests/data_food_kitchen.rs.

Implements the preprocessing described in ABXI's paper/repository (timeline-aligned
training streams; per-domain evaluation streams; left padding to 50) directly in numpy for
the first 100 users of data/food-kitchen-mini, and writes data/fixtures/abxi_layout_mini.npz
(int32 arrays). Run from the repo root: python3 scripts/python/abxi_layout_fixture.py
"""
import json
import os

import numpy as np

L = 50
N = 100
D = "data/food-kitchen-mini"

items = json.load(open(os.path.join(D, "map_item_mini.txt")))
n_a = sum(1 for v in items.values() if v[1] == 0)
seqs = []
for line in open(os.path.join(D, "afk_mini_preprocessed.txt")).read().splitlines()[:N]:
    seqs.append(np.array([int(t.split("|")[0]) for t in line.split(" ")[1:]]))


def pad(s):
    s = np.asarray(s, dtype=np.int64)
    return np.concatenate((np.zeros(max(0, L - len(s)), dtype=np.int64), s))[-L:]


def aligned(x, gt):
    """ABXI-style: at positions whose target is A, the A items of x in order, dropping the
    first slot when x starts in the other domain and the last A item when the final target
    is B (and symmetrically for B)."""
    A, B = x[x <= n_a], x[x > n_a]
    sa = (gt <= n_a).astype(np.int64)
    sb = (gt > n_a).astype(np.int64)
    if x[0] > n_a:
        sa[np.nonzero(sa)[0][0]] = 0
    else:
        sb[np.nonzero(sb)[0][0]] = 0
    if gt[-1] > n_a:
        A = A[:-1]
    else:
        B = B[:-1]
    sa[sa != 0] = A
    sb[sb != 0] = B
    return sa, sb


def pos_from_end(m):
    m = (m != 0).astype(np.int64)
    return np.flip(np.cumsum(np.flip(m))) * m


out = {k: [] for k in ["train_x", "train_a", "train_b", "train_gt", "train_pos_a"]}
for s in seqs:
    tr = s[:-2]
    x, gt = tr[:-1], tr[1:]
    a, b = aligned(x, gt)
    out["train_x"].append(pad(x))
    out["train_a"].append(pad(a))
    out["train_b"].append(pad(b))
    out["train_gt"].append(pad(gt))
    out["train_pos_a"].append(pos_from_end(pad(a)))
for name, cut in [("valid", 2), ("test", 1)]:
    xs, as_, bs, gts = [], [], [], []
    for s in seqs:
        x = s[:-cut]
        xs.append(pad(x))
        as_.append(pad(x[x <= n_a]))
        bs.append(pad(x[x > n_a]))
        gts.append([s[-cut]])
    out[f"{name}_x"], out[f"{name}_a"], out[f"{name}_b"], out[f"{name}_gt"] = xs, as_, bs, gts
os.makedirs("data/fixtures", exist_ok=True)
np.savez("data/fixtures/abxi_layout_mini.npz", **{k: np.array(v, dtype=np.int32) for k, v in out.items()})
print({k: np.array(v).shape for k, v in out.items()})
