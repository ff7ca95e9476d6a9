#!/usr/bin/env bash
# Hostile inputs through the command line, as a new user would give them: each case prints
# `clear` (exit 1, one line `error: ...` naming the file, line or field), `warned` (it ran and
# said what looked wrong), `ok` (valid input read as such) or `UNCLEAR` (anything else: a
# panic, a backtrace, several lines, or success on bad input). Run from the project root
# after `cargo build`: scripts/probe_bad_input.sh
set -u
BIN=${BIN:-target/debug/cdsr-lab}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
FK=data/food-kitchen-mini
KR=data/kuairand-1k-mini
declare -A COUNT
report() { # name expect(fail|ok|warn) needle -- command...
  local name=$1 expect=$2 needle=$3; shift 4
  local out err rc verdict
  out=$(RUST_BACKTRACE=1 "$@" 2>"$T/err" >"$T/out"; echo $?); rc=$out
  err=$(cat "$T/err")
  local lines; lines=$(grep -c '' "$T/err")
  if [[ $expect == fail ]]; then
    if [[ $rc == 1 && $lines == 1 && $err == error:* && $err == *"$needle"* ]]; then verdict=clear; else verdict=UNCLEAR; fi
  elif [[ $expect == warn ]]; then
    if [[ $err == *warning* || $err == *skipped* ]] && [[ $err == *"$needle"* ]]; then verdict=warned; else verdict=UNCLEAR; fi
  else
    if [[ $rc == 0 ]]; then verdict=ok; else verdict=UNCLEAR; fi
  fi
  COUNT[$verdict]=$(( ${COUNT[$verdict]:-0} + 1 ))
  printf '%-8s %-44s %s\n' "$verdict" "$name" "$(head -c 160 "$T/err" | head -1)"
}
abxi() { # a copy of food-kitchen-mini in $T/$1
  rm -rf "$T/$1"; mkdir -p "$T/$1"; cp $FK/* "$T/$1/"; echo "$T/$1"
}
kr() { rm -rf "$T/$1"; cp -r $KR "$T/$1"; echo "$T/$1"; }
SEQ=afk_mini_preprocessed.txt

# --- datasets (cdsr-lab data stats)
report "no such path" fail "/no/such" -- $BIN data stats /no/such
mkdir -p "$T/empty"; report "empty directory" fail "expected a dataset" -- $BIN data stats "$T/empty"
d=$(abxi two); cp "$d/$SEQ" "$d/b_preprocessed.txt"; report "two sequence files" fail "keep one" -- $BIN data stats "$d"
d=$(abxi noitem); rm "$d/map_item_mini.txt"; report "missing item map" fail "map_item" -- $BIN data stats "$d"
d=$(abxi nouser); rm "$d/map_user_mini.txt"; report "missing user map" fail "map_user" -- $BIN data stats "$d"
d=$(abxi emptyseq); : > "$d/$SEQ"; report "empty sequence file" fail "empty" -- $BIN data stats "$d"
d=$(abxi bom); printf '\xef\xbb\xbf' | cat - $FK/$SEQ > "$d/$SEQ"; report "UTF-8 BOM" ok "" -- $BIN data stats "$d"
d=$(abxi cut); head -c 20000 $FK/$SEQ > "$d/$SEQ"; report "sequence file cut mid-line" fail "newline" -- $BIN data stats "$d"
d=$(abxi cutline); head -n 250 $FK/$SEQ > "$d/$SEQ"; report "sequence file cut at a line end" fail "declares 300" -- $BIN data stats "$d"
d=$(abxi dupline); (cat $FK/$SEQ; head -n 1 $FK/$SEQ) > "$d/$SEQ"; report "a line twice" fail "more than one line" -- $BIN data stats "$d"
d=$(abxi badtok); sed '3s/|/-/' $FK/$SEQ > "$d/$SEQ"; report "item-timestamp separator" fail ":3:" -- $BIN data stats "$d"
d=$(abxi crlf); sed 's/$/\r/' $FK/$SEQ > "$d/$SEQ"; report "CRLF line ends" ok "" -- $BIN data stats "$d"
d=$(abxi moved); python3 - "$d/map_item_mini.txt" <<'PY'
import json,sys; p=sys.argv[1]; m=json.load(open(p))
k=[k for k,v in m.items() if v[0]==1000][0]; m[k][1]=1; json.dump(m,open(p,'w'))
PY
report "item moved to domain B" fail "(id 1000)" -- $BIN data stats "$d"
d=$(abxi dupkey); sed 's/}$/, "X": [1, 0], "X": [2, 0]}/' $FK/map_item_mini.txt > "$d/map_item_mini.txt"; report "item map key twice" fail "appears twice" -- $BIN data stats "$d"
d=$(abxi trunc_json); head -c 1000 $FK/map_user_mini.txt > "$d/map_user_mini.txt"; report "user map cut" fail "map_user_mini.txt" -- $BIN data stats "$d"
d=$(kr zero); : > "$d/testing/partition_100.tfrecord.gz"; report "zero-byte TFRecord partition" fail "0 bytes" -- $BIN data stats "$d"
d=$(kr notgz); gunzip -c $KR/testing/partition_100.tfrecord.gz > "$d/testing/partition_100.tfrecord.gz"; report "TFRecord .gz not gzip" fail "not gzip" -- $BIN data stats "$d"
d=$(kr halfgz); head -c 5000 $KR/testing/partition_100.tfrecord.gz > "$d/testing/partition_100.tfrecord.gz"; report "TFRecord gzip cut" fail "gzip" -- $BIN data stats "$d"
d=$(kr copy); cp "$d/training/partition_200.tfrecord.gz" "$d/training/partition_200_copy.tfrecord.gz"; report "a partition copied" fail "same partition number" -- $BIN data stats "$d"
d=$(kr tsvzero); rm -r "$d/training" "$d/evaluation" "$d/testing"; : > "$d/decoded_tsv/testing.tsv.gz"; report "zero-byte TSV" fail "0 bytes" -- $BIN data stats "$d"
d=$(kr tsvhead); rm -r "$d/training" "$d/evaluation" "$d/testing"; gunzip -c $KR/decoded_tsv/testing.tsv.gz | head -n 1 | gzip > "$d/decoded_tsv/testing.tsv.gz"; report "TSV header only" fail "no rows" -- $BIN data stats "$d"
d=$(kr tsvdup); rm -r "$d/training" "$d/evaluation" "$d/testing"; (gunzip -c $KR/decoded_tsv/testing.tsv.gz; gunzip -c $KR/decoded_tsv/testing.tsv.gz | sed -n 2p) | gzip > "$d/decoded_tsv/testing.tsv.gz"; report "TSV row twice" fail "also on line" -- $BIN data stats "$d"
csv() { printf "$2" > "$T/$1.csv"; echo "$T/$1.csv"; }
report "CSV header only" fail "only its header" -- $BIN data stats "$(csv h 'user,item,domain,timestamp\n')"
report "CSV ragged row" fail ":3:" -- $BIN data stats "$(csv r 'user,item,domain,timestamp\nu,i,a,1\nu,j,b,2,9\n')"
report "CSV float timestamp" fail "timestamp" -- $BIN data stats "$(csv f 'user,item,domain,timestamp\nu,i,a,1\nu,j,b,2.5\n')"
report "CSV NaN timestamp" fail "timestamp" -- $BIN data stats "$(csv n 'user,item,domain,timestamp\nu,i,a,1\nu,j,b,NaN\n')"
report "CSV row twice" fail "repeats line 2" -- $BIN data stats "$(csv d 'user,item,domain,timestamp\nu,i,a,1\nu,i,a,1\nu,j,b,2\n')"
report "CSV three domains" fail "3 distinct" -- $BIN data stats "$(csv t 'user,item,domain,timestamp\nu,i,a,1\nu,j,b,2\nu,k,c,3\n')"
report "CSV one domain" fail "1 distinct" -- $BIN data stats "$(csv o 'user,item,domain,timestamp\nu,i,a,1\nu,j,a,2\n')"
report "CSV missing value" fail "missing field" -- $BIN data stats "$(csv m 'user,item,domain,timestamp\nu,,a,1\nu,j,b,2\n')"
report "CSV no final newline" fail "newline" -- $BIN data stats "$(csv e 'user,item,domain,timestamp\nu,i,a,1\nu,j,b,2')"
report "CSV unclosed quote" fail "never closed" -- $BIN data stats "$(csv q 'user,item,domain,timestamp\n"u,i,a,1\nu,j,b,2\n')"
head -c 3000 /dev/urandom > "$T/garbage.csv"; report "CSV of random bytes" fail "garbage.csv" -- $BIN data stats "$T/garbage.csv"
head -c 3000 /dev/urandom > "$T/garbage.parquet"; report "Parquet of random bytes" fail "garbage.parquet" -- $BIN data stats "$T/garbage.parquet"

# --- run configs (cdsr-lab train)
cfg() { sed "$2" configs/smoke.toml > "$T/$1.toml"; echo "$T/$1.toml"; }
train() { report "config: $1" fail "$2" -- $BIN train --quiet --config "$(cfg "$1" "$3")" --out "$T/runs"; }
train "lr -1e-3" "optim.lr" 's/^lr = 1e-3/lr = -1e-3/'
train "lr nan" "optim.lr" 's/^lr = 1e-3/lr = nan/'
train "weight_decay -5" "optim.weight_decay" 's/^weight_decay = 0.1/weight_decay = -5.0/'
train "epochs 0" "train.epochs" 's/^epochs = 3/epochs = 0/'
train "eval_negatives 0" "train.eval_negatives" 's/^eval_negatives = 99/eval_negatives = 0/'
train "negatives_per_domain 0" "train.negatives_per_domain" 's/^negatives_per_domain = 16/negatives_per_domain = 0/'
train "rank_domain 0" "model.rank_domain" 's/^rank_domain = 4/rank_domain = 0/'
train "max_users 0" "data.max_users" 's|^path = .*|&\nmax_users = 0|'
train "batch_size 0" "train.batch_size" 's/^batch_size = 64/batch_size = 0/'
train "heads 3" "model.heads" 's/^heads = 2/heads = 3/'
train "dropout 1" "model.dropout" 's/^dropout = 0.2/dropout = 1.0/'
train "gca position 5" "gca.positions" 's/^positions = \[0, 1\]/positions = [5]/'
train "gca heads 3" "gca.heads" 's/^heads = 4/heads = 3/'
train "unknown key" "unknown field" 's/^epochs = 3/epoch = 3/'
train "negative epochs" "epochs" 's/^epochs = 3/epochs = -3/'
train "TOML syntax" "unclosed table" 's/^\[train\]/[train/'
train "missing data path" "no-such" 's|^path = .*|path = "no-such-dir"|'
train "data path a run directory" "expected a dataset" 's|^path = .*|path = "results/abxi-cpu/2026-11-23-d256"|'
report "config: empty file" fail "data" -- $BIN train --config "$(: > "$T/e.toml"; echo "$T/e.toml")" --out "$T/runs"
report "config: no such file" fail "no-such.toml" -- $BIN train --config "$T/no-such.toml" --out "$T/runs"

# --- run trees (cdsr-lab runs)
mkdir -p "$T/tree0"; report "runs: empty tree" fail "no complete run" -- $BIN runs "$T/tree0"
report "runs: results/ (nested runs, ids shared)" warn "duplicate run id" -- $BIN runs results
mkdir -p "$T/tree1"; cp -r results/abxi-cpu/2026-11-23-d256 "$T/tree1/a"; cp -r results/abxi-cpu/2026-11-23-d256 "$T/tree1/b"
report "runs: a run copied" warn "identical copy" -- $BIN runs "$T/tree1" --over-seeds
mkdir -p "$T/tree2/x"; cp -r results/abxi-cpu/2026-11-23-d256 "$T/tree2/a"; rm "$T/tree2/a/"*
report "runs: emptied run dir" warn "empty directory" -- $BIN runs "$T/tree2"
mkdir -p "$T/tree3"; cp -r results/abxi-cpu/2026-11-23-d256 "$T/tree3/a"; echo '{"format": "cdsr-lab-run"' > "$T/tree3/a/run.json"
report "runs: run.json cut" warn "invalid JSON" -- $BIN runs "$T/tree3"
mkdir -p "$T/tree4"; cp -r results/abxi-cpu/2026-11-23-d256 "$T/tree4/a"; head -c 300 results/abxi-cpu/2026-11-23-d256/metrics.jsonl > "$T/tree4/a/metrics.jsonl"
report "runs: metrics.jsonl cut" warn "incomplete last line" -- $BIN runs "$T/tree4" --include-incomplete

# --- reports, diagnostics
report "report: results/demo/study.csv" ok "" -- $BIN report results/demo/study.csv
report "report: a run.json" fail "not a study table" -- $BIN report results/abxi-cpu/2026-11-23-d256/run.json
report "report: empty CSV" fail "empty.csv" -- $BIN report "$(: > "$T/empty.csv"; echo "$T/empty.csv")"
R=results/abxi-cpu/2026-11-23-d256
report "diagnose: same run twice" warn "same run" -- $BIN diagnose --single $R --cross $R --print-only
report "diagnose: no such run" fail "no/such" -- $BIN diagnose --single /no/such --cross $R --print-only

echo
for k in clear warned ok UNCLEAR; do printf '%s %s  ' "$k" "${COUNT[$k]:-0}"; done; echo
