#!/usr/bin/env bash
# Training-step throughput: Rust (candle) vs PyTorch on the same ABXI(+GCA) model, the same
# pinned real batch (data/fixtures/train_step_batch.npz: 256 food-kitchen rows x 50) and the
# same thread count, measured one after the other in one run; prints both medians and the
# ratio torch/rust (> 1: the Rust step is faster).
#
#   scripts/bench_train_step.sh                                   # abxi-cpu.toml, no GCA, 2 threads
#   scripts/bench_train_step.sh --gca-positions 0                 # + GCA_early
#   scripts/bench_train_step.sh --config configs/abxi.toml --steps 10
#   scripts/bench_train_step.sh --device cuda --bin /tmp/cdsr-gpu/cdsr-lab --config configs/abxi.toml
#
# Options: --config PATH (configs/abxi-cpu.toml), --gca-positions LIST ('0', '0,1', 'none';
# default: the config's [gca] positions), --threads N (2), --warmup N (3), --steps N (20),
# --attention explicit|sdpa (PyTorch side only; explicit = the same ops as the Rust code),
# --profile NAME (cargo profile of the Rust build: dev), --device cpu|cuda (cpu: both sides on
# the same device; cuda needs --bin, the CUDA build, and a CUDA PyTorch), --bin PATH (time the
# Rust step with `PATH step` instead of `cargo bench`: the GPU machine has no cargo).
#
# Contract with benches/train_step.rs (harness = false): it reads its settings from the
# environment
#   TRAIN_STEP_CONFIG, TRAIN_STEP_GCA_POSITIONS ('' = the config's, 'none', '0', '0,1'),
#   TRAIN_STEP_THREADS (also exported as RAYON_NUM_THREADS), TRAIN_STEP_WARMUP,
#   TRAIN_STEP_STEPS, TRAIN_STEP_BATCH (the npz path)
# and prints one JSON line containing "median_step_s" (and "params"), e.g.
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
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
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
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if [ -n "$BIN" ]; then
  echo "rust:    $BIN step --device $DEVICE ($CONFIG, gca '${GCA:-config}', $THREADS threads)" >&2
  "$BIN" step --config "$CONFIG" --batch "$BATCH" --device "$DEVICE" --gca-positions "$GCA" \
    --threads "$THREADS" --warmup "$WARMUP" --steps "$STEPS" 2>"$LOG/rust.err" \
    | tee "$LOG/rust.out" >&2 || { cat "$LOG/rust.err" >&2; exit 1; }
else
  echo "rust:    cargo bench --bench train_step ($CONFIG, gca '${GCA:-config}', $THREADS threads)" >&2
  cargo bench --profile "$PROFILE" --bench train_step 2>"$LOG/rust.err" | tee "$LOG/rust.out" >&2 \
    || { cat "$LOG/rust.err" >&2; exit 1; }
fi

PY_ARGS=(--config "$CONFIG" --threads "$THREADS" --warmup "$WARMUP" --steps "$STEPS"
         --batch "$BATCH" --attention "$ATTENTION" --device "$DEVICE")
[ -n "$GCA" ] && PY_ARGS+=(--gca-positions "$GCA")
echo "pytorch: scripts/python/train_step_torch.py ${PY_ARGS[*]}" >&2
OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS \
  "$PY" scripts/python/train_step_torch.py "${PY_ARGS[@]}" | tee "$LOG/torch.out" >&2
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

"$PY" - "$LOG/rust.out" "$LOG/torch.out" <<'EOF'
import json, sys
def last_json(path, who):
    for line in reversed(open(path).read().splitlines()):
        line = line.strip()
        if line.startswith("{") and "median_step_s" in line:
            return json.loads(line)
    sys.exit(f"{who}: no JSON line with median_step_s in its output")
rust, torch = last_json(sys.argv[1], "rust bench"), last_json(sys.argv[2], "pytorch")
if rust.get("params") is not None and rust["params"] != torch["params"]:
    print(f"WARNING: parameter counts differ: rust {rust['params']}, pytorch {torch['params']}",
          file=sys.stderr)
ratio = torch["median_step_s"] / rust["median_step_s"]
print(f"device {torch.get('device', 'cpu')}  config {torch['config']}  gca {torch['gca_positions']}  threads {torch['threads']}  "
      f"params rust {rust.get('params')} / pytorch {torch['params']}")
print(f"rust    median step {rust['median_step_s']:.4f} s")
print(f"pytorch median step {torch['median_step_s']:.4f} s (torch {torch['torch']})")
print(f"ratio torch/rust {ratio:.2f}  ({'Rust' if ratio > 1 else 'PyTorch'} faster)")
print(json.dumps({"device": torch.get("device", "cpu"), "config": torch["config"], "gca_positions": torch["gca_positions"],
                  "threads": torch["threads"], "params": torch["params"],
                  "rust_median_step_s": rust["median_step_s"],
                  "torch_median_step_s": torch["median_step_s"],
                  "ratio_torch_over_rust": ratio}))
EOF
