"""Reference timing for benches/data_load.rs: ABXI's own numpy approach to loading
food-kitchen and drawing 999 evaluation negatives per valid/test case (np.isin exclusion +
Generator.choice without replacement, as in ABXI's dataloader). Run from the repo root:
python3 scripts/python/bench_data_load.py"""
import json
import os
import time

import numpy as np


def shared():
    d = os.path.abspath(".")
    while not os.path.isdir(os.path.join(d, "shared", "data")):
        d = os.path.dirname(d)
    return os.path.join(d, "shared", "data", "food-kitchen")


def run(path):
    t0 = time.perf_counter()
    items = json.load(open(os.path.join(path, "map_item_50.txt")))
    dm = np.array(list(items.values()))[:, 1]
    n_a, n_b = int((dm == 0).sum()), int((dm == 1).sum())
    seqs = []
    for line in open(os.path.join(path, "afk_50_preprocessed.txt")):
        seqs.append(np.array([int(t.split("|")[0]) for t in line.split()[1:]]))
    t1 = time.perf_counter()
    all_a = np.arange(1, n_a + 1)
    all_b = np.arange(n_a + 1, n_a + n_b + 1)
    rng = np.random.default_rng(1)
    out = []
    for cut in (2, 1):
        for s in seqs:
            gt = s[-cut]
            pool = all_a if gt <= n_a else all_b
            cand = pool[~np.isin(pool, s, assume_unique=True)]
            out.append(rng.choice(cand, size=999, replace=False))
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, t2 - t0


if __name__ == "__main__":
    p = shared()
    best = min((run(p) for _ in range(3)), key=lambda r: r[2])
    print(f"numpy: load {best[0]*1e3:.0f} ms, candidates {best[1]*1e3:.0f} ms, total {best[2]*1e3:.0f} ms")
