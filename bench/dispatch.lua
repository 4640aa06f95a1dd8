-- POST /api/dashboard/ai-workers/dispatch in a burst: each of wrk's threads stops after PER_THREAD
-- answers (default 5000, so -t2 sends 10,000), and the non-2xx answers are counted.
--   COOKIE="hb_token=..." wrk -t2 -c64 -d20s -s bench/dispatch.lua http://127.0.0.1:4100/api/dashboard/ai-workers/dispatch
local per_thread = tonumber(os.getenv("PER_THREAD") or "5000")
local cookie = os.getenv("COOKIE") or ""
local threads = {}
answered = 0
failed = 0

setup = function(thread)
  table.insert(threads, thread)
end

request = function()
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json", ["Cookie"] = cookie },
    '{"action":"Summarise the incident report"}')
end

response = function(status)
  answered = answered + 1
  if status ~= 200 then
    failed = failed + 1
  end
  if answered >= per_thread then
    wrk.thread:stop()
  end
end

done = function()
  local total, bad = 0, 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("answered")
    bad = bad + thread:get("failed")
  end
  io.write(string.format("dispatched %d, failed %d\n", total, bad))
end
