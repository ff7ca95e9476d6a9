"""Pinned training batch for the train-step throughput benchmark (Rust vs PyTorch).

Builds ABXI's timeline-aligned *training* layout of the first 256 training rows of the real
food-kitchen data (../shared/data/food-kitchen, leave-one-out: train = seq[:-2]), max_len 50,
with the same id convention as the Rust crate (0 = padding, A items 1..=n_A, B items
n_A+1..=n_A+n_B, exactly the published ids of map_item_*.txt), plus seeded negatives per row,
and writes data/fixtures/train_step_batch.npz (plain, uncompressed npz: the crate reads npz
through ndarray-npy without its deflate feature).

Arrays (row r = the r-th user of the sequence file, in file order):
    x, a, b, target     int64 [256, 50]  merged input s[:-1], streams a/b on the merged
                                         timeline (ABXI get_seq_spe), next item; left padded
    target_domain       int8  [256, 50]  0 no target (padding), 1 A, 2 B
    negatives           int64 [256, 256] per row: 128 A items then 128 B items, uniform without
                                         replacement, excluding the row's training sequence;
                                         numpy default_rng(0), rows in order, A then B
    n_items_a, n_items_b, vocab_size     int64 scalars (vocab_size = n_A + n_B + 1)
    max_len, negatives_per_domain        int64 scalars (50, 128)

The layout reuses the numpy port in abxi_layout_fixture.py (its functions `pad`, `aligned`,
`pos_from_end`, loaded without running that script's top level, which writes its own fixture)
and is cross-checked against a line-by-line port of the Rust `TrainLayout::build`
(src/data/layout.rs, StreamAlignment::TargetAligned).

Run from the repository root:
    python3 scripts/python/export_train_batch.py [--data ../shared/data/food-kitchen]
"""
import argparse
import ast
import glob
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def fixture_functions(max_len, n_a):
    """`pad`, `aligned`, `pos_from_end` from abxi_layout_fixture.py, bound to max_len and n_a.

    That script computes its fixture at import time (and writes a file), so only its function
    definitions are taken (parsed with ast) and run in a namespace holding its globals."""
    path = os.path.join(HERE, "abxi_layout_fixture.py")
    tree = ast.parse(open(path).read(), path)
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    ns = {"np": np, "L": max_len, "n_a": n_a}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), path, "exec"), ns)
    return ns["pad"], ns["aligned"], ns["pos_from_end"]


def load_food_kitchen(d):
    """(n_a, n_b, sequences in file order) of an ABXI text dataset directory."""
    item_map = glob.glob(os.path.join(d, "map_item*.txt"))[0]
    seq_file = glob.glob(os.path.join(d, "*_preprocessed.txt"))[0]
    items = json.load(open(item_map))
    n_a = sum(1 for v in items.values() if v[1] == 0)
    n_b = sum(1 for v in items.values() if v[1] == 1)
    ids_a = sorted(v[0] for v in items.values() if v[1] == 0)
    ids_b = sorted(v[0] for v in items.values() if v[1] == 1)
    assert ids_a == list(range(1, n_a + 1)), "A ids are not 1..=n_A"
    assert ids_b == list(range(n_a + 1, n_a + n_b + 1)), "B ids do not follow A"
    seqs = []
    for line in open(seq_file).read().splitlines():
        if not line.strip():
            continue
        toks = line.split()[1:]
        seqs.append(np.array([int(t.split("|")[0]) for t in toks], dtype=np.int64))
    return n_a, n_b, seqs


def rust_train_row(tr, n_a, max_len):
    """Line-by-line port of TrainLayout::build for one training sequence (TargetAligned)."""
    xs, gt = tr[:-1], tr[1:]
    sa, sb, td = [], [], []
    last_a = last_b = 0
    for xi, gi in zip(xs, gt):
        if xi <= n_a:
            last_a = xi
        else:
            last_b = xi
        is_a = gi <= n_a
        td.append(1 if is_a else 2)
        sa.append(last_a if is_a else 0)
        sb.append(0 if is_a else last_b)

    def lp(v):
        v = list(v)[-max_len:]
        return np.array([0] * (max_len - len(v)) + v, dtype=np.int64)

    return lp(xs), lp(sa), lp(sb), lp(gt), lp(td)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "food-kitchen"))
    ap.add_argument("--out", default=os.path.join(ROOT, "data", "fixtures", "train_step_batch.npz"))
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--negatives", type=int, default=128, help="per domain")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    L = args.max_len
    n_a, n_b, seqs = load_food_kitchen(args.data)
    pad, aligned, pos_from_end = fixture_functions(L, n_a)

    rows = {k: [] for k in ["x", "a", "b", "target", "target_domain"]}
    train_seqs = []
    for s in seqs:
        if len(s) < 3:  # Split::leave_one_out skips users with < 3 interactions
            continue
        tr = s[:-2]
        if len(tr) < 2:  # TrainLayout::build skips training sequences shorter than 2
            continue
        x, gt = tr[:-1], tr[1:]
        a, b = aligned(x, gt)
        td = np.where(gt <= n_a, 1, 2)
        got = (pad(x), pad(a), pad(b), pad(gt), pad(td))
        want = rust_train_row(tr, n_a, L)
        for name, g, w in zip(["x", "a", "b", "target", "target_domain"], got, want):
            if not np.array_equal(g, w):
                raise SystemExit(f"row {len(train_seqs)}: {name} differs between the fixture "
                                 f"port and the TrainLayout port:\n{g}\n{w}")
            rows[name].append(g)
        # positions from the end, as the model computes them (check only)
        assert np.array_equal(pos_from_end(got[1]),
                              np.flip(np.cumsum(np.flip(got[1] != 0))) * (got[1] != 0))
        train_seqs.append(tr)
        if len(train_seqs) == args.rows:
            break
    if len(train_seqs) < args.rows:
        raise SystemExit(f"only {len(train_seqs)} training rows")

    out = {k: np.stack(v).astype(np.int64) for k, v in rows.items()}
    out["target_domain"] = out["target_domain"].astype(np.int8)
    # padding has no target: target == 0 exactly where target_domain == 0
    assert np.array_equal(out["target"] == 0, out["target_domain"] == 0)

    # Seeded negatives, one draw per row shared by its positions ("per_row"), like
    # sample_train_negatives: uniform without replacement, outside the training sequence.
    rng = np.random.default_rng(args.seed)
    k = args.negatives
    ranges = [np.arange(1, n_a + 1), np.arange(n_a + 1, n_a + n_b + 1)]
    negs = np.zeros((args.rows, 2 * k), dtype=np.int64)
    for r, tr in enumerate(train_seqs):
        for d, rg in enumerate(ranges):
            free = np.setdiff1d(rg, tr)
            negs[r, d * k:(d + 1) * k] = rng.choice(free, size=k, replace=False)
    out["negatives"] = negs
    out["n_items_a"] = np.int64(n_a)
    out["n_items_b"] = np.int64(n_b)
    out["vocab_size"] = np.int64(n_a + n_b + 1)
    out["max_len"] = np.int64(L)
    out["negatives_per_domain"] = np.int64(k)

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    np.savez(args.out, **out)
    size = os.path.getsize(args.out)
    td = out["target_domain"]
    print(json.dumps({
        "out": os.path.relpath(args.out, ROOT),
        "bytes": size,
        "rows": args.rows,
        "max_len": L,
        "n_items_a": n_a,
        "n_items_b": n_b,
        "vocab_size": n_a + n_b + 1,
        "target_positions": {"A": int((td == 1).sum()), "B": int((td == 2).sum())},
        "x_nonpad": int((out["x"] != 0).sum()),
    }))


if __name__ == "__main__":
    main()
