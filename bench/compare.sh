#!/usr/bin/env bash
# One side-by-side benchmark run of our scorer against the Python alternatives
# (issue 10), written to docs/BENCHMARKS.md with a plot (docs/benchmarks.png).
#
#   cargo build --release            # first: this script builds nothing
#   bench/compare.sh                 # full run: 100k, 1M and 10M rows (~5 min)
#   SIZES="100000 1000000" DURATION=5s bench/compare.sh     # a quicker run
#
# Batch: for each size, a raw 18-column SCL file (bench/gen_scl.py, cached) is
#   scored by ours (`scorer score`), pandas + scikit-learn, Python polars, and
#   run through the floor (polars read + rewrite, no model) and a parse-only
#   count; wall time and peak RSS from GNU time; outputs checked against ours.
# Online: our server, Flask + gunicorn (2 workers) and FastAPI + uvicorn
#   (2 workers), each pinned to core $SERVER_CPU, loaded in turn by wrk pinned to
#   core $WRK_CPU (-t1 -c64 -d10s): GET /health and POST /predict.
# Startup: process start to GET /ready = 200, median of $STARTUP_RUNS runs.
#
# Environment (all optional):
#   SCORER_BIN        our binary (default $CARGO_TARGET_DIR/release/scorer, else
#                     target/release/scorer, else $SCORER_CACHE_DIR/target/release/scorer)
#   SCORER_SERVE_ARGS extra arguments for `scorer serve --local DIR` (word-split)
#   MODEL             model artifact (default data/model.json)
#   REAL_DATA         real SCL file the generator samples (default data/scl_flights_2017.csv)
#   SIZES             batch sizes in rows (default "100000 1000000 10000000")
#   SEED              generator seed (default 42)
#   BATCH_RUNS        runs of each batch tool on files up to 1M rows; the report
#                     gives the median wall time and the largest peak (default 3;
#                     larger files run once)
#   DURATION CONNECTIONS   wrk settings (default 10s, 64; one wrk thread)
#   SERVER_CPU WRK_CPU     cores for servers and wrk (default 0 and 1)
#   STARTUP_RUNS      runs of the start-to-ready measure (default 5)
#   VERIFY_ROWS       rows compared column by column between outputs (default 10000)
#   VERIFY_TOL        largest probability difference taken as equal (default 1e-9)
#   SKIP_BATCH SKIP_ONLINE SKIP_STARTUP   set to 1 to leave a part out
#   KEEP_OUTPUTS=1    keep the scored outputs (deleted after checking otherwise)
#   REPORT            Markdown written (default docs/BENCHMARKS.md)
#   SCORER_CACHE_DIR  cache root (default ~/.cache/scorer-ci): venv, data, runs
# Raw results stay in $SCORER_CACHE_DIR/bench-runs/<UTC time>/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
# shellcheck source=bench/lib/common.sh
source "$here/lib/common.sh"

command_line="bench/compare.sh${*:+ $*}"
for v in SIZES DURATION CONNECTIONS SEED MODEL SKIP_BATCH SKIP_ONLINE SKIP_STARTUP STARTUP_RUNS SCORER_SERVE_ARGS; do
  if [[ -n "${!v:-}" ]]; then command_line="$v=\"${!v}\" $command_line"; fi
done
[[ $# -eq 0 ]] || bench_die "bench/compare.sh takes no arguments (settings are environment variables; see the header)"

SIZES="${SIZES:-100000 1000000 10000000}"
SEED="${SEED:-42}"
MODEL="${MODEL:-data/model.json}"
REAL_DATA="${REAL_DATA:-data/scl_flights_2017.csv}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
SERVER_CPU="${SERVER_CPU:-0}"
WRK_CPU="${WRK_CPU:-1}"
STARTUP_RUNS="${STARTUP_RUNS:-5}"
VERIFY_ROWS="${VERIFY_ROWS:-10000}"
VERIFY_TOL="${VERIFY_TOL:-1e-9}"
SKIP_BATCH="${SKIP_BATCH:-0}"
BATCH_RUNS="${BATCH_RUNS:-3}"
[[ "$BATCH_RUNS" =~ ^[1-9][0-9]*$ ]] || bench_die "BATCH_RUNS: '$BATCH_RUNS' is not a positive count"
SKIP_ONLINE="${SKIP_ONLINE:-0}"
SKIP_STARTUP="${SKIP_STARTUP:-0}"
KEEP_OUTPUTS="${KEEP_OUTPUTS:-0}"
REPORT="${REPORT:-docs/BENCHMARKS.md}"
CACHE="${SCORER_CACHE_DIR:-$HOME/.cache/scorer-ci}"
read -r -a serve_args <<<"${SCORER_SERVE_ARGS:-}"

# --- preconditions ---------------------------------------------------------
bench_find_scorer
[[ -f "$MODEL" ]] || bench_die "model artifact not found: $MODEL (set MODEL=...)"
[[ -f "$REAL_DATA" ]] || bench_die "real data not found: $REAL_DATA (copy shared/data/scl_flights_2017.csv to data/, or set REAL_DATA=...)"
MODEL="$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")"
[[ -x /usr/bin/time ]] || bench_need_cmd /usr/bin/time time
bench_need_cmd taskset util-linux
bench_need_cmd curl
if [[ "$SKIP_ONLINE" != 1 ]]; then bench_need_cmd wrk; fi
ncpu="$(nproc)"
((SERVER_CPU < ncpu && WRK_CPU < ncpu)) || bench_die "SERVER_CPU=$SERVER_CPU / WRK_CPU=$WRK_CPU: this machine has $ncpu cores"

venv="$("$here/lib/venv.sh")"
py="$venv/bin/python"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
run="$CACHE/bench-runs/$stamp"
mkdir -p "$run" "$CACHE/bench-data"
bench_log "run directory: $run"

"$py" "$here/report.py" meta --out "$run/meta.json" --scorer "$scorer" --model "$MODEL" \
  --command "$command_line" \
  --set sizes="$SIZES" --set seed="$SEED" --set duration="$DURATION" \
  --set connections="$CONNECTIONS" --set wrk_threads=1 --set server_cpu="$SERVER_CPU" \
  --set wrk_cpu="$WRK_CPU" --set startup_runs="$STARTUP_RUNS" --set verify_rows="$VERIFY_ROWS" \
  --set serve_args="${SCORER_SERVE_ARGS:-}"

# --- servers started by this script are always stopped --------------------
# Servers run one at a time: $server_pid is the one running, if any.
server_pid=""
stop_server() {
  local pid="$server_pid" _
  [[ -n "$pid" ]] || return 0
  server_pid=""
  kill -TERM "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  for _ in $(seq 1 200); do # up to 10 s for a graceful stop
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() { stop_server; }
trap cleanup EXIT
problems=0 # a tool failed or outputs disagree: the report is still written, then exit 1
trap 'exit 130' INT TERM

# --- batch -------------------------------------------------------------------
measure() { # TOOL SIZE INPUT BYTES -- CMD...
  # Runs the command BATCH_RUNS times (once above 1M rows): a shared machine
  # writes back the previous tool's output while the next one runs, and one
  # run can be off by half. Median wall time, largest peak.
  local tool="$1" size="$2" input="$3" bytes="$4"
  shift 5
  local tf="$run/batch.$tool.$size.time" log="$run/batch.$tool.$size.log" status=ok secs kb
  local runs=1 i all_secs=() peak=0
  ((size <= 1000000)) && runs="$BATCH_RUNS"
  bench_log "  $tool ($runs run(s))"
  for ((i = 1; i <= runs; i++)); do
    if ! /usr/bin/time -f '%e %M' -o "$tf" "$@" >"$log" 2>&1; then
      status=failed
      problems=1
      bench_log "  $tool FAILED (see $log)"
      break
    fi
    read -r secs kb < <(tail -n1 "$tf" 2>/dev/null || true)
    [[ "${secs:-}" =~ ^[0-9.]+$ && "${kb:-}" =~ ^[0-9]+$ ]] || {
      status=failed
      break
    }
    all_secs+=("$secs")
    ((kb > peak)) && peak="$kb"
  done
  secs=null kb=null
  if [[ "$status" == ok ]]; then
    secs="$(printf '%s\n' "${all_secs[@]}" | sort -n | sed -n "$(((${#all_secs[@]} + 1) / 2))p")"
    kb="$peak"
  fi
  printf '{"tool":"%s","rows":%s,"bytes":%s,"seconds":%s,"peak_kb":%s,"status":"%s","runs":%s,"all_seconds":[%s],"input":"%s","log":"%s"}\n' \
    "$tool" "$size" "$bytes" "$secs" "$kb" "$status" "${#all_secs[@]}" "$(
      IFS=,
      echo "${all_secs[*]}"
    )" "$input" "$log" >>"$run/batch.jsonl"
}

if [[ "$SKIP_BATCH" != 1 ]]; then
  genhash="$(cat "$here/gen_scl.py" "$REAL_DATA" | sha256sum | cut -c1-10)"
  out="$run/out"
  mkdir -p "$out"
  for n in $SIZES; do
    [[ "$n" =~ ^[0-9]+$ ]] || bench_die "SIZES: '$n' is not a row count"
    input="$CACHE/bench-data/scl_raw_${n}_seed${SEED}_${genhash}.csv"
    if [[ ! -f "$input" ]]; then
      find "$CACHE/bench-data" -maxdepth 1 -name "scl_raw_${n}_seed${SEED}_*.csv" -delete
      bench_log "generating $n rows -> $input"
      "$py" "$here/gen_scl.py" --rows "$n" --seed "$SEED" --out "$input" --real "$REAL_DATA"
    fi
    bytes="$(stat -c %s "$input")"
    bench_log "batch: $n rows ($((bytes / 1000000)) MB)"
    cat "$input" >/dev/null # same warm page cache for everyone
    measure ours "$n" "$input" "$bytes" -- "$scorer" score "$input" --model "$MODEL" --out "$out/ours_$n.csv"
    measure polars_py "$n" "$input" "$bytes" -- "$py" "$here/baselines/polars_py.py" "$input" --model "$MODEL" --out "$out/polars_py_$n.csv"
    measure floor "$n" "$input" "$bytes" -- "$py" "$here/baselines/floor_polars.py" rewrite "$input" "$out/floor_$n.csv"
    measure count "$n" "$input" "$bytes" -- "$py" "$here/baselines/floor_polars.py" count "$input"
    measure pandas_sklearn "$n" "$input" "$bytes" -- "$py" "$here/baselines/pandas_sklearn.py" "$input" --model "$MODEL" --out "$out/pandas_sklearn_$n.csv"
    bench_log "  checking outputs against ours (first $VERIFY_ROWS rows, row counts)"
    others=()
    for t in pandas_sklearn polars_py; do [[ -f "$out/${t}_$n.csv" ]] && others+=("$out/${t}_$n.csv"); done
    if [[ -f "$out/ours_$n.csv" && ${#others[@]} -gt 0 ]]; then
      "$py" "$here/verify_outputs.py" --ref "$out/ours_$n.csv" --rows "$VERIFY_ROWS" --tol "$VERIFY_TOL" --json "${others[@]}" \
        | sed "s/^{/{\"size\":$n,/" >>"$run/verify.jsonl" || { problems=1; bench_log "  outputs DISAGREE (see $run/verify.jsonl)"; }
      "$py" - "$out/ours_$n.csv" "$out/floor_$n.csv" "$n" >>"$run/verify.jsonl" <<'PY'
import json, os, sys
import polars as pl
ours, floor, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def count(p):
    return int(pl.scan_csv(p, infer_schema=False).select(pl.len()).collect().item()) if os.path.exists(p) else None
print(json.dumps({"size": n, "what": "rows", "input_rows": n, "ours_rows": count(ours), "floor_rows": count(floor)}))
PY
    else
      problems=1
      bench_log "  no output of ours to check against"
    fi
    if [[ "$KEEP_OUTPUTS" != 1 ]]; then rm -f "$out"/*_"$n"[._-]*; fi
  done
fi

# --- online ------------------------------------------------------------------
freeport() { "$py" "$here/lib/ready.py" freeport; }

start_server() { # NAME PORT -- CMD...   (pinned to SERVER_CPU; waits for /ready)
  local name="$1" port="$2"
  shift 3
  bench_log "starting $name on 127.0.0.1:$port (cpu $SERVER_CPU)"
  taskset -c "$SERVER_CPU" "$@" >"$run/server.$name.log" 2>&1 &
  server_pid=$!
  if ! "$py" "$here/lib/ready.py" wait "http://127.0.0.1:$port/ready" --timeout 120 --pid "$server_pid" >/dev/null; then
    tail -n 20 "$run/server.$name.log" >&2 || true
    bench_die "$name did not become ready (log: $run/server.$name.log)"
  fi
}

opera_levels="$("$py" - "$MODEL" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for f in doc.get("features", []):
    if f.get("name") == "OPERA" and f.get("kind") == "categorical":
        print("|".join(f["weights"]))
PY
)"

online() { # NAME PORT
  LABEL="$1" RESULTS_JSONL="$run/online.jsonl" DURATION="$DURATION" CONNECTIONS="$CONNECTIONS" \
    THREADS=1 WRK_CPU="$WRK_CPU" WRK_OPERA="$opera_levels" \
    "$here/loadtest.sh" "http://127.0.0.1:$2" all >"$run/wrk.$1.log" 2>&1 \
    || { tail -n 20 "$run/wrk.$1.log" >&2; bench_die "load test of $1 failed (log: $run/wrk.$1.log)"; }
  grep -E '^(----|requests:|latency:|non-2xx)' "$run/wrk.$1.log" | sed 's/^/    /' >&2
}

if [[ "$SKIP_ONLINE" != 1 ]]; then
  mkdir -p "$run/local"
  port="$(freeport)"
  start_server ours "$port" -- env PORT="$port" "$scorer" serve --local "$run/local" "${serve_args[@]}"
  online ours "$port"
  stop_server

  port="$(freeport)"
  start_server flask_gunicorn "$port" -- env BENCH_MODEL="$MODEL" "$venv/bin/gunicorn" -w 2 \
    -b "127.0.0.1:$port" --chdir "$here/baselines" flask_app:app
  online flask_gunicorn "$port"
  stop_server

  port="$(freeport)"
  start_server fastapi_uvicorn "$port" -- env BENCH_MODEL="$MODEL" "$venv/bin/uvicorn" --workers 2 \
    --host 127.0.0.1 --port "$port" --no-access-log --log-level warning \
    --app-dir "$here/baselines" fastapi_app:app
  online fastapi_uvicorn "$port"
  stop_server
fi

# --- startup -----------------------------------------------------------------
startup() { # NAME RUNS -- CMD...   ($port must be set; PORT passes to the child)
  local name="$1" runs="$2" line
  shift 3
  bench_log "startup: $name, $runs runs"
  if line="$(PORT="$port" "$py" "$here/lib/ready.py" startup --url "http://127.0.0.1:$port/ready" \
    --runs "$runs" --cpu "$SERVER_CPU" -- "$@")"; then
    printf '{"target":"%s",%s\n' "$name" "${line#\{}" >>"$run/startup.jsonl"
    bench_log "  $line"
  else
    problems=1
    bench_log "  startup measure of $name failed"
  fi
}

if [[ "$SKIP_STARTUP" != 1 ]]; then
  mkdir -p "$run/local-startup"
  port="$(freeport)"
  startup ours "$STARTUP_RUNS" -- "$scorer" serve --local "$run/local-startup" "${serve_args[@]}"
  port="$(freeport)"
  startup flask_gunicorn 3 -- env BENCH_MODEL="$MODEL" "$venv/bin/gunicorn" -w 2 \
    -b "127.0.0.1:$port" --chdir "$here/baselines" flask_app:app
  port="$(freeport)"
  startup fastapi_uvicorn 3 -- env BENCH_MODEL="$MODEL" "$venv/bin/uvicorn" --workers 2 \
    --host 127.0.0.1 --port "$port" --no-access-log --log-level warning \
    --app-dir "$here/baselines" fastapi_app:app
fi

# --- report ------------------------------------------------------------------
mkdir -p "$here/out" "$(dirname "$REPORT")"
"$py" "$here/report.py" render "$run" --md "$REPORT" --png "$here/out/benchmarks.png" \
  --copy-png "$(dirname "$REPORT")/benchmarks.png"
bench_log "report: $REPORT (raw results: $run)"
if [[ "$problems" != 0 ]]; then
  bench_die "some measurements failed or outputs disagreed: see the report and $run"
fi
