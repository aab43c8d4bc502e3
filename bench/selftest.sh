#!/usr/bin/env bash
# Checks the benchmark kit itself, without our scorer (about a minute once the
# venv exists): the generator is deterministic and follows the real mix, the
# batch baselines agree with each other on a small file, the Python servers keep
# the /predict contract, and the wrk scripts count statuses correctly.
#
#   bench/selftest.sh
#
# Uses a tiny model written to a temporary directory and REAL_DATA (default
# data/scl_flights_2017.csv). Ends with "N passed, M failed"; exit 1 on a failure.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root" || exit 1
# shellcheck source=bench/lib/common.sh
source "$here/lib/common.sh"

REAL_DATA="${REAL_DATA:-data/scl_flights_2017.csv}"
[[ -f "$REAL_DATA" ]] || bench_die "real data not found: $REAL_DATA (set REAL_DATA=...)"
bench_need_cmd wrk
bench_need_cmd taskset util-linux
bench_need_cmd curl
venv="$("$here/lib/venv.sh")" || bench_die "could not prepare the venv"
py="$venv/bin/python"

tmp="$(mktemp -d)"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

passed=0
failed=0
check() { # NAME CMD...
  local name="$1"
  shift
  if "$@" >"$tmp/check.log" 2>&1; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
    sed 's/^/     /' "$tmp/check.log" | tail -n 15
  fi
}

cat >"$tmp/model.json" <<'JSON'
{"format": "scorer-logreg/1", "name": "selftest", "target": "atraso_15", "threshold": 0.5,
 "intercept": -0.1,
 "features": [
  {"name": "OPERA", "kind": "categorical", "weights": {"Grupo LATAM": -0.2, "Sky Airline": 0.1}},
  {"name": "TIPOVUELO", "kind": "categorical", "weights": {"I": 0.3, "N": -0.3}},
  {"name": "MES", "kind": "categorical", "weights": {"1": 0.0, "2": 0.1, "3": 0.2, "4": 0.0, "5": 0.0,
    "6": 0.0, "7": 0.4, "8": 0.0, "9": 0.0, "10": 0.1, "11": 0.0, "12": 0.5}},
  {"name": "DIST", "kind": "numeric", "mean": 10.0, "std": 2.0, "weight": 0.5}],
 "training": {}}
JSON

# --- generator -------------------------------------------------------------
gen() { "$py" "$here/gen_scl.py" --real "$REAL_DATA" --quiet "$@"; }
check "gen_scl: same seed, same bytes" bash -c "
  $(declare -f gen); py='$py' here='$here' REAL_DATA='$REAL_DATA'
  gen --rows 30000 --seed 5 --label --out '$tmp/a.csv' && gen --rows 30000 --seed 5 --label --out '$tmp/b.csv' &&
  gen --rows 30000 --seed 6 --label --out '$tmp/c.csv' &&
  cmp -s '$tmp/a.csv' '$tmp/b.csv' && ! cmp -s '$tmp/a.csv' '$tmp/c.csv'"
check "gen_scl: 18-column raw layout + label, real mix, labels match the delay" "$py" - "$tmp/a.csv" "$REAL_DATA" <<'PY'
import sys, polars as pl
d = pl.read_csv(sys.argv[1], infer_schema=False)
r = pl.read_csv(sys.argv[2], infer_schema=False)
want = "Fecha-I,Vlo-I,Ori-I,Des-I,Emp-I,Fecha-O,Vlo-O,Ori-O,Des-O,Emp-O,DIA,MES,AÑO,DIANOM,TIPOVUELO,OPERA,SIGLAORI,SIGLADES,atraso_15"
assert ",".join(d.columns) == want, d.columns
assert d.height == 30000
assert set(d["OPERA"].unique()) <= set(r["OPERA"].unique())
assert set(d["Ori-I"].unique()) == {"SCEL"} and set(d["AÑO"].unique()) == {"2017"}
share = d["OPERA"].eq("Grupo LATAM").mean(); real = r["OPERA"].eq("Grupo LATAM").mean()
assert abs(share - real) < 0.02, (share, real)
late = d["atraso_15"].cast(pl.Int64).mean(); real_late = r["atraso_15"].cast(pl.Int64).mean()
assert abs(late - real_late) < 0.02, (late, real_late)
x = d.select(((pl.col("Fecha-O").str.to_datetime("%Y-%m-%d %H:%M:%S")
               - pl.col("Fecha-I").str.to_datetime("%Y-%m-%d %H:%M:%S")).dt.total_minutes() > 15)
             .cast(pl.Int64).alias("late"), pl.col("atraso_15").cast(pl.Int64))
assert (x["late"] == x["atraso_15"]).all()
days = d.select(pl.col("Fecha-I").str.to_datetime("%Y-%m-%d %H:%M:%S").dt.weekday().alias("w"), "DIANOM").unique()
names = ["Lunes", "Martes", "Miercoles", "Jueves", "Viernes", "Sabado", "Domingo"]
assert all(names[w - 1] == n for w, n in days.iter_rows()), days
PY

# --- batch baselines -------------------------------------------------------
gen --rows 20000 --seed 9 --out "$tmp/in.csv"
for t in pandas_sklearn polars_py; do
  check "$t scores the file" "$py" "$here/baselines/$t.py" "$tmp/in.csv" --model "$tmp/model.json" --out "$tmp/out_$t.csv"
done
check "floor rewrites the file unchanged" bash -c "'$py' '$here/baselines/floor_polars.py' rewrite '$tmp/in.csv' '$tmp/floor.csv' && cmp '$tmp/in.csv' '$tmp/floor.csv'"
check "parse-only count is the row count" bash -c "[[ \$('$py' '$here/baselines/floor_polars.py' count '$tmp/in.csv') == 20000 ]]"
check "pandas and polars outputs agree row by row" "$py" "$here/verify_outputs.py" --ref "$tmp/out_polars_py.csv" --rows 20000 "$tmp/out_pandas_sklearn.csv"
check "probabilities follow the artifact's formula" "$py" - "$tmp/out_polars_py.csv" "$tmp/model.json" <<'PY'
import json, math, sys, polars as pl
m = json.load(open(sys.argv[2])); d = pl.read_csv(sys.argv[1], infer_schema=False)
w = {f["name"]: f["weights"] for f in m["features"] if f["kind"] == "categorical"}
assert d.height > 0 and set(d["OPERA"].unique()) <= set(w["OPERA"])
for row in d.head(500).iter_rows(named=True):
    z = m["intercept"] + sum(w[c][row[c]] for c in w)
    p = 1 / (1 + math.exp(-z))
    assert abs(p - float(row["probability"])) < 1e-12 and int(row["prediction"]) == int(p >= 0.5), row
PY

# --- servers and wrk ---------------------------------------------------------
port_f="$("$py" "$here/lib/ready.py" freeport)"
BENCH_MODEL="$tmp/model.json" "$venv/bin/gunicorn" -w 2 -b "127.0.0.1:$port_f" --chdir "$here/baselines" \
  flask_app:app >"$tmp/flask.log" 2>&1 &
pids+=($!)
port_a="$("$py" "$here/lib/ready.py" freeport)"
BENCH_MODEL="$tmp/model.json" "$venv/bin/uvicorn" --workers 2 --host 127.0.0.1 --port "$port_a" \
  --no-access-log --log-level warning --app-dir "$here/baselines" fastapi_app:app >"$tmp/fastapi.log" 2>&1 &
pids+=($!)

contract() { # PORT
  local base="http://127.0.0.1:$1" body code
  "$py" "$here/lib/ready.py" wait "$base/ready" --timeout 60 || return 1
  [[ "$(curl -s "$base/health")" == '{"status":"OK"}' ]] || { echo "health"; return 1; }
  body="$(curl -s -XPOST "$base/predict" -H 'content-type: application/json' \
    -d '{"flights":[{"OPERA":"Grupo LATAM","TIPOVUELO":"N","MES":3},{"OPERA":"Sky Airline","TIPOVUELO":"I","MES":12}]}')"
  [[ "$body" == '{"predict":[0,1]}' ]] || { echo "predict: $body"; return 1; }
  for bad in '{"OPERA":"Nope Air","TIPOVUELO":"N","MES":3}' '{"OPERA":"Grupo LATAM","TIPOVUELO":"X","MES":3}' \
    '{"OPERA":"Grupo LATAM","TIPOVUELO":"N","MES":13}'; do
    code="$(curl -s -o "$tmp/bad.json" -w '%{http_code}' -XPOST "$base/predict" \
      -H 'content-type: application/json' -d "{\"flights\":[$bad]}")"
    [[ "$code" == 400 ]] || { echo "$bad -> $code"; return 1; }
  done
  grep -q TIPOVUELO <(curl -s -XPOST "$base/predict" -H 'content-type: application/json' \
    -d '{"flights":[{"OPERA":"Grupo LATAM","TIPOVUELO":"X","MES":3}]}') || { echo "400 does not name the field"; return 1; }
}
check "Flask + gunicorn keeps the /predict contract" contract "$port_f"
check "FastAPI + uvicorn keeps the /predict contract" contract "$port_a"

wrk_json() { # SCRIPT URL [ENV=VAL...]: prints the JSON summary line
  local script="$1" url="$2"
  shift 2
  env "$@" timeout 30 taskset -c "$(($(nproc) - 1))" wrk -t2 -c8 -d2s -s "$here/wrk/$script.lua" "$url" \
    | sed -n 's/^JSON: //p'
}
opera='WRK_OPERA=Grupo LATAM|Sky Airline'
check "wrk health.lua: all 2xx, summary printed" bash -c "
  $(declare -f wrk_json); here='$here'
  j=\$(wrk_json health http://127.0.0.1:$port_a/health); echo \"\$j\"
  '$py' -c 'import json,sys; j=json.loads(sys.argv[1]); assert j[\"requests\"]>0 and j[\"non_2xx\"]==0 and j[\"rps\"]>0 and j[\"p99_ms\"]>=j[\"p50_ms\"]>0' \"\$j\""
check "wrk predict.lua: valid mix gives no non-2xx" bash -c "
  $(declare -f wrk_json); here='$here'
  j=\$(wrk_json predict http://127.0.0.1:$port_a/predict '$opera'); echo \"\$j\"
  '$py' -c 'import json,sys; j=json.loads(sys.argv[1]); assert j[\"requests\"]>0 and j[\"non_2xx\"]==0' \"\$j\""
check "wrk predict.lua: WRK_INVALID_PCT=20 counts ~20% 400s across threads" bash -c "
  $(declare -f wrk_json); here='$here'
  j=\$(wrk_json predict http://127.0.0.1:$port_a/predict '$opera' WRK_INVALID_PCT=20); echo \"\$j\"
  '$py' -c 'import json,sys; j=json.loads(sys.argv[1]); s=j[\"non_2xx\"]/j[\"requests\"]; assert 0.12<s<0.28 and j[\"by_status\"].get(\"400\")==j[\"non_2xx\"], s' \"\$j\""
check "wrk predict.lua: unknown airlines (default mix vs a 2-airline model) are counted" bash -c "
  $(declare -f wrk_json); here='$here'
  j=\$(wrk_json predict http://127.0.0.1:$port_f/predict); echo \"\$j\"
  '$py' -c 'import json,sys; j=json.loads(sys.argv[1]); assert j[\"non_2xx\"]>0 and j[\"by_status\"][\"400\"]==j[\"non_2xx\"]' \"\$j\""
check "loadtest.sh refuses a non-loopback target" bash -c "! '$here/loadtest.sh' http://192.0.2.1:80 health"

echo "selftest: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
