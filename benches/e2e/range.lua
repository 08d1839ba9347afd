-- wrk script: GETs a random LEN-byte range of an object of SIZE bytes.
-- Arguments (after `--`): SIZE LEN ALIGN [API_KEY]
--   ALIGN = 0: any byte offset (a viewer's seek; usually spans two 64 KiB blocks)
--   ALIGN = N > 0: offsets are multiples of N
local size, len, align
local headers = {}

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

function init(args)
  size = tonumber(args[1])
  len = tonumber(args[2])
  align = tonumber(args[3] or "0")
  if args[4] and args[4] ~= "" then
    headers["Authorization"] = "Bearer " .. args[4]
  end
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end

function request()
  local o
  if align > 0 then
    o = math.random(0, math.floor((size - len) / align)) * align
  else
    o = math.random(0, size - len)
  end
  headers["Range"] = "bytes=" .. o .. "-" .. (o + len - 1)
  return wrk.format("GET", nil, headers)
end
