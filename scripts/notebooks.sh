#!/usr/bin/env bash
# Executes every notebook in notebooks/ with the evcxr Jupyter kernel and fails on any cell
# error (tests/notebooks.rs), printing each notebook's time and each code cell's seconds.
# Sets up what it needs first (scripts/jupyter.sh --setup: Jupyter, the kernel, mold, the
# notebooks' shared evcxr build directory).
#   scripts/notebooks.sh                  execute and check
#   scripts/notebooks.sh --write-outputs  also write the executed notebooks, outputs included,
#                                         over notebooks/*.ipynb once every one has passed
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--write-outputs" ]]; then
    export CDSR_WRITE_NOTEBOOK_OUTPUTS=1
fi
scripts/jupyter.sh --setup
cargo test --test notebooks -- --ignored --nocapture
