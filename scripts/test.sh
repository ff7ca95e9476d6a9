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

# --- tests ----------------------------------------------------------------------------------
if [ -z "${CDSR_SHARED_DATA:-}" ] && [ ! -d ../shared/data ]; then
    echo "warning: ../shared/data not found; tests that read the full datasets will fail" >&2
    echo "         (set CDSR_SHARED_DATA to the data directory)" >&2
fi
cargo test "$@"
