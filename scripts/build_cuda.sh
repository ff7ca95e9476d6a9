#!/usr/bin/env bash
# Builds the CUDA binary (`--features cuda`) on a machine with no GPU and no CUDA toolkit, and
# packs it for a GPU machine (docs/gpu.md):
#
#   scripts/build_cuda.sh                 # -> target-cuda/dist/cdsr-lab-cuda.xz (+ data, manifest)
#   nice -n 10 scripts/build_cuda.sh      # on a shared machine
#   scripts/build_cuda.sh --seed-from target   # start from a CPU dev build's dependencies
#
# 1. nvcc: PyPI's CUDA 13.0 wheels, `pip install --target` into target-cuda/toolkit (pinned to
#    13.0: a newer nvcc emits PTX that a CUDA 13.0 driver refuses).
# 2. Link-time stand-ins for the libraries cudarc links (-lcuda -lnvrtc -lcurand -lcublas
#    -lcublasLt; -lcudart, which candle-kernels' MoE kernels add, links the wheel's real one): one C file of empty functions named after cudarc's bindings, compiled with
#    gcc -shared under the real libraries' SONAMEs, so the binary's NEEDED entries name the real
#    ones. They are never run: the GPU machine's driver and CUDA 13 libraries are found by
#    scripts/gpu_run.sh.
# 3. cargo build --features cuda --bin cdsr-lab in its own target directory (target-cuda), so
#    the CPU build's target/ is not touched; CUDA_COMPUTE_CAP=90 (H100/H200: there is no
#    nvidia-smi to ask at build time), CUDAFORGE_THREADS=2. With --seed-from DIR, the
#    dependency artifacts of a CPU dev build in DIR (same Cargo.lock, same toolchain) are
#    copied in first (read only there): the `cuda` feature changes candle-core and nothing
#    below it, so only candle-core, the CUDA crates and cdsr-lab compile instead of every
#    dependency.
# 4. target-cuda/dist/: the binary without debug info, xz-compressed (the GPU machine takes at
#    most 64 MiB per transfer), the food-kitchen data as a tarball, and MANIFEST (sizes, sha256,
#    NEEDED libraries).
#
# Environment: CUDA_COMPUTE_CAP (90), CUDAFORGE_THREADS (2), CARGO_TARGET_DIR (target-cuda),
# PYTHON (python3), CARGO_PROFILE (dev: dependencies and this crate optimised, Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target-cuda}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2}
PROFILE=${CARGO_PROFILE:-dev}
PY=${PYTHON:-python3}
SEED_FROM=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seed-from) SEED_FROM=$2; shift 2 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
TOOLKIT=$CARGO_TARGET_DIR/toolkit
CUDA_ROOT_DIR=$TOOLKIT/wheels/nvidia/cu13
STUBS=$CUDA_ROOT_DIR/lib/stubs
DIST=$CARGO_TARGET_DIR/dist
WHEELS=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)

step() { echo "== $* ($(date -u +%H:%M:%S))" >&2; }

# 1. nvcc from PyPI
if [ ! -x "$CUDA_ROOT_DIR/bin/nvcc" ]; then
  step "pip install --target $TOOLKIT/wheels ${WHEELS[*]}"
  "$PY" -m pip install --quiet --no-deps --target "$TOOLKIT/wheels" "${WHEELS[@]}"
fi
"$CUDA_ROOT_DIR/bin/nvcc" --version | grep -q "release 13.0," \
  || { echo "$CUDA_ROOT_DIR/bin/nvcc is not CUDA 13.0" >&2; exit 1; }

# 2. link-time stand-ins, named after the bindings of the cudarc that Cargo.lock pins
step "stub libraries in $STUBS"
CUDARC_SRC=$(cargo metadata --format-version 1 --features cuda --locked 2>/dev/null | "$PY" -c '
import json, os, sys
meta = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in meta["packages"] if p["name"] == "cudarc"))')
mkdir -p "$STUBS"
# library (cudarc's bindings folder) -> SONAME of the CUDA 13 library it stands in for
for lib in cuda:driver:libcuda.so.1 nvrtc:nvrtc:libnvrtc.so.13 curand:curand:libcurand.so.10 \
           cublas:cublas:libcublas.so.13 cublasLt:cublaslt:libcublasLt.so.13; do
  IFS=: read -r name bindings soname <<<"$lib"
  src=$STUBS/lib$name.c
  grep -o 'load::<_F>("[A-Za-z0-9_]*")' "$CUDARC_SRC/src/$bindings/sys/mod.rs" \
    | sed 's/load::<_F>("\(.*\)")/void \1(void) {}/' | sort -u >"$src"
  [ -s "$src" ] || { echo "no exported names found for lib$name in $CUDARC_SRC" >&2; exit 1; }
  gcc -shared -fPIC -o "$STUBS/lib$name.so" -Wl,-soname,"$soname" "$src"
done
# candle-kernels' static MoE kernels need the CUDA runtime: the wheel's real libcudart.so.13,
# linked by its unversioned name.
ln -sf ../libcudart.so.13 "$STUBS/libcudart.so"

# 3. the build
if [ -n "$SEED_FROM" ]; then
  [ "$PROFILE" = dev ] || { echo "--seed-from copies a dev build: CARGO_PROFILE=dev only" >&2; exit 2; }
  from=$SEED_FROM/debug
  to=$CARGO_TARGET_DIR/debug
  [ -d "$from/deps" ] || { echo "--seed-from $SEED_FROM: no debug/deps there" >&2; exit 1; }
  step "seeding $to with the dependencies built in $from"
  mkdir -p "$to/deps"
  cp -a "$from/build" "$from/.fingerprint" "$to/"
  # Libraries and dep-info of the dependencies; not this crate's outputs or test binaries.
  (cd "$from/deps" && find . -maxdepth 1 -type f \( -name 'lib*' -o -name '*.d' \) \
     ! -name '*cdsr_lab*' -exec cp -a -t "$to/deps/" {} +)
fi
export CUDA_HOME=$CUDA_ROOT_DIR CUDARC_CUDA_VERSION=13000 PATH=$CUDA_ROOT_DIR/bin:$PATH
step "cargo build --profile $PROFILE --features cuda --bin cdsr-lab (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
start=$(date +%s)
cargo build --locked --profile "$PROFILE" --features cuda --bin cdsr-lab
echo "cargo build: $(( $(date +%s) - start )) s wall" >&2
case $PROFILE in dev) OUTDIR=debug ;; *) OUTDIR=$PROFILE ;; esac
BIN=$CARGO_TARGET_DIR/$OUTDIR/cdsr-lab

# 4. the package
step "packing $DIST"
mkdir -p "$DIST"
strip --strip-debug -o "$DIST/cdsr-lab-cuda" "$BIN"
xz -T2 -6 -f -k "$DIST/cdsr-lab-cuda"
# The data the sweeps train on, found as data::shared_data_dir finds it.
DATA=${CDSR_SHARED_DATA:-}
if [ -z "$DATA" ]; then
  dir=$PWD
  while [ "$dir" != / ] && [ ! -d "$dir/shared/data" ]; do dir=$(dirname "$dir"); done
  DATA=$dir/shared/data
fi
[ -d "$DATA/food-kitchen" ] || { echo "food-kitchen not found under $DATA (set CDSR_SHARED_DATA)" >&2; exit 1; }
tar -C "$DATA" -cJf "$DIST/data-food-kitchen.tar.xz" food-kitchen
{
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (+ uncommitted changes)')"
  echo "cargo build --profile $PROFILE --features cuda; CUDA 13.0 (nvcc 13.0.88), CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
  for f in cdsr-lab-cuda cdsr-lab-cuda.xz data-food-kitchen.tar.xz; do
    echo "$f $(stat -c %s "$DIST/$f") bytes sha256 $(sha256sum "$DIST/$f" | cut -d' ' -f1)"
  done
  echo "NEEDED: $(readelf -d "$DIST/cdsr-lab-cuda" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
} >"$DIST/MANIFEST"
rm "$DIST/cdsr-lab-cuda"
cat "$DIST/MANIFEST"
echo "ship: target-cuda/dist (carry it to the GPU machine), then scripts/gpu_run.sh there" >&2
