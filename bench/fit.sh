#!/usr/bin/env bash
# Fitting, side by side with scikit-learn fitting the same thing:
#
#   bench/fit.sh [ROWS] [PAIRS]        default: 1000000 rows, 3 pairs
#
# Two inputs: the shipped data (68,206 rows) and ROWS rows made of the
# shipped rows repeated (same columns, same split column; cached in
# $SCORER_CACHE_DIR/bench-data/). For each input and pair, in turn:
# `scorer train` (the shipped model's settings: OPERA, TIPOVUELO, MES
# one-hot, class_weight balanced, C 1, the split column) and
# tests/parity/sklearn_fit.py with the same options (pandas read_csv,
# OneHotEncoder, LogisticRegression newton-cholesky: the exact optimum).
# Both read the CSV and fit; ours also writes its curves, scikit-learn
# also scores a one-row file. Prints each run's wall time and peak RSS (GNU
# time), the medians, the ratios ours / scikit-learn, and the largest
# coefficient difference between the two fits of the large input.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=bench/lib/common.sh
source "$here/lib/common.sh"
rows="${1:-1000000}"
pairs="${2:-3}"

export SCORER_CACHE_DIR="${SCORER_CACHE_DIR:-$HOME/.cache/scorer-ci}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SCORER_CACHE_DIR/target}"
(cd "$root" && cargo build --release --locked --quiet)
scorer="$CARGO_TARGET_DIR/release/scorer"
# shellcheck source=.ci/tools.sh
source "$root/.ci/tools.sh"
_scorer_tools_parity
py="$SCORER_PARITY_PYTHON"

shipped="$root/data/scl_flights_2017.csv"
data="$SCORER_CACHE_DIR/bench-data"
mkdir -p "$data"
big="$data/fit_${rows}_$(sha256sum "$shipped" | cut -c1-10).csv"
if [ ! -s "$big" ]; then
  echo "repeating the shipped rows into $rows rows: $big"
  awk -v rows="$rows" 'NR == 1 { print; next } { body[++n] = $0 }
    END { for (i = 0; i < rows; i++) print body[i % n + 1] }' "$shipped" >"$big.tmp"
  mv "$big.tmp" "$big"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf 'OPERA,TIPOVUELO,MES\nGrupo LATAM,I,7\n' >"$work/one.csv"
cat >"$work/options.json" <<'JSON'
{"target": "atraso_15", "categorical": ["OPERA", "TIPOVUELO", "MES"], "numeric": [],
 "split": {"column": "split", "train_value": "train"}, "c": 1.0, "class_weight": "balanced"}
JSON

echo "shipped data: 68206 rows; large: $rows rows ($(du -h "$big" | cut -f1)); $pairs alternating pairs"
for _ in $(seq "$pairs"); do
  for size in shipped big; do
    input="$shipped"
    [ "$size" = big ] && input="$big"
    bench_timed "$work" "ours_$size" "$scorer" train --data "$input" --target atraso_15 --categorical OPERA,TIPOVUELO,MES \
      --split-column split --balanced --name scl-flight-delay --out "$work/ours_$size.json"
    bench_timed "$work" "sklearn_$size" "$py" "$root/tests/parity/sklearn_fit.py" "$work/options.json" "$input" "$work/one.csv" \
      "$work/sklearn_$size.json"
  done
done

"$py" "$here/lib/medians.py" "$work/times" \
  "shipped: ours / scikit-learn=ours_shipped/sklearn_shipped" "big: ours / scikit-learn=ours_big/sklearn_big"
"$py" - "$work" <<'PY'
import json, sys
work = sys.argv[1]
ours = json.load(open(f"{work}/ours_big.json"))
theirs = json.load(open(f"{work}/sklearn_big.json"))
diff = abs(ours["intercept"] - theirs["intercept"])
for f in ours["features"]:
    for level, w in f["weights"].items():
        diff = max(diff, abs(w - theirs["categorical"][f["name"]]["levels"][level]))
print(f"large input: max |coefficient difference| ours vs scikit-learn {diff:.2e}; "
      f"{ours['training']['iterations']} iterations ({ours['training']['solver']})")
PY
