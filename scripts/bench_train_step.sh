#!/usr/bin/env bash
# Training-step throughput: Rust (candle) vs PyTorch on the same ABXI(+GCA) model, the same
# pinned real batch (data/fixtures/train_step_batch.npz: 256 food-kitchen rows x 50) and the
# same thread count, measured one after the other in one run; prints both medians, the ratio
# torch/rust (> 1: the Rust step is faster) and each side's peak resident memory during the
# steps above what it held before them. --repeats N alternates the sides N times (rust, torch,
# rust, torch, ...) and prints every pair's ratio with the load average; --autocdsr also times
# the Rust step with AutoCDSR's update (Pareto-MTL, two backward passes) after each Rust step
# (PyTorch has no AutoCDSR port: its ratio is against PyTorch's plain step).
#
#   scripts/bench_train_step.sh                                   # abxi-cpu.toml, no GCA, 2 threads
#   scripts/bench_train_step.sh --gca-positions 0                 # + GCA_early
#   scripts/bench_train_step.sh --gca-positions none --repeats 3 --autocdsr
#   scripts/bench_train_step.sh --config configs/abxi.toml --steps 10
#   scripts/bench_train_step.sh --device cuda --bin /tmp/cdsr-gpu/cdsr-lab --config configs/abxi.toml
#
# Options: --config PATH (configs/abxi-cpu.toml), --gca-positions LIST ('0', '0,1', 'none';
# default: the config's [gca] positions), --threads N (2), --warmup N (3), --steps N (20),
# --attention explicit|sdpa (PyTorch side only; explicit = the same ops as the Rust code),
# --profile NAME (cargo profile of the Rust build: dev), --device cpu|cuda (cpu: both sides on
# the same device; cuda needs --bin, the CUDA build, and a CUDA PyTorch), --bin PATH (time the
# Rust step with `PATH step` instead of `cargo bench`: the GPU machine has no cargo),
# --repeats N (1), --autocdsr.
#
# Contract with benches/train_step.rs (harness = false): it reads its settings from the
# environment
#   TRAIN_STEP_CONFIG, TRAIN_STEP_GCA_POSITIONS ('' = the config's, 'none', '0', '0,1'),
#   TRAIN_STEP_AUTOCDSR ('' = the config's, 'on', 'off'),
#   TRAIN_STEP_THREADS (also exported as RAYON_NUM_THREADS), TRAIN_STEP_WARMUP,
#   TRAIN_STEP_STEPS, TRAIN_STEP_BATCH (the npz path)
# and prints one JSON line containing "median_step_s" (and "params", "step_peak_rss_bytes"), e.g.
#   {"impl":"rust","config":"configs/abxi-cpu.toml","threads":2,"params":1954752,"median_step_s":1.23,"steps":20}
# The PyTorch side is scripts/python/train_step_torch.py (needs numpy and torch).
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=configs/abxi-cpu.toml
GCA=""
THREADS=2
WARMUP=3
STEPS=20
ATTENTION=explicit
BATCH=data/fixtures/train_step_batch.npz
# The dev profile builds every dependency and this crate optimised, without overflow checks or
# debug assertions (Cargo.toml), so it shares the test build and runs a step as fast as the
# release profile (measured 2026-11-23); --profile release for a separate release build.
PROFILE=dev
DEVICE=cpu
BIN=""
REPEATS=1
AUTOCDSR=0
while [ $# -gt 0 ]; do
  case "$1" in
    --config) CONFIG=$2; shift 2 ;;
    --gca-positions) GCA=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --attention) ATTENTION=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --autocdsr) AUTOCDSR=1; shift ;;
    -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

case $DEVICE in
  cpu) ;;
  cuda) [ -n "$BIN" ] || { echo "--device cuda needs --bin (the CUDA build of cdsr-lab)" >&2; exit 2; } ;;
  *) echo "--device $DEVICE: cpu or cuda" >&2; exit 2 ;;
esac

PY=${PYTHON:-python3}
if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "PyTorch with CUDA is needed for --device cuda" >&2; exit 1; }
elif ! "$PY" -c "import torch, numpy" 2>/dev/null; then
  echo "installing torch (CPU) for the PyTorch side" >&2
  "$PY" -m pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu \
    || "$PY" -m pip install --quiet torch numpy
fi
if [ ! -f "$BATCH" ]; then
  echo "pinned batch $BATCH missing: exporting it from ../shared/data/food-kitchen" >&2
  "$PY" scripts/python/export_train_batch.py --out "$BATCH" >&2
fi

LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT
if [ -z "$BIN" ]; then
  echo "building the Rust bench (not timed)" >&2
  cargo bench --profile "$PROFILE" --bench train_step --no-run >&2
fi

export TRAIN_STEP_CONFIG=$CONFIG TRAIN_STEP_GCA_POSITIONS=$GCA TRAIN_STEP_THREADS=$THREADS \
  TRAIN_STEP_WARMUP=$WARMUP TRAIN_STEP_STEPS=$STEPS TRAIN_STEP_BATCH=$BATCH \
  RAYON_NUM_THREADS=$THREADS
PY_ARGS=(--config "$CONFIG" --threads "$THREADS" --warmup "$WARMUP" --steps "$STEPS"
         --batch "$BATCH" --attention "$ATTENTION" --device "$DEVICE")
[ -n "$GCA" ] && PY_ARGS+=(--gca-positions "$GCA")

# One Rust measurement into $1; $2: AutoCDSR on or off.
rust_step() {
  local out=$1 acd=$2
  echo "rust:    $CONFIG, gca '${GCA:-config}', autocdsr $acd, $THREADS threads" >&2
  if [ -n "$BIN" ]; then
    "$BIN" step --config "$CONFIG" --batch "$BATCH" --device "$DEVICE" --gca-positions "$GCA" \
      --autocdsr "$acd" --threads "$THREADS" --warmup "$WARMUP" --steps "$STEPS" \
      2>"$LOG/rust.err" | tee "$out" >&2 || { cat "$LOG/rust.err" >&2; exit 1; }
  else
    TRAIN_STEP_AUTOCDSR=$acd cargo bench --profile "$PROFILE" --bench train_step 2>"$LOG/rust.err" \
      | tee "$out" >&2 || { cat "$LOG/rust.err" >&2; exit 1; }
  fi
}

for r in $(seq 1 "$REPEATS"); do
  cut -d' ' -f1-3 /proc/loadavg > "$LOG/load.$r"
  echo "--- run $r of $REPEATS, load average $(cat "$LOG/load.$r")" >&2
  rust_step "$LOG/rust.$r" off
  if [ "$AUTOCDSR" = 1 ]; then rust_step "$LOG/acd.$r" on; fi
  echo "pytorch: scripts/python/train_step_torch.py ${PY_ARGS[*]}" >&2
  OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS \
    "$PY" scripts/python/train_step_torch.py "${PY_ARGS[@]}" | tee "$LOG/torch.$r" >&2
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

"$PY" - "$LOG" "$REPEATS" <<'EOF'
import json, os, statistics, sys
log, repeats = sys.argv[1], int(sys.argv[2])
def last_json(path, who):
    for line in reversed(open(path).read().splitlines()):
        line = line.strip()
        if line.startswith("{") and "median_step_s" in line:
            return json.loads(line)
    sys.exit(f"{who}: no JSON line with median_step_s in its output")
def mib(j):
    v = j.get("step_peak_rss_bytes")
    return "n/a" if v is None else f"{v / 2**20:.0f} MiB"
runs = []
for r in range(1, repeats + 1):
    rust = last_json(f"{log}/rust.{r}", "rust bench")
    torch = last_json(f"{log}/torch.{r}", "pytorch")
    acd = last_json(f"{log}/acd.{r}", "rust AutoCDSR") if os.path.exists(f"{log}/acd.{r}") else None
    if rust.get("params") is not None and rust["params"] != torch["params"]:
        print(f"WARNING: parameter counts differ: rust {rust['params']}, pytorch {torch['params']}",
              file=sys.stderr)
    runs.append(dict(rust=rust, torch=torch, acd=acd, load=open(f"{log}/load.{r}").read().strip(),
                     ratio=torch["median_step_s"] / rust["median_step_s"]))
t0 = runs[0]["torch"]
print(f"device {t0.get('device', 'cpu')}  config {t0['config']}  gca {t0['gca_positions']}  "
      f"threads {t0['threads']}  params rust {runs[0]['rust'].get('params')} / pytorch {t0['params']}  "
      f"(torch {t0['torch']})")
for i, x in enumerate(runs, 1):
    rs, ts = x["rust"]["median_step_s"], x["torch"]["median_step_s"]
    line = f"run {i} (load {x['load']}): rust {rs:.4f} s, pytorch {ts:.4f} s, ratio torch/rust {ts / rs:.2f}"
    if x["acd"]:
        a = x["acd"]["median_step_s"]
        line += f"; rust AutoCDSR {a:.4f} s ({a / rs:.2f}x the plain step; pytorch plain / it {ts / a:.2f})"
    print(line)
    print(f"  step peak memory (above the memory before the steps): rust {mib(x['rust'])}, "
          f"pytorch {mib(x['torch'])}" + (f", rust AutoCDSR {mib(x['acd'])}" if x["acd"] else ""))
    print(f"  loss first -> last: rust {x['rust']['loss_first']:.6f} -> {x['rust']['loss_last']:.6f}, "
          f"pytorch {x['torch']['loss_first']:.6f} -> {x['torch']['loss_last']:.6f}")
ratios = [x["ratio"] for x in runs]
med = statistics.median(ratios)
print(f"ratio torch/rust {med:.2f} (median of {len(ratios)}; {'Rust' if med > 1 else 'PyTorch'} faster)")
out = {"device": t0.get("device", "cpu"), "config": t0["config"], "gca_positions": t0["gca_positions"],
       "threads": t0["threads"], "params": t0["params"], "load_average": [x["load"] for x in runs],
       "rust_median_step_s": [x["rust"]["median_step_s"] for x in runs],
       "torch_median_step_s": [x["torch"]["median_step_s"] for x in runs],
       "ratio_torch_over_rust": ratios,
       "rust_step_peak_rss_bytes": [x["rust"].get("step_peak_rss_bytes") for x in runs],
       "torch_step_peak_rss_bytes": [x["torch"].get("step_peak_rss_bytes") for x in runs]}
if runs[0]["acd"]:
    out["rust_autocdsr_median_step_s"] = [x["acd"]["median_step_s"] for x in runs]
    out["rust_autocdsr_step_peak_rss_bytes"] = [x["acd"].get("step_peak_rss_bytes") for x in runs]
print(json.dumps(out))
EOF
