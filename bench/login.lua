-- POST /api/auth/login from a different client address per request, so the per-IP login limit
-- (10/min) does not cut the run short; needs HYPRBOX_TRUST_PROXY=true on the server.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email":"ops@example.com","password":"correcthorsebattery"}'
local n = 0
request = function()
  n = n + 1
  local ip = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format(nil, nil, { ["Content-Type"] = "application/json", ["X-Forwarded-For"] = ip })
end
