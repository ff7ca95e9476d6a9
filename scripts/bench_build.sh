#!/usr/bin/env bash
# Cold build times of the README's commands, as a new user meets them: a fresh clone of a commit
# and an empty target directory, then `cargo build` (what `cargo run -- demo` needs) and
# `cargo test --no-run` after it (what the test command adds). Prints each phase's wall time,
# CPU time (user + sys of cargo and everything it ran) and the load average around it, then a
# summary of cargo's --timings report (units, the crate families' shares, the largest units).
#
# Usage: scripts/bench_build.sh [REV]        (default HEAD; uncommitted changes are not built)
# KEEP=1 keeps the clone and target directory (their path is printed).
#
# The crates' sources come from cargo's local registry when they are there (as on a machine that
# has built the project once); otherwise cargo downloads them inside the first phase's time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rev=${1:-HEAD}
work=$(mktemp -d "${TMPDIR:-/tmp}/cdsr-bench-build.XXXXXX")
[[ ${KEEP:-0} == 1 ]] || trap 'rm -rf "$work"' EXIT
git clone -q --no-hardlinks "$root" "$work/src"
git -C "$work/src" checkout -q "$(git -C "$root" rev-parse "$rev")"
echo "commit $(git -C "$work/src" rev-parse --short HEAD), $(nproc) cores, clone in $work"
export CARGO_TARGET_DIR="$work/target"
cd "$work/src"

# phase NAME COMMAND...: runs it under /usr/bin/time (GNU time: children's CPU included).
phase() {
    local name=$1
    shift
    local before
    before=$(cut -d' ' -f1-3 /proc/loadavg)
    if ! /usr/bin/time -f "%e %U %S" -o "$work/$name.time" "$@" >"$work/$name.log" 2>&1; then
        tail -30 "$work/$name.log"
        echo "$name failed (log: $work/$name.log)" >&2
        exit 1
    fi
    local wall user sys
    read -r wall user sys <"$work/$name.time"
    printf '%s: %s\n' "$name" "$*"
    python3 - "$wall" "$user" "$sys" <<'PY'
import sys
wall, user, sys_ = map(float, sys.argv[1:])
print(f"  wall {int(wall // 60)} min {wall % 60:.0f} s, CPU {(user + sys_) / 60:.1f} min "
      f"({user:.0f} s user + {sys_:.0f} s sys, {100 * (user + sys_) / wall:.0f}% of a core)")
PY
    echo "  load average before / after: $before / $(cut -d' ' -f1-3 /proc/loadavg)"
    local report
    report=$(ls -t "$CARGO_TARGET_DIR"/cargo-timings/cargo-timing-*.html | head -1)
    python3 "$root/scripts/python/build_timings_summary.py" "$report" --top 6
    echo "$wall $user $sys" >>"$work/all.time"
}

phase build cargo build --timings
phase test-build cargo test --no-run --timings
python3 - "$work/all.time" <<'PY'
import sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
wall = sum(r[0] for r in rows)
cpu = sum(r[1] + r[2] for r in rows)
print(f"both: wall {int(wall // 60)} min {wall % 60:.0f} s, CPU {cpu / 60:.1f} min")
PY
