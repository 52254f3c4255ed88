-- wrk script for scripts/bench: every request is a distinct attributed install
-- (unique device ids), so the gateway stores each one instead of answering
-- "duplicate". Environment: PBG_PARTNER (kochava|tune), PBG_KEYS_FILE (one API key
-- per line; requests rotate over them), PBG_RUN (makes ids unique across runs).
local partner = os.getenv("PBG_PARTNER") or "kochava"
local run = os.getenv("PBG_RUN") or "0"
local threads = {}
local next_id = 1

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  keys = {}
  for line in io.lines(os.getenv("PBG_KEYS_FILE")) do
    if #line > 0 then keys[#keys + 1] = line end
  end
  n = 0
  non2xx = 0
end

function request()
  n = n + 1
  local key = keys[(n % #keys) + 1]
  local idfa = string.format("%08d-%04d-4000-8000-%012d", tonumber(run) % 100000000, tid, n)
  if partner == "tune" then
    local path = string.format(
      "/v1/postbacks/tune?api_key=%s&advertiser_sub_publisher=Vungle%%20Inc.&advertiser_sub_campaign=Summer+Sale+%%26+Deals"
      .. "&advertiser_sub_adgroup=%%7Badvertiser_sub_adgroup%%7D&advertiser_sub_ad=ad_%d&publisher_id=11902"
      .. "&ios_ifa=%s&mat_id=mat-%s-%d-%d&event_name=Install&conversion_timestamp=1714665600&retry_attempts=0",
      key, n % 50, idfa, run, tid, n)
    return wrk.format("GET", path)
  end
  local body = string.format(
    '{"event_name":"_install","network_name":"Liftoff","campaign_name":"KO_iOS_US_Launch","site_id":"pub_88412",'
    .. '"creative_id":"cr_%d","kochava_device_id":"KD%s-%d-%d","idfa":"%s","device_ua":"Mozilla/5.0 (iPhone)"}',
    n % 50, run, tid, n, idfa)
  return wrk.format("POST", "/v1/postbacks/kochava",
    { ["X-Api-Key"] = key, ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  if status ~= 200 then non2xx = non2xx + 1 end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (t:get("non2xx") or 0) end
  io.write(string.format("NON200 %d\n", bad))
end
