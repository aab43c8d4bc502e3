#!/usr/bin/env bash
# One large file scored in 1, 2 and 4 parallel tasks through `serve --local`
# (the local process pool standing in for a Cloud Run job), against the same
# file scored inline by `scorer score`:
#
#   bench/shard.sh [ROWS] [TASKS...]        default: 10000000 rows, tasks 1 2 4
#
# For each task count it prints the wall time from the file landing to the
# manifest, each task's peak resident memory (from the tasks' own summary log
# entries), and whether the shards, concatenated without their repeated
# headers, are byte-identical to the inline output. Exits non-zero if any
# output differs. The input is the raw 18-column SCL layout made by
# bench/gen_scl.py, cached in $SCORER_CACHE_DIR/bench-data/.
#
# On this 2-core machine, 4 tasks share 2 cores: the figures show the cost of
# cutting a file (the chain check, the header per shard) and that memory per
# task stays flat; the speed-up of N tasks on N machines is what Cloud Run
# gives, not what one machine can show.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
rows="${1:-10000000}"
shift || true
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(1 2 4)

export SCORER_CACHE_DIR="${SCORER_CACHE_DIR:-$HOME/.cache/scorer-ci}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SCORER_CACHE_DIR/target}"
(cd "$root" && cargo build --release --locked --quiet)

venv="$("$here/lib/venv.sh")"
py="$venv/bin/python"
data="$SCORER_CACHE_DIR/bench-data"
mkdir -p "$data"
genhash="$(cat "$here/gen_scl.py" "$root/data/scl_flights_2017.csv" | sha256sum | cut -c1-10)"
input="$data/scl_${rows}_${genhash}.csv"
if [ ! -s "$input" ]; then
  echo "generating $rows rows into $input"
  "$py" "$here/gen_scl.py" --rows "$rows" --seed 42 --out "$input.tmp" --real "$root/data/scl_flights_2017.csv"
  mv "$input.tmp" "$input"
fi
size=$(stat -c %s "$input")
work="$(mktemp -d /tmp/scorer-shard-bench.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
# A copy: a build of another checkout sharing the target directory cannot
# swap the binary under a run.
scorer="$work/scorer"
cp "$CARGO_TARGET_DIR/release/scorer" "$scorer"

echo "input: $rows rows, $size bytes"
start=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/inline.rss" "$scorer" score "$input" --out "$work/inline.csv" --errors "$work/inline.errors.csv" >/dev/null
inline_s=$(echo "$(date +%s.%N) - $start" | bc)
inline_mib=$(( $(cat "$work/inline.rss") / 1024 ))
printf '%-8s %8.1f s   peak %5d MiB\n' "inline" "$inline_s" "$inline_mib"
# The rate of one vCPU, what a task on Cloud Run with cpu = 1 gets.
start=$(date +%s.%N)
taskset -c 0 "$scorer" score "$input" --out "$work/pinned.csv" --errors "$work/pinned.errors.csv" >/dev/null
pinned_s=$(echo "$(date +%s.%N) - $start" | bc)
printf '%-8s %8.1f s   %.0f MB/s on one core\n' "1 core" "$pinned_s" "$(echo "$size / $pinned_s / 1000000" | bc -l)"
rm -f "$work/pinned.csv" "$work/pinned.errors.csv"

status=0
for n in "${tasks[@]}"; do
  dir="$work/tasks-$n"
  mkdir -p "$dir/input" "$dir/output"
  per_task=$(( (size + n - 1) / n ))
  INLINE_MAX_BYTES=1 SHARD_BYTES="$per_task" MAX_TASKS="$n" SHARD_PARALLELISM="$n" \
    PORT=0 LOG_FORMAT=json RUST_LOG=info \
    "$scorer" serve --local "$dir" >"$dir.log" 2>&1 &
  server=$!
  until grep -q '"listening"' "$dir.log"; do
    kill -0 "$server" 2>/dev/null || { cat "$dir.log" >&2; exit 1; }
    sleep 0.1
  done
  ln "$input" "$dir/.big.tmp" 2>/dev/null || cp "$input" "$dir/.big.tmp"
  start=$(date +%s.%N)
  mv "$dir/.big.tmp" "$dir/input/big.csv"
  until ls "$dir"/output/big.csv/*/manifest.json >/dev/null 2>&1; do
    kill -0 "$server" 2>/dev/null || { cat "$dir.log" >&2; exit 1; }
    sleep 0.05
  done
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  kill "$server"; wait "$server" 2>/dev/null || true
  manifest="$(ls "$dir"/output/big.csv/*/manifest.json)"
  # Shards in the manifest's order, each without its header but the first.
  "$py" - "$manifest" "$dir/joined.csv" "$dir/output" <<'EOF'
import json, os, sys
m = json.load(open(sys.argv[1]))
assert m["status"] == "scored", m
shards = [o["name"] for o in m["outputs"].get("shards", [])] or [m["outputs"]["predictions"]["name"]]
with open(sys.argv[2], "wb") as out:
    for i, uri in enumerate(shards):
        path = os.path.join(sys.argv[3], uri)
        with open(path, "rb") as f:
            header = f.readline()
            if i == 0:
                out.write(header)
            while chunk := f.read(1 << 20):
                out.write(chunk)
EOF
  peaks=$(grep -h '"task summary"\|"job summary"' "$dir.log" | "$py" -c '
import json, sys
print(" ".join(str(e["peak_rss_mib"]) for e in map(json.loads, sys.stdin) if "peak_rss_mib" in e))')
  if cmp -s "$dir/joined.csv" "$work/inline.csv"; then same="identical to inline"; else same="DIFFERS from inline"; status=1; fi
  printf '%-8s %8.1f s   per-task peak MiB: %s   %s\n' "$n task$([ "$n" = 1 ] || echo s)" "$wall" "$peaks" "$same"
done
exit $status
