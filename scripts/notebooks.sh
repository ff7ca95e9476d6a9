#!/usr/bin/env bash
# Executes every notebook in notebooks/ with the evcxr Jupyter kernel and fails on any cell
# error (tests/notebooks.rs), printing each notebook's time. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
# Jupyter + nbconvert from PyPI, and the evcxr Rust kernel from crates.io (about 20-35 min to
# build on 2 cores the first time).
python3 -m jupyter nbconvert --version >/dev/null 2>&1 || python3 -m pip install --quiet jupyter nbconvert
command -v evcxr_jupyter >/dev/null 2>&1 || cargo install evcxr_jupyter --locked
jupyter kernelspec list 2>/dev/null | grep -qw rust || evcxr_jupyter --install
cargo test --test notebooks -- --ignored --nocapture
