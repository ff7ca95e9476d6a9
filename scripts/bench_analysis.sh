#!/usr/bin/env bash
# Analysis speed, Rust vs the Python stack (numpy/scipy/pandas), side by side in one run.
# Usage: scripts/bench_analysis.sh [OUT_DIR]     (needs: pip install numpy scipy pandas)
# Prints the ratio python_time / rust_time for each task (> 1: Rust is faster) and |cos|
# throughput as a fraction of the machine's read bandwidth measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${CARGO_TARGET_DIR:-target}/bench-analysis}
mkdir -p "$OUT"
# The dev profile builds every dependency at opt-level 3 and shares the test build
# (Cargo.toml); pass PROFILE=release for a separate fully optimised build.
cargo bench --profile "${PROFILE:-dev}" --bench analysis_vs_python -- "$OUT"
python3 scripts/python/analysis_bench.py "$OUT"
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
r = json.loads((out / "rust.json").read_text())
p = json.loads((out / "python.json").read_text())
print(f"\nrayon threads: {r['threads']}")
print(f"{'task':<40}{'rust s':>10}{'python s':>10}{'ratio':>8}")
for key, name in [("abs_cos_s", "|cos| 1M x 256 f32 pairs"),
                  ("pearson_bootstrap_s", "Pearson + 10k bootstrap, 300 runs"),
                  ("load_runs_s", "load 2,000 run dirs -> frames"),
                  ("spearman_bootstrap_s", f"Spearman + 1k bootstrap, {r['cases']} cases")]:
    print(f"{name:<40}{r[key]:>10.4f}{p[key]:>10.4f}{p[key] / r[key]:>7.1f}x")
bw = r["bytes"] / r["bandwidth_sum_s"]
cos = r["bytes"] / r["abs_cos_s"]
print(f"read bandwidth (parallel sum of the same 2 GiB): {bw / 1e9:.2f} GB/s")
print(f"|cos| throughput: {cos / 1e9:.2f} GB/s = {cos / bw:.2f} of bandwidth")
print(f"the same rank bootstrap sorting every resample: {r['spearman_bootstrap_sorted_s']:.4f} s")
print(f"Spearman agrees: rust {r['spearman_rho']:.6f} [{r['spearman_low']:.4f}, {r['spearman_high']:.4f}]"
      f" scipy {p['spearman_rho']:.6f} [{p['spearman_low']:.4f}, {p['spearman_high']:.4f}]")
print(f"|cos| means agree: rust {r['abs_cos_mean']:.6f} numpy {p['abs_cos_mean']:.6f}")
PY
