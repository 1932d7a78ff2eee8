-- wrk script: POST /api/v1/outcomes, one per match the seed made (MATCHES names its
-- "match_id address" file); each match is reported once, so the file must hold more matches
-- than the run sends (load.sh makes enough).
local matches = {}
local i = 0
local step = 1
function init(args)
  for line in io.lines(os.getenv("MATCHES") or "/tmp/poolhub-matches.txt") do
    local id, a = line:match("(%S+) (%S+)")
    matches[#matches + 1] = { id, a }
  end
end
function request()
  i = i + 1
  local m = matches[(i - 1) % #matches + 1]
  return wrk.format("POST", "/api/v1/outcomes", { ["Content-Type"] = "application/json" },
    '{"match_id":"' .. m[1] .. '","address":"' .. m[2] .. '","success":true,"latency_ms":850}')
end
