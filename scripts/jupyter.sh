#!/usr/bin/env bash
# Opens the notebooks in Jupyter, ready to use:
#   scripts/jupyter.sh            set up (below), then start JupyterLab on notebooks/
#   scripts/jupyter.sh --setup    set up only (scripts/notebooks.sh and CI use this)
# Further arguments go to `jupyter lab` (e.g. --no-browser --port 8890).
#
# Set-up, each step skipped when already done:
# - Jupyter and nbconvert from PyPI; the evcxr Rust kernel (`rust`) from crates.io;
# - the fast linker mold (Debian's package; evcxr uses mold by itself when it is on PATH);
# - notebooks/evcxr.toml, which evcxr reads from the notebook's folder however Jupyter was
#   started: one build directory for every notebook (notebooks/.evcxr/), where cargo also
#   finds the notebooks' build profile (notebooks/.cargo/config.toml). The first notebook
#   builds the dependencies there once; later ones reuse them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
setup_only=false
if [[ "${1:-}" == "--setup" ]]; then
    setup_only=true
    shift
fi

python3 -m jupyter nbconvert --version >/dev/null 2>&1 && python3 -m jupyter lab --version >/dev/null 2>&1 \
    || python3 -m pip install --quiet jupyter nbconvert
# The kernel runs rust-analyzer on every cell that binds a value, and its first such cell and
# the `:dep` cell are the notebooks' slowest analysis cells: built with fat LTO in one codegen
# unit they answer in 11 and 16 s, against 15 and 21 s at opt-level 1, for the same install
# time (about 11 CPU-minutes either way; docs/notebooks.md). An evcxr_jupyter already on PATH
# is kept: `cargo install --force` with these settings replaces an older build.
if ! command -v evcxr_jupyter >/dev/null 2>&1; then
    CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
        cargo install evcxr_jupyter --locked --version 0.22.0
fi
# evcxr's type inference (rust-analyzer) reads the standard library's sources.
rustup component list --installed 2>/dev/null | grep -q '^rust-src' \
    || rustup component add rust-src || echo "warning: rust-src missing; evcxr may not infer types" >&2
python3 -m jupyter kernelspec list 2>/dev/null | grep -qw rust || evcxr_jupyter --install

# Linking each cell against the crate's dependencies takes seconds with the system linker.
if ! command -v mold >/dev/null 2>&1; then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo -n"
    if command -v apt-get >/dev/null 2>&1 && $sudo apt-get install -y -qq mold >/dev/null 2>&1; then
        echo "installed mold (evcxr links with it)"
    else
        echo "warning: could not install mold (apt-get install mold); notebooks link with the system linker, seconds slower per cell" >&2
    fi
fi

cat >"$root/notebooks/evcxr.toml.tmp" <<TOML
# Written by scripts/jupyter.sh: evcxr's settings for the notebooks in this folder (evcxr
# reads evcxr.toml from the kernel's working directory, the notebook's folder).
[evcxr]
# One build directory shared by every notebook; cargo reads the build profile from
# notebooks/.cargo/config.toml above it. (Absolute: evcxr requires it.)
tmpdir = "$root/notebooks/.evcxr"
TOML
mv "$root/notebooks/evcxr.toml.tmp" "$root/notebooks/evcxr.toml"

if $setup_only; then
    echo "notebooks set up (notebooks/evcxr.toml); open them with scripts/jupyter.sh"
    exit 0
fi
cd "$root/notebooks"
exec python3 -m jupyter lab "$@"
