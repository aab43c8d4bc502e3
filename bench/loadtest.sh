#!/usr/bin/env bash
# Load-tests a running server with wrk: GET /health and POST /predict.
#
#   bench/loadtest.sh URL_BASE [all|health|predict]
#   bench/loadtest.sh http://127.0.0.1:8080
#
# Loopback targets only. wrk is pinned to one core (taskset -c $WRK_CPU, default
# 1); pin the server to another one yourself (taskset -c 0 ...). Each run is
# bounded: -d $DURATION (default 10s) with -t $THREADS (1) and -c $CONNECTIONS (64).
#
# Environment (optional):
#   DURATION CONNECTIONS THREADS WRK_CPU   as above
#   LABEL           name of the target in the JSON lines (default: URL_BASE)
#   RESULTS_JSONL   append one JSON object per script to this file
#   WRK_INVALID_PCT WRK_OPERA WRK_POOL WRK_SEED WRK_NO_STATUS_COUNT  see bench/wrk/predict.lua
# Prints wrk's report and each script's summary (requests/s, p50/p99, non-2xx).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=bench/lib/common.sh
source "$here/lib/common.sh"

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
base="${1%/}"
what="${2:-all}"
case "$what" in all|health|predict) ;; *) usage ;; esac

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-1}"
WRK_CPU="${WRK_CPU:-1}"
LABEL="${LABEL:-$base}"

# Seconds for the outer safety timeout (wrk stops itself after DURATION).
case "$DURATION" in
  *[0-9]s) secs="${DURATION%s}" ;;
  *[0-9]m) secs=$((${DURATION%m} * 60)) ;;
  *[0-9]h) secs=$((${DURATION%h} * 3600)) ;;
  *) secs="$DURATION" ;;
esac
[[ "$secs" =~ ^[0-9]+$ ]] || bench_die "DURATION=$DURATION: use whole seconds, minutes or hours (10s, 2m, 1h)"
guard=$((secs + 30))

bench_require_loopback "$base"
bench_need_cmd wrk
bench_need_cmd taskset util-linux
bench_need_cmd curl

code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$base/health" || true)"
[[ "$code" == 200 ]] || bench_die "$base/health answered '$code', expected 200: is the server up?"

run() { # SCRIPT PATH
  local script="$1" path="$2" out
  bench_log "wrk -t$THREADS -c$CONNECTIONS -d$DURATION $script -> $base$path (cpu $WRK_CPU)"
  out="$(timeout "$guard" taskset -c "$WRK_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
    --latency -s "$here/wrk/$script.lua" "$base$path")" || bench_die "wrk failed on $base$path"
  printf '%s\n' "$out"
  local json
  json="$(printf '%s\n' "$out" | sed -n 's/^JSON: {/{/p' | tail -n1)"
  [[ -n "$json" ]] || bench_die "no JSON summary from $script.lua"
  if [[ -n "${RESULTS_JSONL:-}" ]]; then
    local label_json
    label_json="$(printf '%s' "$LABEL" | sed 's/\\/\\\\/g; s/"/\\"/g')"
    printf '{"target":"%s","threads":%s,"connections":%s,%s\n' \
      "$label_json" "$THREADS" "$CONNECTIONS" "${json#\{}" >>"$RESULTS_JSONL"
  fi
}

if [[ "$what" == all || "$what" == health ]]; then run health /health; fi
if [[ "$what" == all || "$what" == predict ]]; then run predict /predict; fi
