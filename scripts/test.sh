#!/usr/bin/env bash
# The project's test command (README "Set up"): installs what the tests need, idempotently,
# then runs the default `cargo test` (library, binary, integration tests, doc tests).
# Real data is read from ../shared/data (or $CDSR_SHARED_DATA) and from data/ in the repo.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- installs (idempotent; each step is skipped when already satisfied) ---------------------
if ! command -v cargo >/dev/null 2>&1; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi
# (other engineers: add one clearly commented line per install step here)
# plot/notebooks: Jupyter + nbconvert, and the evcxr Rust kernel (built from crates.io, ~30 min on 2 cores the first time)
python3 -m jupyter nbconvert --version >/dev/null 2>&1 || python3 -m pip install --quiet jupyter nbconvert
command -v evcxr_jupyter >/dev/null 2>&1 || cargo install evcxr_jupyter --locked
jupyter kernelspec list 2>/dev/null | grep -qw rust || evcxr_jupyter --install

# --- tests ----------------------------------------------------------------------------------
if [ -z "${CDSR_SHARED_DATA:-}" ] && [ ! -d ../shared/data ]; then
    echo "warning: ../shared/data not found; tests that read the full datasets will fail" >&2
    echo "         (set CDSR_SHARED_DATA to the data directory)" >&2
fi
cargo test "$@"
# plot/notebooks: execute every notebook with the evcxr kernel, printing each one's time (slow: ignored by default)
cargo test --test notebooks -- --ignored --nocapture
