-- One budget account, atomic. Amounts are micro-dollars, times milliseconds.
-- KEYS[1]: the account's hash: st (period start), sp (spent), rs (reserved),
--          and r:<id> (the amount of each reservation in flight).
-- KEYS[2]: the account's leases, a sorted set: reservation id -> expiry.
-- ARGV[1]: now ("" = Redis TIME), ARGV[2]: op ("reserve" | "settle" | "read"),
-- ARGV[3]: limit, ARGV[4]: period length (0: never rolls), then
--   reserve: ARGV[5] amount, ARGV[6] id, ARGV[7] lease;
--   settle:  ARGV[5] actual cost, ARGV[6] id.
-- Answers {granted (1 | 0), spent, reserved} as they are after the op (a
-- refusal: as they were).
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local op, limit, period = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local h, leases = KEYS[1], KEYS[2]

-- Numbers as exact integer text (Lua's default formatting keeps 14 digits).
local function n(v) return string.format('%.0f', v) end

local f = redis.call('HMGET', h, 'st', 'sp', 'rs')
local started, spent, reserved = tonumber(f[1]) or now, tonumber(f[2]) or 0, tonumber(f[3]) or 0

-- Reservations whose holder never settled them (it died, or lost Redis)
-- give their amount back when their lease ends.
local dead = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 256)
for _, id in ipairs(dead) do
  local a = tonumber(redis.call('HGET', h, 'r:' .. id))
  if a then
    reserved = math.max(0, reserved - a)
    redis.call('HDEL', h, 'r:' .. id)
  end
  redis.call('ZREM', leases, id)
end

-- A period over rolls at its next use, on this clock.
if period > 0 and now - started >= period then
  started = now
  spent = 0
end

local granted = 1
if op == 'reserve' then
  local amount, id, lease = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
  if spent + reserved + amount > limit then
    granted = 0
  else
    reserved = reserved + amount
    redis.call('HSET', h, 'r:' .. id, n(amount))
    redis.call('ZADD', leases, n(now + lease), id)
  end
elseif op == 'settle' then
  local actual, id = tonumber(ARGV[5]), ARGV[6]
  local a = tonumber(redis.call('HGET', h, 'r:' .. id))
  -- A lease already over gave its amount back: only the cost counts.
  if a then
    reserved = math.max(0, reserved - a)
    redis.call('HDEL', h, 'r:' .. id)
    redis.call('ZREM', leases, id)
  end
  spent = spent + actual
end

if granted == 1 and op ~= 'read' or #dead > 0 then
  redis.call('HSET', h, 'st', n(started), 'sp', n(spent), 'rs', n(reserved))
  if period > 0 then
    -- Gone an hour after its period ends (every lease is over by then).
    local ttl = started + period - now + 3600000
    redis.call('PEXPIRE', h, n(ttl))
    redis.call('PEXPIRE', leases, n(ttl))
  end
end
return {granted, n(spent), n(reserved)}
