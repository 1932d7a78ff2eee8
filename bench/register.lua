-- wrk script: POST /api/v1/miners/register with a new address each time (durable writes).
local counter = 0
local tid = 0
function setup(thread)
  tid = tid + 1
  thread:set("tid", tid)
end
function request()
  counter = counter + 1
  local addr = string.format("0x%08x%032x", tid, counter)
  return wrk.format("POST", "/api/v1/miners/register", { ["Content-Type"] = "application/json" },
    '{"address":"' .. addr .. '","endpoint":"http://m.example.com:8080","capabilities":{"models":["llama3.2"],"gpu_memory":16384,"max_concurrent_jobs":4},"stake":1}')
end
