#!/usr/bin/env bash
# AutoCDSR's training-time overhead over its SASRec baseline, measured in one run: one epoch
# of configs/sasrec-cpu.toml (full food-kitchen data), then the same with AutoCDSR (Pareto-MTL)
# and with a fixed a_cd weight, one after the other on the same threads; prints the training
# time of the epoch (the train row's wall_time_s: data preparation + one training epoch, no
# evaluation) and the ratio to the baseline; the three runs are repeated REPEATS times (default 2)
# in turn and the fastest of each is kept. The paper reports +9.3% for AutoCDSR.
#
#   scripts/bench_autocdsr_overhead.sh            # PROFILE=dev (shares the test build)
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-dev}
cargo build --profile "$PROFILE" >&2
BIN=target/${PROFILE/dev/debug}/cdsr-lab
[ -n "${CARGO_TARGET_DIR:-}" ] && BIN=$CARGO_TARGET_DIR/${PROFILE/dev/debug}/cdsr-lab
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
base=$(sed 's/^epochs = .*/epochs = 1/' configs/sasrec-cpu.toml)
echo "$base" > "$OUT/sasrec.toml"
printf '%s\n[autocdsr]\nweighting = { kind = "pareto" }\n' "$base" > "$OUT/autocdsr.toml"
printf '%s\n[autocdsr]\nweighting = { kind = "fixed", weight = 0.1 }\n' "$base" > "$OUT/autocdsr-fixed.toml"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for rep in $(seq "${REPEATS:-2}"); do
for name in sasrec autocdsr autocdsr-fixed; do
  rm -rf "$OUT/runs-$name"
  "$BIN" train --config "$OUT/$name.toml" --out "$OUT/runs-$name" --quiet > /dev/null
  python3 - "$name" "$OUT/runs-$name" <<'PY'
import glob, json, os, sys
name, root = sys.argv[1], sys.argv[2]
row = next(json.loads(l) for l in open(glob.glob(f"{root}/*/metrics.jsonl")[0])
           if json.loads(l)["split"] == "train")
t = row["wall_time_s"]
print(f"{name:15s} epoch-1 training {t:.1f} s")
path = f"{root}/../{name}.t"
if os.path.exists(path):
    t = min(t, float(open(path).read()))
open(path, "w").write(str(t))
PY
done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 - "$OUT" <<'PY'
import sys
t = {n: float(open(f"{sys.argv[1]}/{n}.t").read()) for n in ["sasrec", "autocdsr", "autocdsr-fixed"]}
for n in ["autocdsr", "autocdsr-fixed"]:
    print(f"{n:15s} overhead {100 * (t[n] / t['sasrec'] - 1):+.1f}% over the SASRec baseline")
PY
