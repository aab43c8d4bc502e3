#!/usr/bin/env bash
# Bounded soak of the local pipeline (issue 11, point 7): `scorer serve --local`
# under a steady mix of files and /predict traffic for DURATION, watched for
# leaks (RSS, open descriptors, threads) and checked for exactly-once outputs.
#
#   bench/soak.sh                      # the full run: 20 minutes
#   DURATION=60s bench/soak.sh         # a quick one
#
# What it does (bench/README.md, "Soak"):
#   1. starts `scorer serve --local DIR` on a free loopback port (PORT=0,
#      LOG_FORMAT=json; the address comes from the "listening" log line) and
#      polls GET /ready until 200;
#   2. for DURATION drops a file into DIR/input every FILE_EVERY seconds (hidden
#      temporary name, then a rename): good CSVs (the shipped SCL 2017 file,
#      raw-layout files of 3,000 to 200,000 rows from bench/gen_scl.py, one
#      gzipped) and, every BAD_EVERY-th, a bad one (missing column, empty,
#      header only, ragged rows, garbage bytes, truncated .csv.gz); meanwhile
#      PREDICT_RATE POST /predict requests/s, INVALID_PCT% of them invalid;
#   3. samples VmRSS, VmHWM, open FDs and threads every SAMPLE seconds into
#      samples.csv; the "start" sample is taken idle after WARMUP, the "end" one
#      idle after the last file is committed;
#   4. checks one manifest per dropped file with the expected status and rows,
#      no dead letters, no unexpected HTTP status, then SIGTERM and exit 0;
#   5. writes summary.json and summary.md in the run directory and prints the
#      Markdown. Exit 1 if a check fails, the RSS drift exceeds
#      RSS_DRIFT_MAX_MIB or the FD count grows by more than FD_DRIFT_MAX.
#
# Environment (all optional):
#   SCORER_BIN          the binary (default $CARGO_TARGET_DIR/release/scorer if that
#                       is set, then target/release/scorer, then
#                       $SCORER_CACHE_DIR/target/release/scorer)
#   DURATION            how long files and requests are sent (20m; 60s, 1h, 90 also work)
#   FILE_EVERY          seconds between dropped files (2)
#   BAD_EVERY           every Nth file is a bad one (3; 0: none)
#   GOOD_SIZES          rows of the generated good files, largest first ("200000 3000 100000 20000 50000 8000")
#   PREDICT_RATE        POST /predict requests per second, in all (20)
#   PREDICT_CONNS       client threads, one keep-alive connection each (2)
#   INVALID_PCT         percent of invalid /predict requests, 400 expected (10)
#   BIG_PCT             percent of valid requests with 1,000 flights (1)
#   RECONNECT_EVERY     requests per connection before it is replaced (50)
#   SAMPLE              seconds between samples (10)
#   WARMUP              seconds before the start sample (30)
#   DRAIN_TIMEOUT       longest wait for the last files to be committed (300)
#   RSS_DRIFT_MAX_MIB   largest RSS growth, end minus start sample (50)
#   FD_DRIFT_MAX        largest growth in open FDs, end minus start sample (5)
#   SHUTDOWN_TIMEOUT    seconds allowed from SIGTERM to exit (20)
#   SEED                /predict traffic seed (1)
#   MODEL               model the server loads and the requests follow (data/model.json)
#   REAL_DATA           the shipped file, dropped as is and followed by the generator
#                       (data/scl_flights_2017.csv)
#   KEEP_DATA=1         keep DIR (inputs and outputs, several GB) after a passing run
#   SCORER_CACHE_DIR    cache root (~/.cache/scorer-ci): venv, the file pool
#                       (bench-data/), runs (soak-runs/<UTC time>/)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
# shellcheck source=bench/lib/common.sh
source "$here/lib/common.sh"

[[ $# -eq 0 ]] || bench_die "bench/soak.sh takes no arguments (settings are environment variables; see the header)"
command_line="bench/soak.sh"
for v in DURATION FILE_EVERY BAD_EVERY GOOD_SIZES PREDICT_RATE PREDICT_CONNS INVALID_PCT BIG_PCT \
  RECONNECT_EVERY SAMPLE WARMUP DRAIN_TIMEOUT RSS_DRIFT_MAX_MIB FD_DRIFT_MAX SHUTDOWN_TIMEOUT SEED MODEL REAL_DATA; do
  if [[ -n "${!v:-}" ]]; then command_line="$v=\"${!v}\" $command_line"; fi
done
# The server inherits the environment: name allocator settings in the record too.
while IFS= read -r v; do command_line="$v=\"${!v}\" $command_line"; done < <(compgen -e | grep -E '^(MALLOC_|GLIBC_TUNABLES$)' || true)

DURATION="${DURATION:-20m}"
FILE_EVERY="${FILE_EVERY:-2}"
BAD_EVERY="${BAD_EVERY:-3}"
GOOD_SIZES="${GOOD_SIZES:-200000 3000 100000 20000 50000 8000}"
PREDICT_RATE="${PREDICT_RATE:-20}"
PREDICT_CONNS="${PREDICT_CONNS:-2}"
INVALID_PCT="${INVALID_PCT:-10}"
BIG_PCT="${BIG_PCT:-1}"
RECONNECT_EVERY="${RECONNECT_EVERY:-50}"
SAMPLE="${SAMPLE:-10}"
WARMUP="${WARMUP:-30}"
DRAIN_TIMEOUT="${DRAIN_TIMEOUT:-300}"
RSS_DRIFT_MAX_MIB="${RSS_DRIFT_MAX_MIB:-50}"
FD_DRIFT_MAX="${FD_DRIFT_MAX:-5}"
SHUTDOWN_TIMEOUT="${SHUTDOWN_TIMEOUT:-20}"
SEED="${SEED:-1}"
MODEL="${MODEL:-data/model.json}"
REAL_DATA="${REAL_DATA:-data/scl_flights_2017.csv}"
KEEP_DATA="${KEEP_DATA:-0}"
CACHE="${SCORER_CACHE_DIR:-$HOME/.cache/scorer-ci}"

# --- preconditions -------------------------------------------------------------
bench_find_scorer
[[ -f "$MODEL" ]] || bench_die "model artifact not found: $MODEL (set MODEL=...)"
[[ -f "$REAL_DATA" ]] || bench_die "real data not found: $REAL_DATA (set REAL_DATA=...)"
MODEL="$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")"
[[ -d /proc/self/fd ]] || bench_die "needs Linux /proc (samples /proc/PID/status and /proc/PID/fd)"
for v in RSS_DRIFT_MAX_MIB FD_DRIFT_MAX SHUTDOWN_TIMEOUT BAD_EVERY PREDICT_CONNS RECONNECT_EVERY SEED; do
  [[ "${!v}" =~ ^[0-9]+(\.[0-9]+)?$ ]] || bench_die "$v='${!v}' is not a number"
done
for v in DURATION FILE_EVERY SAMPLE WARMUP DRAIN_TIMEOUT; do
  [[ "${!v}" =~ ^[0-9]+(\.[0-9]+)?(ms|s|m|h)?$ ]] || bench_die "$v='${!v}' is not a duration (e.g. 90, 60s, 20m, 1h)"
done
for v in PREDICT_RATE INVALID_PCT BIG_PCT; do
  [[ "${!v}" =~ ^[0-9]+(\.[0-9]+)?$ ]] || bench_die "$v='${!v}' is not a number"
done
for v in FD_DRIFT_MAX BAD_EVERY PREDICT_CONNS RECONNECT_EVERY SEED; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || bench_die "$v='${!v}' is not a whole number"
done

venv="$("$here/lib/venv.sh")"
py="$venv/bin/python"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
run="$CACHE/soak-runs/$stamp"
dir="$run/local"
mkdir -p "$dir" "$CACHE/bench-data"
bench_log "run directory: $run"
# Which build was measured (a rebuild in place would otherwise go unnoticed).
scorer_id="$scorer (sha256 $(sha256sum "$scorer" | cut -c1-16), built $(date -u -r "$scorer" +%Y-%m-%dT%H:%M:%SZ))"
bench_log "scorer: $scorer_id"

pool="$("$py" "$here/lib/soak.py" pool --dir "$CACHE/bench-data" --real "$REAL_DATA" \
  --gen "$here/gen_scl.py" --sizes "$GOOD_SIZES")" || bench_die "could not build the file pool"
bench_log "file pool: $(dirname "$pool")"

# --- the server: always stopped on the way out -----------------------------------
server_pid=""
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=0 HOST=127.0.0.1 LOG_FORMAT=json RUST_LOG="${RUST_LOG:-info}" \
  "$scorer" serve --local "$dir" --model "$MODEL" >"$run/server.out" 2>"$run/server.log" &
server_pid=$!
addr="$("$py" "$here/lib/soak.py" addr --log "$run/server.log" --pid "$server_pid" --timeout 60)" || {
  tail -n 20 "$run/server.log" >&2 || true
  bench_die "the server did not start (log: $run/server.log)"
}
url="http://$addr"
bench_require_loopback "$url"
ready_s="$("$py" "$here/lib/ready.py" wait "$url/ready" --timeout 60 --pid "$server_pid")" || {
  tail -n 20 "$run/server.log" >&2 || true
  bench_die "GET $url/ready never answered 200 (log: $run/server.log)"
}
bench_log "server pid $server_pid listening on $addr, ready after ${ready_s} s more"

# --- the soak itself -------------------------------------------------------------
drive_rc=0
"$py" "$here/lib/soak.py" drive --dir "$dir" --url "$url" --pid "$server_pid" --pool "$pool" \
  --run "$run" --model "$MODEL" --duration "$DURATION" --file-every "$FILE_EVERY" \
  --bad-every "$BAD_EVERY" --predict-rate "$PREDICT_RATE" --predict-conns "$PREDICT_CONNS" \
  --invalid-pct "$INVALID_PCT" --big-pct "$BIG_PCT" --reconnect-every "$RECONNECT_EVERY" \
  --sample "$SAMPLE" --warmup "$WARMUP" --drain-timeout "$DRAIN_TIMEOUT" --seed "$SEED" || drive_rc=$?

# --- SIGTERM, and the exit status --------------------------------------------------
# A watchdog kills the server if it has not exited SHUTDOWN_TIMEOUT s after SIGTERM.
killed=()
bench_log "stopping the server (SIGTERM)"
t_stop="$(date +%s.%N)"
kill -TERM "$server_pid" 2>/dev/null || true
(
  trap 'kill "$nap" 2>/dev/null; exit 3' TERM
  sleep "$SHUTDOWN_TIMEOUT" &
  nap=$!
  wait "$nap" && kill -KILL "$server_pid" 2>/dev/null # status 0 only if it killed the server
) &
watchdog=$!
exit_code=0
wait "$server_pid" || exit_code=$?
stop_s="$(awk -v a="$t_stop" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')"
server_pid=""
kill "$watchdog" 2>/dev/null || true
watchdog_rc=0
wait "$watchdog" || watchdog_rc=$?
if [[ "$watchdog_rc" == 0 && "$exit_code" == 137 ]]; then
  bench_log "the server did not exit within ${SHUTDOWN_TIMEOUT} s of SIGTERM: killed"
  killed=(--killed)
fi
bench_log "server exit status $exit_code (${stop_s} s after SIGTERM)"

# --- summary ---------------------------------------------------------------------
machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
report_rc=0
"$py" "$here/lib/soak.py" report --run "$run" --exit-code "$exit_code" "${killed[@]}" --stop-seconds "$stop_s" \
  --rss-drift-max-mib "$RSS_DRIFT_MAX_MIB" --fd-drift-max "$FD_DRIFT_MAX" \
  --command "$command_line" --machine "$machine" --scorer "$scorer_id" || report_rc=$?

if [[ "$report_rc" == 0 && "$drive_rc" == 0 ]]; then
  if [[ "$KEEP_DATA" != 1 ]]; then
    bench_log "removing $dir ($(du -sh "$dir" 2>/dev/null | cut -f1); KEEP_DATA=1 keeps it)"
    rm -rf "$dir"
  fi
  bench_log "soak passed: $run/summary.md"
  exit 0
fi
bench_log "soak FAILED: see $run/summary.md (inputs and outputs kept in $dir)"
exit 1
