-- wrk -t1 -c64 -d10s -s bench/wrk/predict.lua http://127.0.0.1:8080/predict
--
-- POST /predict with {"flights": [...]}: each request carries 1 to 5 flights
-- drawn from the real SCL 2017 mix (airline frequencies and each airline's
-- international share from data/scl_flights_2017.csv, months uniform). Every
-- thread builds a pool of WRK_POOL bodies up front and cycles through it, so the
-- load generator spends no time on JSON during the run.
--
-- Environment:
--   WRK_INVALID_PCT  percent of requests with one invalid flight (unknown airline,
--                    TIPOVUELO "X" or MES 13, in turn); default 0 = all valid
--   WRK_OPERA        "A|B|C": draw airlines only from these (e.g. a small test
--                    model's vocabulary); default: the 23 real airlines
--   WRK_POOL         bodies per thread (default 2000)
--   WRK_SEED         random seed (default 1; thread i uses seed + i)
--   WRK_NO_STATUS_COUNT=1  see report.lua
-- done() prints requests/s, p50/p99 latency, the non-2xx count and a JSON line.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(dir .. "report.lua")

-- {OPERA, flights in 2017, share of them international (TIPOVUELO = I)}
local REAL = {
  {"Grupo LATAM", 40892, 0.4194}, {"Sky Airline", 14298, 0.1958},
  {"Aerolineas Argentinas", 1949, 1}, {"Copa Air", 1850, 1},
  {"Latin American Wings", 1674, 0.6201}, {"Avianca", 1152, 1},
  {"JetSmart SPA", 1095, 0.0055}, {"Gol Trans", 806, 1},
  {"American Airlines", 757, 1}, {"Air Canada", 565, 1}, {"Iberia", 362, 1},
  {"Delta Air", 358, 1}, {"Air France", 358, 1}, {"Aeromexico", 351, 1},
  {"United Airlines", 335, 1}, {"Oceanair Linhas Aereas", 279, 1},
  {"Alitalia", 259, 1}, {"K.L.M.", 251, 1}, {"British Airways", 205, 1},
  {"Qantas Airways", 195, 1}, {"Lacsa", 92, 1}, {"Austral", 74, 1},
  {"Plus Ultra Lineas Aereas", 49, 1},
}

local function airlines()
  local only = os.getenv("WRK_OPERA")
  if not only or only == "" then return REAL end
  local known, list = {}, {}
  for _, a in ipairs(REAL) do known[a[1]] = a end
  for name in only:gmatch("[^|]+") do
    table.insert(list, known[name] or {name, 1000, 0.5})
  end
  return list
end

local function pick(list, total)
  local r = math.random() * total
  for _, a in ipairs(list) do
    r = r - a[2]
    if r <= 0 then return a end
  end
  return list[#list]
end

local function flight_json(opera, tipo, mes)
  local m = type(mes) == "number" and string.format("%d", mes) or ('"' .. mes .. '"')
  return string.format('{"OPERA":"%s","TIPOVUELO":"%s","MES":%s}', opera, tipo, m)
end

local requests_pool = {}
local pool_n = 0
local idx = 0
invalid_in_pool = 0

function init(args)
  local seed = tonumber(os.getenv("WRK_SEED") or "1") + (thread_id or 0)
  math.randomseed(seed)
  local pct = tonumber(os.getenv("WRK_INVALID_PCT") or "0")
  pool_n = tonumber(os.getenv("WRK_POOL") or "2000")
  local list = airlines()
  local total = 0
  for _, a in ipairs(list) do total = total + a[2] end
  local headers = {["Content-Type"] = "application/json"}
  local bad_kind = 0
  for i = 1, pool_n do
    local k = math.random(1, 5)
    local flights = {}
    for j = 1, k do
      local a = pick(list, total)
      local tipo = (math.random() < a[3]) and "I" or "N"
      flights[j] = flight_json(a[1], tipo, math.random(1, 12))
    end
    if pct > 0 and math.random() * 100 < pct then
      local j = math.random(1, k)
      bad_kind = bad_kind % 3 + 1
      if bad_kind == 1 then
        flights[j] = flight_json("Aerolinea Inexistente", "N", 3)
      elseif bad_kind == 2 then
        flights[j] = flight_json(list[1][1], "X", 3)
      else
        flights[j] = flight_json(list[1][1], "N", 13)
      end
      invalid_in_pool = invalid_in_pool + 1
    end
    local body = '{"flights":[' .. table.concat(flights, ",") .. ']}'
    requests_pool[i] = wrk.format("POST", wrk.path, headers, body)
  end
end

function request()
  idx = idx % pool_n + 1
  return requests_pool[idx]
end

done = report.done("predict", {
  invalid_pct = tonumber(os.getenv("WRK_INVALID_PCT") or "0"),
})
