-- wrk script: POST /api/v1/miners/register with a new address each time (durable writes).
-- Each thread draws a random salt when it starts, so a second run (or a warm-up) registers
-- new miners rather than re-registering the first run's.
local counter = 0
local salt = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end
function init(args)
  math.randomseed(os.time() * 1000 + math.floor(os.clock() * 1e6) + (thread_no or 0))
  salt = math.random(0, 0x7fffffff) * 16 + (thread_no or 0)
end
function request()
  counter = counter + 1
  local addr = string.format("0x%016x%024x", salt, counter)
  return wrk.format("POST", "/api/v1/miners/register", { ["Content-Type"] = "application/json" },
    '{"address":"' .. addr .. '","endpoint":"http://m.example.com:8080","capabilities":{"models":["llama3.2"],"gpu_memory":16384,"max_concurrent_jobs":4},"stake":1}')
end
