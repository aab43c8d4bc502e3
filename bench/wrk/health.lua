-- wrk -t1 -c64 -d10s -s bench/wrk/health.lua http://127.0.0.1:8080/health
-- GET /health; prints requests/s, p50/p99 latency and non-2xx responses.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(dir .. "report.lua")

wrk.method = "GET"
done = report.done("health")
