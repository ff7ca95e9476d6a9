#!/usr/bin/env bash
# The project's test command (README "Set up"): installs what the tests need, idempotently,
# then runs the default `cargo test` (library, binary, integration tests, doc tests).
# Real data is read from ../shared/data (or $CDSR_SHARED_DATA) and from data/ in the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
total_start=$SECONDS

# --- installs (idempotent; each step is skipped when already satisfied) ---------------------
if ! command -v cargo >/dev/null 2>&1; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi
# sweeps: a real single-node Slurm (slurmctld, slurmd, munge from Debian's packages) for
# tests/sweep_slurm.rs, which starts and stops it itself; the test skips, saying so, without it.
if ! command -v slurmctld >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; } \
        || echo "warning: could not install Slurm; tests/sweep_slurm.rs will skip" >&2
fi
# With Slurm here, tests/sweep_slurm.rs must run: a cluster that fails to start fails it.
if command -v slurmctld >/dev/null 2>&1; then export CDSR_EXPECT_SLURM=1; fi

# --- tests ----------------------------------------------------------------------------------
if [ -z "${CDSR_SHARED_DATA:-}" ] && [ ! -d ../shared/data ]; then
    echo "warning: ../shared/data not found; tests that read the full datasets will fail" >&2
    echo "         (set CDSR_SHARED_DATA to the data directory)" >&2
fi
# A cold build fills several GB; incremental artefacts would only add to it in a fresh clone.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
start=$SECONDS
cargo test "$@"
echo "cargo test (build and run): $((SECONDS - start)) s"
# Notebooks (evcxr kernel): `scripts/notebooks.sh` installs Jupyter and evcxr_jupyter and runs
# every notebook headlessly (tests/notebooks.rs prints each one's time). CDSR_NOTEBOOKS=0
# leaves them out.
if [ "${CDSR_NOTEBOOKS:-1}" = 1 ]; then
    start=$SECONDS
    ./scripts/notebooks.sh
    echo "notebooks (install, evcxr build, execution): $((SECONDS - start)) s"
fi
echo "test command in all (installs, build, tests, notebooks): $((SECONDS - total_start)) s"
