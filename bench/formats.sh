#!/usr/bin/env bash
# Parquet and JSON Lines out, side by side with Python polars doing the same:
#
#   bench/formats.sh [ROWS] [PAIRS]        default: 1000000 rows, 3 pairs
#
# The input is the raw 18-column SCL layout (bench/gen_scl.py, seed 42,
# cached in $SCORER_CACHE_DIR/bench-data/). For each pair, in turn:
# `scorer score --format parquet` and bench/baselines/polars_py.py
# --format parquet (lazy scan_csv -> sink_parquet, zstd), then our CSV and
# JSON Lines outputs; then Parquet in: the input's rows written once as
# Parquet (by polars, zstd), scored by each into Parquet (polars:
# scan_parquet, every column cast to text as the CSV side reads it). Prints each run's wall time and peak RSS (GNU time),
# the medians and the ratios ours / polars (below 1: ours is faster or
# smaller). Then reads our Parquet back with DuckDB, as a consumer would,
# and checks it holds the CSV output's rows and probabilities exactly;
# exits non-zero if not. Provenance columns are off on both sides (polars
# has none to add).
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

venv="$("$here/lib/venv.sh")"
py="$venv/bin/python"
# shellcheck source=.ci/tools.sh
source "$root/.ci/tools.sh"
_scorer_tools_consumer
data="$SCORER_CACHE_DIR/bench-data"
mkdir -p "$data"
genhash="$(cat "$here/gen_scl.py" "$root/data/scl_flights_2017.csv" | sha256sum | cut -c1-10)"
input="$data/scl_${rows}_${genhash}.csv"
if [ ! -s "$input" ]; then
  echo "generating $rows rows into $input"
  "$py" "$here/gen_scl.py" --rows "$rows" --seed 42 --out "$input.tmp" --real "$root/data/scl_flights_2017.csv"
  mv "$input.tmp" "$input"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "$rows rows, $pairs alternating pairs; input $(du -h "$input" | cut -f1)"
for _ in $(seq "$pairs"); do
  bench_timed "$work" ours_parquet "$scorer" score "$input" --out "$work/ours.parquet" --format parquet --provenance off
  bench_timed "$work" polars_parquet "$py" "$here/baselines/polars_py.py" "$input" --model "$root/data/model.json" --out "$work/polars.parquet" --format parquet
  bench_timed "$work" ours_csv "$scorer" score "$input" --out "$work/ours.csv"
  bench_timed "$work" ours_jsonl "$scorer" score "$input" --out "$work/ours.jsonl" --provenance off
done
# Parquet in: the raw rows as Parquet (written once, by polars), scored by each.
"$py" -c 'import polars as pl, sys; pl.scan_csv(sys.argv[1], infer_schema=False).sink_parquet(sys.argv[2], compression="zstd")' \
  "$input" "$work/input.parquet"
for _ in $(seq "$pairs"); do
  bench_timed "$work" ours_parquet_in "$scorer" score "$work/input.parquet" --out "$work/ours_in.parquet" --provenance off
  bench_timed "$work" polars_parquet_in "$py" "$here/baselines/polars_py.py" "$work/input.parquet" --model "$root/data/model.json" --out "$work/polars_in.parquet" --format parquet
done

"$py" "$here/lib/medians.py" "$work/times" \
  "Parquet out, ours / Python polars=ours_parquet/polars_parquet" \
  "Parquet in and out, ours / Python polars=ours_parquet_in/polars_parquet_in"
for f in ours.parquet polars.parquet ours.csv ours.jsonl; do
  printf '%-15s %s\n' "$f" "$(du -h "$work/$f" | cut -f1)"
done

# A consumer's check: DuckDB reads our Parquet; rows and probabilities are
# the CSV output's, exactly.
"$SCORER_CONSUMER_PYTHON" - "$work/ours.parquet" "$work/ours.csv" <<'PY'
import sys, duckdb
con = duckdb.connect()
parquet, csv = sys.argv[1], sys.argv[2]
p = [r[0] for r in con.execute("SELECT probability FROM read_parquet(?)", [parquet]).fetchall()]
c = [float(r[0]) for r in con.execute("SELECT probability FROM read_csv(?, all_varchar=true)", [csv]).fetchall()]
diff = sum(1 for x, y in zip(p, c) if x != y)
print(f"DuckDB: Parquet {len(p)} rows, CSV {len(c)} rows, {diff} probabilities differ")
sys.exit(0 if len(p) == len(c) and diff == 0 else 1)
PY
