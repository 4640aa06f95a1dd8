-- POST /api/nodes/heartbeat for a fleet of NODES nodes (default 10000), each request from the next
-- node in turn, with drifting metrics. Set TOKEN to a fleet-wide node token.
--   TOKEN=hbnt_... NODES=10000 wrk -t2 -c64 -d30s --latency -s bench/heartbeat.lua http://127.0.0.1:4100/api/nodes/heartbeat
local token = os.getenv("TOKEN") or ""
local nodes = tonumber(os.getenv("NODES") or "10000")
local n = 0
local thread_id = 0

setup = function(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end

request = function()
  n = n + 1
  local node = ((n * 2 + thread_id) % nodes) + 1
  local cpu = (n * 7 + node) % 100
  local body = string.format(
    '{"node_id":"bench-%05d","cpu_percent":%d,"ram_percent":%d,"disk_percent":%d,"status":"ok"}',
    node, cpu, (cpu + 30) % 100, 40 + node % 50)
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end
