-- wrk script: POST /api/v1/miners/{address}/status round-robin over the seeded miners.
-- TOKENS names the "address token" file written by examples/seed.rs.
local miners = {}
local i = 0
function init(args)
  for line in io.lines(os.getenv("TOKENS") or "/tmp/poolhub-tokens.txt") do
    local a, t = line:match("(%S+) (%S+)")
    miners[#miners + 1] = { a, t }
  end
  i = math.random(#miners)
end
function request()
  i = i % #miners + 1
  local m = miners[i]
  return wrk.format("POST", "/api/v1/miners/" .. m[1] .. "/status",
    { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. m[2] },
    '{"available":true,"current_load":1,"gpu_utilization":0.6,"temperature":61}')
end
