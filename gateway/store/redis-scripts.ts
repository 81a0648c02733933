// Lua scripts for the Redis store: the token-bucket and lease arithmetic of gateway/limits.ts,
// run atomically inside Redis so every gateway instance sees one set of counters. Time comes
// from Redis (TIME), not from the instances, so their clocks need not agree.
//
// All keys of one call share the tenant's hash tag `{<tenant>}` (Redis Cluster friendly).

const PRELUDE = `
local W = 60000
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local function level(key, cap)
  local v = redis.call('HMGET', key, 't', 'ts')
  if not v[1] then return cap end
  local elapsed = now - tonumber(v[2])
  if elapsed < 0 then elapsed = 0 end
  local lv = tonumber(v[1]) + elapsed * cap / W
  if lv > cap then lv = cap end
  return lv
end
local function store(key, lv, cap)
  redis.call('HSET', key, 't', tostring(lv), 'ts', tostring(now))
  -- once full again the bucket is the same as an absent key
  redis.call('PEXPIRE', key, math.ceil((cap - lv) * W / cap) + 1000)
end
local function wait(lv, need, cap)
  if lv >= need then return 0 end
  return math.ceil((need - lv) * W / cap)
end
`;

/**
 * KEYS: per scope i (3 each): rpm bucket, tpm bucket, lease zset; then the tenant's set of revoked
 * key ids.
 * ARGV: n, cost, leaseId ('' = none), leaseTtlMs, then per scope: rpm, tpm, concurrent (0 = unlimited),
 * then the API key id ('' = none: a JWT).
 * Returns {0, 'revoked', 0, '0', '0'} for a revoked key, {0, reason, scopeIndex, retryAfterMs, limit} or
 *         {1, rpmLimit, rpmLevel, tpmLimit, tpmLevel} ('' where no such limit) for the tightest scope.
 */
export const ACQUIRE = `${PRELUDE}
local n = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local lease = ARGV[3]
local ttl = tonumber(ARGV[4])
local kid = ARGV[5 + n * 3]
if kid and kid ~= '' and KEYS[n * 3 + 1] and redis.call('SISMEMBER', KEYS[n * 3 + 1], kid) == 1 then
  return {0, 'revoked', 0, '0', '0'}
end
local rl, tl = {}, {}
for i = 1, n do
  local a = 4 + (i - 1) * 3
  local k = (i - 1) * 3
  local rpm, tpm, conc = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  if rpm > 0 then
    rl[i] = level(KEYS[k + 1], rpm)
    if rl[i] < 1 then return {0, 'rpm', i, tostring(wait(rl[i], 1, rpm)), tostring(rpm)} end
  end
  if tpm > 0 then
    tl[i] = level(KEYS[k + 2], tpm)
    local need = math.min(cost, tpm)
    if cost > 0 and tl[i] < need then return {0, 'tpm', i, tostring(wait(tl[i], need, tpm)), tostring(tpm)} end
  end
  if conc > 0 and lease ~= '' then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 3], '-inf', now)
    if redis.call('ZCARD', KEYS[k + 3]) >= conc then return {0, 'concurrency', i, '1000', tostring(conc)} end
  end
end
local br, bt
for i = 1, n do
  local a = 4 + (i - 1) * 3
  local k = (i - 1) * 3
  local rpm, tpm, conc = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  if rl[i] then
    local after = rl[i] - 1
    store(KEYS[k + 1], after, rpm)
    if br == nil or after < br[2] then br = {rpm, after} end
  end
  if tl[i] then
    local after = tl[i] - cost
    store(KEYS[k + 2], after, tpm)
    if bt == nil or after < bt[2] then bt = {tpm, after} end
  end
  if conc > 0 and lease ~= '' then
    redis.call('ZADD', KEYS[k + 3], now + ttl, lease)
    redis.call('PEXPIRE', KEYS[k + 3], ttl + W)
  end
end
return {1, br and tostring(br[1]) or '', br and tostring(br[2]) or '', bt and tostring(bt[1]) or '', bt and tostring(bt[2]) or ''}
`;

/**
 * KEYS: per scope i (2 each): tpm bucket, lease zset; then the usage hash (totals) and the
 * usage hash of the day.
 * ARGV: n, refund, leaseId, dayTtlSec, keyId ('' = none), promptTokens, completionTokens,
 *       then per scope: tpm (0 = unlimited).
 */
export const SETTLE = `${PRELUDE}
local n = tonumber(ARGV[1])
local refund = tonumber(ARGV[2])
local lease = ARGV[3]
local dayTtl = tonumber(ARGV[4])
local keyId = ARGV[5]
local p, c = tonumber(ARGV[6]), tonumber(ARGV[7])
for i = 1, n do
  local tpm = tonumber(ARGV[7 + i])
  local k = (i - 1) * 2
  if tpm > 0 and refund ~= 0 then
    local lv = level(KEYS[k + 1], tpm) + refund
    if lv > tpm then lv = tpm end
    store(KEYS[k + 1], lv, tpm)
  end
  if lease ~= '' then redis.call('ZREM', KEYS[k + 2], lease) end
end
local total, day = KEYS[2 * n + 1], KEYS[2 * n + 2]
for _, u in ipairs({total, day}) do
  redis.call('HINCRBY', u, 'requests', 1)
  redis.call('HINCRBY', u, 'prompt_tokens', p)
  redis.call('HINCRBY', u, 'completion_tokens', c)
end
if keyId ~= '' then
  redis.call('HINCRBY', total, 'k:' .. keyId .. ':requests', 1)
  redis.call('HINCRBY', total, 'k:' .. keyId .. ':prompt_tokens', p)
  redis.call('HINCRBY', total, 'k:' .. keyId .. ':completion_tokens', c)
end
redis.call('EXPIRE', day, dayTtl)
return 1
`;

/** KEYS: lease zsets. ARGV: leaseId, ttlMs. Extends the lease where it still exists. */
export const RENEW = `${PRELUDE}
for i = 1, #KEYS do
  if redis.call('ZSCORE', KEYS[i], ARGV[1]) then
    redis.call('ZADD', KEYS[i], now + tonumber(ARGV[2]), ARGV[1])
    redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2]) + W)
  end
end
return 1
`;
