#!/usr/bin/env bash
# AutoCDSR's training-time overhead over its base model, measured in one run: one epoch of the
# base config (BASE, default configs/sasrec-cpu.toml: SASRec on the full food-kitchen data),
# then the same with AutoCDSR (Pareto-MTL) and with a fixed a_cd weight, and for a
# `bert4rec` base also AutoCDSR+ (4 IB tokens averaged after layers 0 and 1, Pareto-MTL), one
# after the other on the same threads; prints the training time of the epoch (the train row's
# wall_time_s: data preparation + one training epoch, no evaluation) and the ratio to the
# base; the runs are repeated REPEATS times (default 2) in turn and the fastest of each is
# kept. The paper reports +9.3% for AutoCDSR and +20% for AutoCDSR+.
#
#   scripts/bench_autocdsr_overhead.sh                                      # SASRec, food-kitchen
#   BASE=configs/bert4rec-kuairand.toml scripts/bench_autocdsr_overhead.sh  # BERT4Rec, KuaiRand-1K
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-dev}
cargo build --profile "$PROFILE" >&2
BIN=target/${PROFILE/dev/debug}/cdsr-lab
[ -n "${CARGO_TARGET_DIR:-}" ] && BIN=$CARGO_TARGET_DIR/${PROFILE/dev/debug}/cdsr-lab
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
BASE=${BASE:-configs/sasrec-cpu.toml}
base=$(sed 's/^epochs = .*/epochs = 1/' "$BASE")
echo "$base" > "$OUT/base.toml"
printf '%s\n[autocdsr]\nweighting = { kind = "pareto" }\n' "$base" > "$OUT/autocdsr.toml"
printf '%s\n[autocdsr]\nweighting = { kind = "fixed", weight = 0.1 }\n' "$base" > "$OUT/autocdsr-fixed.toml"
ALL="autocdsr autocdsr-fixed"
if grep -q '^kind = "bert4rec"' "$BASE"; then
  printf '%s\n[autocdsr]\nweighting = { kind = "pareto" }\n[autocdsr.ib]\ntokens = 4\ncomm_layers = [0, 1]\n' "$base" > "$OUT/autocdsr-plus.toml"
  ALL="$ALL autocdsr-plus"
fi
# VARIANTS="autocdsr-plus" times only those against the base.
VARIANTS=${VARIANTS:-$ALL}
echo "base: $BASE; load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for rep in $(seq "${REPEATS:-2}"); do
for name in base $VARIANTS; do
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
python3 - "$OUT" $VARIANTS <<'PY'
import sys
names = sys.argv[2:]
t = {n: float(open(f"{sys.argv[1]}/{n}.t").read()) for n in ["base"] + names}
for n in names:
    print(f"{n:15s} overhead {100 * (t[n] / t['base'] - 1):+.1f}% over the base model")
PY
