#!/usr/bin/env bash
# Executes every notebook in notebooks/ with the evcxr Jupyter kernel and fails on any cell
# error (tests/notebooks.rs), printing each notebook's time. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
# Jupyter + nbconvert from PyPI, and the evcxr Rust kernel from crates.io, built at opt-level 1
# without LTO: 13 CPU-minutes instead of the release profile's 20-35 minutes on 2 cores. (At
# opt-level 0 it builds in 4 minutes, but its rust-analyzer then spends minutes of CPU on every
# cell.)
python3 -m jupyter nbconvert --version >/dev/null 2>&1 || python3 -m pip install --quiet jupyter nbconvert
if ! command -v evcxr_jupyter >/dev/null 2>&1; then
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=false \
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 CARGO_PROFILE_RELEASE_LTO=false \
        CARGO_PROFILE_RELEASE_INCREMENTAL=false \
        cargo install evcxr_jupyter --locked --version 0.22.0
fi
# evcxr's type inference (rust-analyzer) reads the standard library's sources.
rustup component list --installed 2>/dev/null | grep -q '^rust-src' \
    || rustup component add rust-src || echo "warning: rust-src missing; evcxr may not infer types" >&2
jupyter kernelspec list 2>/dev/null | grep -qw rust || evcxr_jupyter --install
cargo test --test notebooks -- --ignored --nocapture
