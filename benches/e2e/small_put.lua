-- wrk script: PUTs new SIZE-byte objects under distinct keys, each with distinct
-- content (so the nodes' content-addressed dedup never short-cuts a write).
-- Arguments (after `--`): PREFIX SIZE TAG [API_KEY]
--   keys are PREFIX TAG-THREAD-N
local prefix, size, tag, pad
local headers = {}
local n = 0

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

function init(args)
  prefix = args[1]
  size = tonumber(args[2])
  tag = args[3]
  if args[4] and args[4] ~= "" then
    headers["Authorization"] = "Bearer " .. args[4]
  end
  headers["Content-Type"] = "application/octet-stream"
  pad = string.rep("k", size)
end

function request()
  n = n + 1
  local name = tag .. "-" .. tid .. "-" .. n
  local body = name .. "\n" .. pad:sub(#name + 2)
  return wrk.format("PUT", prefix .. name, headers, body)
end
