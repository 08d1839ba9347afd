-- wrk script: GETs one of COUNT small objects named PREFIX0 .. PREFIX(COUNT-1), at random.
-- Arguments (after `--`): PREFIX COUNT [API_KEY]
local prefix, count
local headers = {}

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

function init(args)
  prefix = args[1]
  count = tonumber(args[2])
  if args[3] and args[3] ~= "" then
    headers["Authorization"] = "Bearer " .. args[3]
  end
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end

function request()
  return wrk.format("GET", prefix .. math.random(0, count - 1), headers)
end
