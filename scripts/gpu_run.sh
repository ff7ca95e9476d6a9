#!/usr/bin/env bash
# Runs the CUDA build of cdsr-lab on a GPU machine that has the NVIDIA driver, Python (PyTorch)
# and no Rust or network (docs/gpu.md). From the repository root, with target-cuda/dist (made by
# scripts/build_cuda.sh) copied along:
#
#   scripts/gpu_run.sh --smoke                                   # device found, CPU == CUDA step
#   scripts/gpu_run.sh --smoke --bench                           # + Rust vs PyTorch step on the GPU
#   scripts/gpu_run.sh --sweep sweeps/paper-fk.toml --seconds 420  # one resumable slice
#
# 1. Unpacks the binary and the data into WORK (default ${TMPDIR:-/tmp}/cdsr-gpu; kept between
#    calls on the same machine, so a later slice resumes the runs a killed slice left there).
# 2. LD_LIBRARY_PATH: the driver's libcuda.so.1 and CUDA 13's cuBLAS, cuBLASLt, cuRAND, NVRTC and cudart,
#    from a system CUDA (/usr/local/cuda*) or PyTorch's nvidia/* wheel folders; `ldd` must then
#    resolve every library the binary needs.
# 3. --smoke: `cdsr-lab step` on the pinned batch (data/fixtures/train_step_batch.npz), three
#    steps on the CPU and three on DEVICE from the same seed; every loss must agree within
#    relative TOL (1e-3). Prints the median step time and the per-epoch estimate
#    (batches per epoch x median step; evaluation not included).
# 4. --bench: scripts/bench_train_step.sh --device DEVICE --bin BINARY (PyTorch side by side).
# 5. --sweep FILE --seconds N: `cdsr-lab sweep run FILE --jobs 1` for at most N seconds (then
#    SIGINT; the interrupted run resumes from its last epoch's checkpoint next time), runs under
#    WORK/runs/NAME; `sweep status` and the run directories (no checkpoints, no file over
#    MAX_MB) are copied to OUT.
#
# Options: --dist DIR (target-cuda/dist), --work DIR, --out DIR ($OUT, else runs/gpu-out),
# --bin PATH (a binary to use instead of unpacking one: tests on a CPU machine use
# target/debug/cdsr-lab), --device cpu|cuda (cuda), --tol X (1e-3), --config PATH (the smoke
# and bench config: configs/abxi.toml), --max-mb N (5).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

DIST=target-cuda/dist
WORK=${TMPDIR:-/tmp}/cdsr-gpu
OUT_DIR=${OUT:-$REPO/runs/gpu-out}
BIN=""
DEVICE=cuda
TOL=1e-3
CONFIG=configs/abxi.toml
MAX_MB=5
SMOKE=0
BENCH=0
SWEEP=""
SECONDS_LIMIT=420
while [ $# -gt 0 ]; do
  case "$1" in
    --dist) DIST=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --out) OUT_DIR=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --tol) TOL=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --max-mb) MAX_MB=$2; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --bench) BENCH=1; shift ;;
    --sweep) SWEEP=$2; shift 2 ;;
    --seconds) SECONDS_LIMIT=$2; shift 2 ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$SMOKE$BENCH" != 00 ] || [ -n "$SWEEP" ] || { echo "nothing to do: --smoke, --bench or --sweep" >&2; exit 2; }
# Paths are relative to the repository root; commands run in WORK/cwd.
absolute() { case $1 in /*) echo "$1" ;; *) echo "$REPO/$1" ;; esac; }
CONFIG=$(absolute "$CONFIG")
[ -z "$SWEEP" ] || SWEEP=$(absolute "$SWEEP")
DIST=$(absolute "$DIST")
PY=${PYTHON:-python3}
mkdir -p "$WORK/shared/data" "$WORK/cwd" "$OUT_DIR"
step() { echo "== $* ($(date -u +%H:%M:%S))" >&2; }

# 1. binary and data
if [ -z "$BIN" ]; then
  BIN=$WORK/cdsr-lab
  if [ ! -x "$BIN" ] || [ "$DIST/cdsr-lab-cuda.xz" -nt "$BIN" ]; then
    step "unpacking $DIST/cdsr-lab-cuda.xz"
    xz -dc "$DIST/cdsr-lab-cuda.xz" >"$BIN.tmp" && chmod +x "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
  fi
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
if [ ! -d "$WORK/shared/data/food-kitchen" ]; then
  if [ -f "$DIST/data-food-kitchen.tar.xz" ]; then
    step "unpacking the food-kitchen data"
    tar -xJf "$DIST/data-food-kitchen.tar.xz" -C "$WORK/shared/data"
  elif [ -d "$REPO/../shared/data/food-kitchen" ]; then
    ln -s "$(cd "$REPO/../shared/data/food-kitchen" && pwd)" "$WORK/shared/data/food-kitchen"
  else
    echo "no food-kitchen data: neither $DIST/data-food-kitchen.tar.xz nor ../shared/data" >&2
    exit 1
  fi
fi
# Configs name their data as ../shared/data/NAME relative to the current directory.
export CDSR_SHARED_DATA=$WORK/shared/data

# 2. the CUDA libraries
if [ "$DEVICE" = cuda ]; then
  step "finding libcuda and the CUDA 13 libraries"
  dirs=$("$PY" - <<'EOF'
import glob, os, subprocess
want = ["libcuda.so.1", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libnvrtc.so.13",
        "libcudart.so.13"]
roots = []
try:  # the dynamic linker's cache (the driver's libcuda usually)
    for line in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout.splitlines():
        if "=>" in line:
            roots.append(os.path.dirname(line.split("=>")[1].strip()))
except OSError:
    pass
roots += ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/local/nvidia/lib64",
          "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"]
roots += sorted(glob.glob("/usr/local/cuda-13*/lib64")) + sorted(glob.glob("/usr/local/cuda-13*/targets/x86_64-linux/lib"))
try:  # PyTorch's CUDA wheels: nvidia/cu13/lib, nvidia/<component>/lib
    import nvidia
    for p in nvidia.__path__:
        roots += sorted(glob.glob(os.path.join(p, "*", "lib")))
except ImportError:
    pass
found = {}
for lib in want:
    for r in roots:
        if os.path.exists(os.path.join(r, lib)):
            found[lib] = r
            break
missing = [l for l in want if l not in found]
for l in want:
    print(f"  {l}: {found.get(l, 'NOT FOUND')}", file=__import__("sys").stderr)
if missing:
    raise SystemExit("missing: " + " ".join(missing))
print(":".join(dict.fromkeys(found.values())))
EOF
)
  export LD_LIBRARY_PATH=$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
if ldd "$BIN" | grep "not found"; then
  echo "$BIN: libraries not found (LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-})" >&2
  exit 1
fi

# 3. smoke check
step_json() {  # DEVICE -> one JSON line of `cdsr-lab step`
  (cd "$WORK/cwd" && "$BIN" step --config "$CONFIG" --batch "$REPO/data/fixtures/train_step_batch.npz" \
     --data "$WORK/shared/data/food-kitchen" --device "$1" --threads "$(nproc)" --warmup 0 --steps 3) | tail -1
}
if [ "$SMOKE" = 1 ]; then
  [ "$DEVICE" != cuda ] || nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  step "smoke: 3 steps of $CONFIG on cpu and on $DEVICE"
  cpu=$(step_json cpu)
  dev=$(step_json "$DEVICE")
  echo "$cpu" >"$OUT_DIR/smoke-cpu.json"
  echo "$dev" >"$OUT_DIR/smoke-$DEVICE.json"
  "$PY" - "$cpu" "$dev" "$TOL" <<'EOF'
import json, sys
cpu, dev, tol = json.loads(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3])
worst = 0.0
for i, (a, b) in enumerate(zip(cpu["losses"], dev["losses"])):
    rel = abs(a - b) / max(abs(a), 1e-12)
    worst = max(worst, rel)
    print(f"step {i}: loss cpu {a:.7f}  {dev['device']} {b:.7f}  relative difference {rel:.2e}")
print(f"median step: cpu {cpu['median_step_s']:.4f} s, {dev['device']} {dev['median_step_s']:.4f} s; "
      f"{dev['batches_per_epoch']} batches per epoch -> about "
      f"{dev['batches_per_epoch'] * dev['median_step_s']:.0f} s of training steps per epoch on "
      f"{dev['device']} (evaluation not included)")
if not worst <= tol:
    sys.exit(f"smoke check FAILED: losses differ by {worst:.2e} (relative), tolerance {tol:g}")
print(f"smoke check passed: largest relative loss difference {worst:.2e} <= {tol:g}")
EOF
fi

# 4. step benchmark, Rust vs PyTorch on the same device
if [ "$BENCH" = 1 ]; then
  step "bench: scripts/bench_train_step.sh --device $DEVICE --config $CONFIG"
  CDSR_SHARED_DATA=$WORK/shared/data scripts/bench_train_step.sh --device "$DEVICE" --bin "$BIN" \
    --config "$CONFIG" --threads "$(nproc)" | tee "$OUT_DIR/bench-$DEVICE.txt"
fi

# 5. one slice of a sweep
if [ -n "$SWEEP" ]; then
  name=$(sed -n 's/^name *= *"\(.*\)".*/\1/p' "$SWEEP" | head -1)
  runs=$WORK/runs/$name
  step "sweep $SWEEP: at most $SECONDS_LIMIT s, runs in $runs"
  rc=0
  (cd "$WORK/cwd" && timeout --signal=INT --kill-after=30 "$SECONDS_LIMIT" \
     "$BIN" sweep run "$SWEEP" --jobs 1 --out "$runs") || rc=$?
  [ "$rc" = 124 ] && echo "slice time is up: the interrupted run resumes on the next call" >&2
  (cd "$WORK/cwd" && "$BIN" sweep status "$SWEEP" --out "$runs" --runs) | tee "$OUT_DIR/sweep-$name-status.txt"
  # Results without checkpoints or large files (their summaries are in run.json/metrics).
  (cd "$WORK/runs" && find "$name" -type f ! -path '*/checkpoint/*' ! -name '*.tmp' -size -"${MAX_MB}"M \
     -exec cp --parents {} "$OUT_DIR/" \;)
  [ "$rc" = 0 ] || [ "$rc" = 124 ] || exit "$rc"
fi
