"""The Python half of scripts/bench_analysis.sh: the same work as
benches/analysis_vs_python.rs, done the usual way with numpy / scipy / pandas.

Usage: python3 scripts/python/analysis_bench.py OUT_DIR   (OUT_DIR/runs written by the Rust half)
Writes OUT_DIR/python.json with best-of-3 wall times in seconds.
"""
import json
import pathlib
import sys
import time

import numpy as np
import pandas as pd
from scipy import stats

ROWS, DIM = 1_000_000, 256
out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench-analysis")


def best_of(reps, f):
    best, res = float("inf"), None
    for _ in range(reps):
        t = time.perf_counter()
        res = f()
        best = min(best, time.perf_counter() - t)
    return best, res


# 1. |cos| over 1M x 256 f32 pairs: einsum avoids the (n, d) temporaries of (x * y).sum(1).
rng = np.random.default_rng(1)
x = rng.uniform(-1, 1, (ROWS, DIM)).astype(np.float32)
y = rng.uniform(-1, 1, (ROWS, DIM)).astype(np.float32)


def abs_cos():
    dot = np.einsum("ij,ij->i", x, y, dtype=np.float64)
    nx = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    ny = np.einsum("ij,ij->i", y, y, dtype=np.float64)
    den = np.sqrt(nx * ny)
    cos = np.where(den > 0, np.abs(dot) / np.where(den > 0, den, 1.0), 0.0)
    return float(cos.mean())


t_cos, mean_cos = best_of(3, abs_cos)
t_sum, _ = best_of(3, lambda: float(x.sum(dtype=np.float64) + y.sum(dtype=np.float64)))
print(f"numpy |cos| {t_cos:.3f}s mean {mean_cos:.6f}; numpy sum {t_sum:.3f}s", file=sys.stderr)
del x, y

# 2. Pearson + 10,000-resample percentile bootstrap over 300 runs (vectorised resampling).
rng = np.random.default_rng(2)
cos = rng.uniform(0.05, 0.4, 300)
ndcg = 0.2 - 0.1 * cos + rng.uniform(-0.02, 0.02, 300)


def pearson_bootstrap():
    r = stats.pearsonr(cos, ndcg)
    res = stats.bootstrap(
        (cos, ndcg),
        lambda a, b, axis=-1: stats.pearsonr(a, b, axis=axis).statistic,
        paired=True,
        vectorized=True,
        n_resamples=10_000,
        method="percentile",
        random_state=np.random.default_rng(7),
    )
    return r.statistic, res.confidence_interval


t_boot, (r, ci) = best_of(3, pearson_bootstrap)
print(f"scipy pearson r {r:.4f}; bootstrap [{ci.low:.4f}, {ci.high:.4f}] in {t_boot:.4f}s", file=sys.stderr)


# 3. Loading 2,000 run directories into a runs frame (flattened config, final metrics) and an
#    epochs frame, the way an analysis script does it with json + pandas.
def load_runs():
    rows, epochs = [], []
    for d in sorted(p for p in (out / "runs").iterdir() if p.is_dir()):
        with open(d / "run.json") as f:
            m = json.load(f)
        if m["status"] != "complete":
            continue
        row = {k: m[k] for k in ("run_id", "model", "dataset", "seed", "status", "best_epoch", "epochs_run", "wall_time_s")}
        row["path"] = str(d)
        row["params.total"] = m["params"]["total"]
        for k, v in m["params"]["by_module"].items():
            row[f"params.{k}"] = v
        for k, v in pd.json_normalize(m["config"]).iloc[0].items():
            row[f"config.{k}"] = json.dumps(v, separators=(",", ":")) if isinstance(v, list) else v
        for dom, ms in m["test"].items():
            for k, v in ms.items():
                row[f"test.{dom}.{k}"] = v
        rows.append(row)
        e = pd.read_json(d / "metrics.jsonl", lines=True)
        e.insert(0, "run_id", m["run_id"])
        epochs.append(e)
    return pd.DataFrame(rows), pd.concat(epochs, ignore_index=True)


t_load, (runs, ep) = best_of(3, load_runs)
print(f"pandas loaded {len(runs)} runs, {len(ep)} epoch rows in {t_load:.3f}s", file=sys.stderr)


# 4. Spearman of |cos| with 1/rank + 1,000-resample percentile bootstrap over the test cases the
#    Rust half wrote (one setting and domain of the committed intervention study): scipy's
#    vectorised bootstrap, ranking each resample with rankdata along the resample axis.
case_cos = np.load(out / "cases_abs_cos.npy")
case_rr = np.load(out / "cases_rr.npy")


def rank_pearson(a, b, axis=-1):
    ra = stats.rankdata(a, axis=axis)
    rb = stats.rankdata(b, axis=axis)
    ra -= ra.mean(axis=axis, keepdims=True)
    rb -= rb.mean(axis=axis, keepdims=True)
    return (ra * rb).sum(axis=axis) / np.sqrt((ra * ra).sum(axis=axis) * (rb * rb).sum(axis=axis))


def spearman_bootstrap():
    rho = stats.spearmanr(case_cos, case_rr).statistic
    res = stats.bootstrap(
        (case_cos, case_rr),
        rank_pearson,
        paired=True,
        vectorized=True,
        n_resamples=1_000,
        batch=100,
        method="percentile",
        random_state=np.random.default_rng(7),
    )
    return rho, res.confidence_interval


t_rank, (rho, rci) = best_of(3, spearman_bootstrap)
print(f"scipy spearman {rho:.4f} over {len(case_cos)} cases; bootstrap [{rci.low:.4f}, {rci.high:.4f}] in {t_rank:.3f}s", file=sys.stderr)

res = {
    "abs_cos_s": t_cos,
    "abs_cos_mean": mean_cos,
    "numpy_sum_s": t_sum,
    "pearson_bootstrap_s": t_boot,
    "bootstrap_low": float(ci.low),
    "bootstrap_high": float(ci.high),
    "load_runs_s": t_load,
    "runs_rows": len(runs),
    "epochs_rows": len(ep),
    "spearman_bootstrap_s": t_rank,
    "spearman_rho": float(rho),
    "spearman_low": float(rci.low),
    "spearman_high": float(rci.high),
}
(out / "python.json").write_text(json.dumps(res, indent=1) + "\n")
print(json.dumps(res, indent=1))
