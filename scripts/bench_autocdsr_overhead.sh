#!/usr/bin/env bash
# AutoCDSR's training-time overhead over its base model, measured in one run: one epoch of the
# base config (BASE, default configs/sasrec-cpu.toml: SASRec on the full food-kitchen data),
# then the same with AutoCDSR (Pareto-MTL), with a fixed a_cd weight and with Pareto-MTL's
# weights recomputed every 4th step (`every = 4`, autocdsr-every4), and for a
# `bert4rec` base also AutoCDSR+ (4 IB tokens averaged after layers 0 and 1, Pareto-MTL), one
# after the other on the same threads; prints the training time of the epoch (the train row's
# wall_time_s: data preparation + one training epoch, no evaluation) and the ratio to the
# base, and the user + system CPU time of the whole process (less sensitive to the machine's
# load than wall time, but it includes data preparation and the epoch's validation); the runs
# are repeated REPEATS times (default 2) in turn and the fastest of each is kept. The paper
# reports +9.3% for AutoCDSR and +20% for AutoCDSR+.
#
#   scripts/bench_autocdsr_overhead.sh                                      # SASRec, food-kitchen
#   BASE=configs/bert4rec-kuairand.toml scripts/bench_autocdsr_overhead.sh  # BERT4Rec, KuaiRand-1K
#
# MAX_USERS=N shortens the epoch to the first N users (data.max_users). COMPARE=PATH times a
# second cdsr-lab binary (e.g. one built from another commit) interleaved with this build's,
# run by run, and prints both overheads, so a change is measured under the same load.
#
# STEPS=N times training steps instead of epochs (`cdsr-lab autocdsr-step`): in one process
# the base model and the AutoCDSR model step side by side on the first WARMUP (default 2) + N
# batches of the trainer's first epoch, alternating which goes first; prints each side's time
# per phase summed over the N timed steps (an epoch slice) and the overhead, with the load
# average. AutoCDSR's step is split into forward (with the loss), objective (a_cd on the
# recorded maps), rec backward, a_cd backward, Gram (with the Pareto-MTL solve) and update
# (combined gradient and AdamW).
#
#   STEPS=20 VARIANTS=autocdsr scripts/bench_autocdsr_overhead.sh
#   STEPS=20 VARIANTS=autocdsr BASE=configs/bert4rec-kuairand.toml scripts/bench_autocdsr_overhead.sh
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
if [ -n "${MAX_USERS:-}" ]; then
  base=$(echo "$base" | sed "s/^\[data\]$/[data]\nmax_users = $MAX_USERS/")
fi
echo "$base" > "$OUT/base.toml"
printf '%s\n[autocdsr]\nweighting = { kind = "pareto" }\n' "$base" > "$OUT/autocdsr.toml"
printf '%s\n[autocdsr]\nweighting = { kind = "fixed", weight = 0.1 }\n' "$base" > "$OUT/autocdsr-fixed.toml"
printf '%s\n[autocdsr]\nweighting = { kind = "pareto", every = 4 }\n' "$base" > "$OUT/autocdsr-every4.toml"
ALL="autocdsr autocdsr-fixed autocdsr-every4"
if grep -q '^kind = "bert4rec"' "$BASE"; then
  printf '%s\n[autocdsr]\nweighting = { kind = "pareto" }\n[autocdsr.ib]\ntokens = 4\ncomm_layers = [0, 1]\n' "$base" > "$OUT/autocdsr-plus.toml"
  ALL="$ALL autocdsr-plus"
fi
# VARIANTS="autocdsr-plus" times only those against the base.
VARIANTS=${VARIANTS:-$ALL}
BINS="$BIN${COMPARE:+ $COMPARE}"
if [ -n "${STEPS:-}" ]; then
  echo "base: $BASE${MAX_USERS:+, first $MAX_USERS users}; $STEPS steps after ${WARMUP:-2}; binaries: $BINS" >&2
  for name in $VARIANTS; do
    for bin in $BINS; do
      tag=$( [ "$bin" = "$BIN" ] && echo this || echo compare )
      load=$(cut -d' ' -f1-3 /proc/loadavg)
      "$bin" autocdsr-step --config "$OUT/$name.toml" --warmup "${WARMUP:-2}" --steps "$STEPS" > "$OUT/steps.json"
      python3 - "$tag" "$name" "$load" "$(cut -d' ' -f1-3 /proc/loadavg)" "$OUT/steps.json" <<'PY'
import json, sys
tag, name, load0, load1, path = sys.argv[1:6]
r = json.load(open(path))
fmt = lambda side: ", ".join(f"{k[:-2]} {v['sum']:.3f}" for k, v in r[side].items() if k != "step_s")
print(f"{tag:8s} {name:15s} {r['timed_steps']} steps of {r['batch_size']}, {r['threads']} thread(s), load {load0} -> {load1}")
print(f"  base     step {r['base']['step_s']['sum']:.3f} s: {fmt('base')}")
print(f"  autocdsr step {r['autocdsr']['step_s']['sum']:.3f} s: {fmt('autocdsr')}")
print(f"  overhead {100 * r['overhead']:+.1f}% (summed steps), {100 * r['overhead_median']:+.1f}% (medians); "
      f"last losses {r['base_losses'][-1]:.6f} / {r['acd_losses'][-1]:.6f}")
PY
    done
  done
  exit 0
fi
echo "base: $BASE${MAX_USERS:+, first $MAX_USERS users}; binaries: $BINS; load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for rep in $(seq "${REPEATS:-2}"); do
for name in base $VARIANTS; do
  for bin in $BINS; do
  tag=$( [ "$bin" = "$BIN" ] && echo this || echo compare )
  rm -rf "$OUT/runs-$name"
  /usr/bin/time -f "%U %S" -o "$OUT/cpu" "$bin" train --config "$OUT/$name.toml" --out "$OUT/runs-$name" --quiet > /dev/null
  python3 - "$name" "$OUT/runs-$name" "$tag" "$OUT/cpu" <<'PY'
import glob, json, os, sys
name, root, tag, cpu = sys.argv[1:5]
row = next(json.loads(l) for l in open(glob.glob(f"{root}/*/metrics.jsonl")[0])
           if json.loads(l)["split"] == "train")
t = [row["wall_time_s"], sum(map(float, open(cpu).read().split()))]
print(f"{tag:8s} {name:15s} epoch-1 training {t[0]:.1f} s, process CPU {t[1]:.1f} s, "
      f"loss {row['loss']:.6f}")
path = f"{root}/../{tag}-{name}.t"
if os.path.exists(path):
    t = [min(a, b) for a, b in zip(t, json.load(open(path)))]
json.dump(t, open(path, "w"))
PY
  done
done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
tags=this
[ -n "${COMPARE:-}" ] && tags="this compare"
python3 - "$OUT" "$tags" $VARIANTS <<'PY'
import json, sys
out, tags, names = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
for tag in tags:
    t = {n: json.load(open(f"{out}/{tag}-{n}.t")) for n in ["base"] + names}
    for n in names:
        (w, c), (bw, bc) = t[n], t["base"]
        print(f"{tag:8s} {n:15s} overhead {100 * (w / bw - 1):+.1f}% over the base model "
              f"(epoch {w:.1f} s against {bw:.1f} s); process CPU {c:.1f} s against {bc:.1f} s "
              f"({100 * (c / bc - 1):+.1f}%, data preparation and the validation included)")
PY
