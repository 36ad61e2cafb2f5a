-- llm-tower's weighted GCRA, the in-memory store's algorithm, atomic in Redis.
-- KEYS[1]: the key's hash. Times are microseconds.
-- ARGV[1]: now ("" = Redis TIME), ARGV[2]: idle ms kept after recovery,
-- ARGV[3]: op ("reserve" | "adjust"), then the op's arguments.
-- Hash fields: t0..t3 theoretical arrival times of RPM, RPD, TPM, interval;
-- bu blocked until; pu, pi, pt pacing until, interval, arrival time; q queued;
-- a, r, w allowed, rejected, waited.
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local idle = tonumber(ARGV[2])
local op = ARGV[3]
local key = KEYS[1]
local f = redis.call('HMGET', key, 't0', 't1', 't2', 't3', 'bu', 'pu', 'pi', 'pt', 'q')
local tat = {tonumber(f[1]) or 0, tonumber(f[2]) or 0, tonumber(f[3]) or 0, tonumber(f[4]) or 0}
local bu, pu, pi, pt = tonumber(f[5]) or 0, tonumber(f[6]) or 0, tonumber(f[7]) or 0, tonumber(f[8]) or 0
local q = tonumber(f[9]) or 0

-- Numbers as exact integer text (Lua's default formatting keeps 14 digits).
local function n(v) return string.format('%.0f', v) end

local function expire()
  local horizon = math.max(tat[1], tat[2], tat[3], tat[4], bu, pu, pt) - now
  if horizon < 0 then horizon = 0 end
  redis.call('PEXPIRE', key, n(math.floor(horizon / 1000) + idle + 1))
end

local function give_back(i, cost)
  if cost > 0 then
    local t = tat[i]
    tat[i] = math.max(t - cost, math.min(now, t))
    redis.call('HSET', key, 't' .. (i - 1), n(tat[i]))
  end
end

if op == 'reserve' then
  -- ARGV[4]: max wait (-1: none), ARGV[5]: max queue, then cost and
  -- capacity of RPM, RPD, TPM, interval (cost 0: not limited).
  local maxw, maxq = tonumber(ARGV[4]), tonumber(ARGV[5])
  local wait, by = 0, 0
  local nxt = {}
  -- The memory store's order: RPM, TPM, RPD, interval (ties go to the first).
  for _, i in ipairs({1, 3, 2, 4}) do
    local cost, cap = tonumber(ARGV[4 + 2 * i]), tonumber(ARGV[5 + 2 * i])
    if cost > 0 then
      local new = math.max(tat[i], now) + cost
      local w = new - (now + cap)
      if w > wait then wait = w; by = i - 1 end
      nxt[i] = new
    end
  end
  local pace_next = nil
  if bu > now and bu - now > wait then wait = bu - now; by = 4 end
  if pu > now and pi > 0 then
    local start = math.max(pt, now)
    pace_next = start + pi
    if start - now > wait then wait = start - now; by = 4 end
  end
  local granted
  if wait <= 0 then granted = 0
  elseif maxw >= 0 and wait <= maxw and q < maxq then granted = wait
  else granted = -1 end
  if granted < 0 then
    redis.call('HINCRBY', key, 'r', 1)
    expire()
    return {0, wait, by, 0, 0, now}
  end
  for i, v in pairs(nxt) do
    tat[i] = v
    redis.call('HSET', key, 't' .. (i - 1), n(v))
  end
  if pace_next then pt = pace_next; redis.call('HSET', key, 'pt', n(pt)) end
  redis.call('HINCRBY', key, 'a', 1)
  if granted > 0 then
    redis.call('HINCRBY', key, 'q', 1)
    redis.call('HINCRBY', key, 'w', 1)
  end
  expire()
  return {1, granted, by, tat[1], tat[3], now}
end

-- adjust: ARGV[4] kind, then its arguments.
local kind = ARGV[4]
if kind == 'charge' then
  tat[3] = math.max(tat[3], now) + tonumber(ARGV[5])
  redis.call('HSET', key, 't2', n(tat[3]))
elseif kind == 'refund' then
  give_back(3, tonumber(ARGV[5]))
elseif kind == 'cancel' then
  -- ARGV[5..8]: the costs of RPM, RPD, TPM, interval; ARGV[9]: was queued.
  for i = 1, 4 do give_back(i, tonumber(ARGV[4 + i])) end
  if ARGV[9] == '1' and q > 0 then redis.call('HINCRBY', key, 'q', -1) end
  local a = tonumber(redis.call('HGET', key, 'a')) or 0
  if a > 0 then redis.call('HINCRBY', key, 'a', -1) end
elseif kind == 'dequeue' then
  if q > 0 then redis.call('HINCRBY', key, 'q', -1) end
elseif kind == 'hold' then
  bu = math.max(bu, now + tonumber(ARGV[5]))
  redis.call('HSET', key, 'bu', n(bu))
elseif kind == 'pace' then
  pi = tonumber(ARGV[5])
  pu = now + tonumber(ARGV[6])
  redis.call('HSET', key, 'pi', n(pi), 'pu', n(pu))
end
expire()
return 1
