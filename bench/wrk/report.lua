-- Shared by predict.lua and health.lua (loaded with dofile from the same folder).
--
-- wrk runs one Lua state per thread plus the main one: a response() callback
-- counts statuses in its own thread's globals, setup() (main state) keeps every
-- thread, and done() (main state) gathers the per-thread counters with
-- thread:get(), which copies tables across states. wrk's own summary only knows
-- "Non-2xx or 3xx" (its errors.status counts status > 399); this counts every
-- response by status, so 3xx and 1xx are not taken for success either.
--
-- Set WRK_NO_STATUS_COUNT=1 to skip the per-response callback (it costs wrk some
-- throughput against a very fast server); done() then falls back to wrk's own
-- errors.status count.

local report = {}

local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
  table.insert(threads, thread)
end

-- Per-thread counters (globals of the thread's own state).
status_counts = {}
responses = 0
ok_2xx = 0

if os.getenv("WRK_NO_STATUS_COUNT") ~= "1" then
  function response(status, headers, body)
    responses = responses + 1
    if status >= 200 and status < 300 then
      ok_2xx = ok_2xx + 1
    else
      local k = tostring(status)
      status_counts[k] = (status_counts[k] or 0) + 1
    end
  end
end

local function json_string(s)
  return '"' .. tostring(s):gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function json_table(t)
  local parts, keys = {}, {}
  for k in pairs(t) do table.insert(keys, k) end
  table.sort(keys)
  for _, k in ipairs(keys) do
    table.insert(parts, json_string(k) .. ":" .. string.format("%d", t[k]))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function report.done(name, extra)
  return function(summary, latency, requests)
    local counted, ok, by_status = 0, 0, {}
    for _, t in ipairs(threads) do
      counted = counted + (t:get("responses") or 0)
      ok = ok + (t:get("ok_2xx") or 0)
      for k, v in pairs(t:get("status_counts") or {}) do
        by_status[k] = (by_status[k] or 0) + v
      end
    end
    local counting = os.getenv("WRK_NO_STATUS_COUNT") ~= "1"
    local non_2xx
    if counting then
      non_2xx = counted - ok
    else
      non_2xx = summary.errors.status -- wrk's own: status > 399 only
    end
    local secs = summary.duration / 1e6
    local rps = summary.requests / secs
    local ms = function(us) return us / 1000.0 end
    local e = summary.errors
    local socket_errors = e.connect + e.read + e.write + e.timeout
    io.write(string.format("---- %s ----\n", name))
    io.write(string.format("requests: %d in %.2fs = %.1f requests/s\n", summary.requests, secs, rps))
    io.write(string.format("latency: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, max %.3f ms\n",
      ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)), ms(latency.max)))
    io.write(string.format("non-2xx responses: %d%s\n", non_2xx,
      counting and (" (by status: " .. json_table(by_status) .. ")") or " (wrk's status > 399 count)"))
    io.write(string.format("socket errors: connect %d, read %d, write %d, timeout %d\n",
      e.connect, e.read, e.write, e.timeout))
    if counting and counted ~= summary.requests then
      io.write(string.format("note: %d responses counted, wrk reports %d requests\n", counted, summary.requests))
    end
    local fields = {
      string.format('"script":%s', json_string(name)),
      string.format('"requests":%d', summary.requests),
      string.format('"duration_s":%.3f', secs),
      string.format('"rps":%.1f', rps),
      string.format('"p50_ms":%.3f', ms(latency:percentile(50))),
      string.format('"p90_ms":%.3f', ms(latency:percentile(90))),
      string.format('"p99_ms":%.3f', ms(latency:percentile(99))),
      string.format('"max_ms":%.3f', ms(latency.max)),
      string.format('"non_2xx":%d', non_2xx),
      string.format('"status_counted":%s', tostring(counting)),
      string.format('"by_status":%s', json_table(by_status)),
      string.format('"socket_errors":%d', socket_errors),
    }
    for k, v in pairs(extra or {}) do
      table.insert(fields, string.format("%s:%s", json_string(k), tostring(v)))
    end
    io.write("JSON: {" .. table.concat(fields, ",") .. "}\n")
  end
end

return report
