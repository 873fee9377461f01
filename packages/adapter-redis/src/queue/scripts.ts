import { createHash } from 'node:crypto';
import { taggedKey } from '../keys.js';

/**
 * The queue's Lua scripts. Every write of the queue is one of these, so each state change is atomic
 * and, because settlements check ownership and publish checks its nonce, safe to run twice (ioredis
 * resends commands that were written when a connection died).
 *
 * Data model, per channel (all keys share the channel's hash tag, so one slot):
 * - `q:stream`  stream of ready tasks, consumer group `GROUP`; an entry is acked and deleted once settled.
 *   Fields: i id, d payload, and m = `a|r|t|p|u|n`: a attempt of its first delivery, r maxRetries,
 *   t timeout, p publishedAt (empty after a first publish: the entry id starts with that time),
 *   u id mode (p: pending dedupe, w: window dedupe, n: no dedupe), n publish nonce (last: it may
 *   hold `|`). Entries written with a, r, t, p, n, u as fields of their own are read too.
 * - `q:delayed` zset of delayed tasks and tasks waiting for a retry; score = due time (server clock, ms),
 *   member = cjson array [i, a, r, t, p, n, u, d].
 * - `q:dlq` hash id -> cjson array [i, attempts, r, t, p, n, u, d, error, failedAt], and `q:dlqi`, a zset
 *   id -> failedAt that orders listing.
 * - `q:id:<id>` the id's marker, value = the publish nonce: held while the task lives (pending dedupe),
 *   for the window (window dedupe), or briefly for resend protection (generated ids).
 *
 * Ownership: a delivery is (entry id, consumer name, delivery count). XAUTOCLAIM by anyone, including the
 * same consumer, bumps the count, so a delivery whose claim expired can no longer touch or settle.
 * Times come from the server's TIME so every process uses one clock.
 */

/** The consumer group every consumer of a channel joins. */
export const GROUP = 'cluster';

export type KeyRole = 'stream' | 'delayed' | 'dlq' | 'dlqIndex' | 'id';

export interface QueueScript {
  readonly name: string;
  /** What each KEYS[n] is; `id` repeats for every id argument of scripts taking several. */
  readonly keys: readonly KeyRole[];
  /** True when the script takes one `id` key per id argument after its fixed keys. */
  readonly variadicIds?: boolean;
  readonly source: string;
  readonly sha: string;
}

/** The channel's keys. */
export function channelKeys(keyPrefix: string, channel: string): Record<Exclude<KeyRole, 'id'>, string> {
  return {
    stream: taggedKey(keyPrefix, channel, 'q:stream'),
    delayed: taggedKey(keyPrefix, channel, 'q:delayed'),
    dlq: taggedKey(keyPrefix, channel, 'q:dlq'),
    dlqIndex: taggedKey(keyPrefix, channel, 'q:dlqi'),
  };
}

export function idKey(keyPrefix: string, channel: string, id: string): string {
  return idKeyPrefix(keyPrefix, channel) + id;
}

/** What every id key of `channel` starts with: `idKeyPrefix(...) + id` is that id's key. */
export function idKeyPrefix(keyPrefix: string, channel: string): string {
  return taggedKey(keyPrefix, channel, 'q:id:');
}

/** KEYS for `script` on `channel`; `ids` fill the `id` roles (one per id for variadic scripts). */
export function keysFor(
  script: QueueScript,
  keyPrefix: string,
  channel: string,
  ids: readonly string[] = [],
): string[] {
  const keys = channelKeys(keyPrefix, channel);
  const out: string[] = [];
  for (const role of script.keys) {
    if (role === 'id') out.push(idKey(keyPrefix, channel, ids[0] ?? ''));
    else out.push(keys[role]);
  }
  if (script.variadicIds) for (const id of ids) out.push(idKey(keyPrefix, channel, id));
  return out;
}

const PRELUDE = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The delivery is still this consumer's: same owner and same delivery count in the PEL.
local function owned(stream, group, consumer, entry, count)
  local ok, p = pcall(redis.call, 'XPENDING', stream, group, entry, entry, 1)
  if not ok or type(p) ~= 'table' or not p[1] then return false end
  return p[1][2] == consumer and tonumber(p[1][4]) == tonumber(count)
end
local function fields_of(stream, entry)
  local r = redis.call('XRANGE', stream, entry, entry)
  if not r[1] then return nil end
  local f, raw = {}, r[1][2]
  for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
  if f.m then
    f.a, f.r, f.t, f.p, f.u, f.n = string.match(f.m, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  end
  -- A first publish leaves p empty: its entry id is its publish time (server ms). Kept when re-added.
  if f.p == nil or f.p == '' then f.p = string.match(entry, '^%d+') end
  return f
end
local function s(v, default) if v == nil or v == false then return default end return tostring(v) end
-- Three fields per entry: every field costs each read (and the client's parser) a value of its own.
local function add(stream, f, attempt)
  local m = tostring(attempt) .. '|' .. s(f.r, '0') .. '|' .. s(f.t, '0') .. '|' .. s(f.p, '0') .. '|' ..
    s(f.u, 'n') .. '|' .. s(f.n, '')
  return redis.call('XADD', stream, '*', 'i', s(f.i, ''), 'm', m, 'd', s(f.d, ''))
end
local function member(f, attempt)
  return cjson.encode({s(f.i, ''), tostring(attempt), s(f.r, '0'), s(f.t, '0'), s(f.p, '0'), s(f.n, ''),
    s(f.u, 'n'), s(f.d, '')})
end
local function ensure_group(stream, group)
  if redis.call('EXISTS', stream) == 0 then redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM') end
end
-- Frees a pending-dedupe id, unless the marker already belongs to another task.
local function release_id(key, f)
  if f.u == 'p' and key and redis.call('GET', key) == f.n then redis.call('DEL', key) end
end
local function earliest(delayed)
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if first[2] then return tonumber(first[2]) end
  return -1
end
`;

function define(name: string, keys: readonly KeyRole[], body: string, variadicIds = false): QueueScript {
  const source = `${PRELUDE}\n${body}`;
  return {
    name,
    keys,
    ...(variadicIds ? { variadicIds } : {}),
    source,
    sha: createHash('sha1').update(source).digest('hex'),
  };
}

/** Values per task in PUBLISH's ARGV, per delivery in ACK's: scripts that settle many items at once. */
export const PUBLISH_ARGS_PER_TASK = 8;
export const ACK_ARGS_PER_ENTRY = 4;

/**
 * Publishes one or more tasks (a turn's publishes to one channel go in one call). KEYS: stream,
 * delayed, then one id key per task. ARGV: group, then per task: id, payload, maxRetries, timeout,
 * delay, mode (p|w|n), ttl ms (w, n), nonce. Returns per task {duplicate 0|1, due (0 when ready
 * now), now (0 when not delayed)}. A rerun with the same nonce is not a duplicate and enqueues
 * nothing: it is the same publish resent.
 */
export const PUBLISH = define(
  'publish',
  ['stream', 'delayed'],
  `
local out = {}
local grouped = false
for k = 0, math.floor((#ARGV - 1) / ${PUBLISH_ARGS_PER_TASK}) - 1 do
  local a = 1 + k * ${PUBLISH_ARGS_PER_TASK}
  local key = KEYS[3 + k]
  local id, payload, retries, timeout, delay, mode, ttl, nonce =
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], tonumber(ARGV[a + 5]), ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
  local current = redis.call('GET', key)
  if current then
    if current == nonce then out[#out + 1] = {0, 0, 0} else out[#out + 1] = {1, 0, 0} end
  else
    if mode == 'p' then redis.call('SET', key, nonce) else redis.call('SET', key, nonce, 'PX', ttl) end
    if not grouped then ensure_group(KEYS[1], ARGV[1]); grouped = true end
    local f = {i = id, r = retries, t = timeout, p = '', n = nonce, u = mode, d = payload}
    if delay > 0 then
      local now = now_ms()
      f.p = tostring(now)
      local due = now + delay
      redis.call('ZADD', KEYS[2], due, member(f, 1))
      out[#out + 1] = {0, math.ceil(due), now}
    else
      -- p stays empty: the entry id the server gives carries the publish time (one TIME call less).
      add(KEYS[1], f, 1)
      out[#out + 1] = {0, 0, 0}
    end
  end
end
return out
`,
  true,
);

/**
 * Acks one or more deliveries of one consumer (the acks of one turn go in one call). KEYS: stream,
 * then one id key per delivery. ARGV: group, consumer, then per delivery: entry, count, id mode,
 * nonce (its u and n fields as read: an entry never changes, so the ack need not read it again).
 * Returns per delivery 1 when acked, 0 when it is not ours.
 */
export const ACK = define(
  'ack',
  ['stream'],
  `
local out = {}
for k = 0, math.floor((#ARGV - 2) / ${ACK_ARGS_PER_ENTRY}) - 1 do
  local a = 2 + k * ${ACK_ARGS_PER_ENTRY}
  local entry = ARGV[a + 1]
  if owned(KEYS[1], ARGV[1], ARGV[2], entry, ARGV[a + 2]) then
    redis.call('XACK', KEYS[1], ARGV[1], entry)
    redis.call('XDEL', KEYS[1], entry)
    release_id(KEYS[2 + k], {u = ARGV[a + 3], n = ARGV[a + 4]})
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
`,
  true,
);

/**
 * ARGV: group, consumer, entry, count, delay ms. The next attempt is this delivery's + 1.
 * Returns {1, due (0 when ready now), now} or {0}.
 */
export const RETRY = define(
  'retry',
  ['stream', 'delayed'],
  `
if not owned(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return {0} end
local f = fields_of(KEYS[1], ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
if not f then return {0} end
local attempt = (tonumber(f.a) or 1) + tonumber(ARGV[4])
local delay = tonumber(ARGV[5])
local now = now_ms()
if delay > 0 then
  local due = now + delay
  redis.call('ZADD', KEYS[2], due, member(f, attempt))
  return {1, math.ceil(due), now}
end
add(KEYS[1], f, attempt)
return {1, 0, now}
`,
);

/** ARGV: group, consumer, entry, count, error. Returns 1 when dead-lettered, 0 when not ours. */
export const DEAD_LETTER = define(
  'deadLetter',
  ['stream', 'dlq', 'dlqIndex', 'id'],
  `
if not owned(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
local f = fields_of(KEYS[1], ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
if not f then return 0 end
local now = now_ms()
local attempts = (tonumber(f.a) or 1) + tonumber(ARGV[4]) - 1
local id = s(f.i, '')
redis.call('HSET', KEYS[2], id, cjson.encode({id, tostring(attempts), s(f.r, '0'), s(f.t, '0'), s(f.p, '0'),
  s(f.n, ''), s(f.u, 'n'), s(f.d, ''), ARGV[5], tostring(now)}))
redis.call('ZADD', KEYS[3], now, id)
release_id(KEYS[4], f)
return 1
`,
);

/** ARGV: group, consumer, entry, count. Resets the idle time without bumping the delivery count. */
export const TOUCH = define(
  'touch',
  ['stream'],
  `
if not owned(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
`,
);

/**
 * Hands an unsettled delivery back to the stream, for another consumer. ARGV: group, consumer, entry,
 * count, bump (1 when a handler may have run it, 0 when it never reached one).
 */
export const RELEASE = define(
  'release',
  ['stream'],
  `
if not owned(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
local f = fields_of(KEYS[1], ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
if not f then return 0 end
add(KEYS[1], f, (tonumber(f.a) or 1) + tonumber(ARGV[4]) - 1 + tonumber(ARGV[5]))
return 1
`,
);

/**
 * Claims up to COUNT deliveries idle for at least min-idle (expired claims, of any consumer) and returns
 * them with their new delivery counts. ARGV: group, consumer, minIdle, count, cursor.
 * Returns {next cursor, {{entry, count, fields}, ...}}.
 */
export const CLAIM = define(
  'claim',
  ['stream'],
  `
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[5], 'COUNT', ARGV[4])
local out = {}
for _, e in ipairs(r[2]) do
  if type(e) == 'table' and type(e[2]) == 'table' then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)[1]
    out[#out + 1] = {e[1], p and p[4] or 1, e[2]}
  elseif type(e) == 'table' and e[1] then
    -- Redis 6.2 reports a deleted entry in place; it can never be settled, so drop it from the PEL.
    redis.call('XACK', KEYS[1], ARGV[1], e[1])
  end
end
return {r[1], out}
`,
);

/**
 * Takes back this consumer's own orphans: entries in its PEL that it does not track, because the reply
 * that delivered them was lost (a connection cut mid-read, a timed-out claim). They never reached a
 * handler, so their delivery count is kept (XCLAIM JUSTID only resets the idle time).
 * ARGV: group, consumer, count, then `entry:count` of every delivery the consumer tracks.
 * Returns {{entry, count, fields}, ...}.
 */
export const RECOVER = define(
  'recover',
  ['stream'],
  `
local ok, pel = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 1000, ARGV[2])
if not ok or type(pel) ~= 'table' then return {} end
local tracked = {}
for i = 4, #ARGV do tracked[ARGV[i]] = true end
local out = {}
local limit = tonumber(ARGV[3])
for _, p in ipairs(pel) do
  if #out >= limit then break end
  if not tracked[p[1] .. ':' .. p[4]] then
    local r = redis.call('XRANGE', KEYS[1], p[1], p[1])
    if r[1] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, p[1], 'JUSTID')
      out[#out + 1] = {p[1], p[4], r[1][2]}
    else
      redis.call('XACK', KEYS[1], ARGV[1], p[1])
    end
  end
end
return out
`,
);

/**
 * Moves due delayed tasks into the stream. ARGV: group, limit.
 * Returns {moved, earliest remaining due or -1, now}.
 */
export const PROMOTE = define(
  'promote',
  ['stream', 'delayed'],
  `
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
if #due > 0 then ensure_group(KEYS[1], ARGV[1]) end
for _, m in ipairs(due) do
  local ok, v = pcall(cjson.decode, m)
  if ok and type(v) == 'table' then
    add(KEYS[1], {i = v[1], r = v[3], t = v[4], p = v[5], n = v[6], u = v[7], d = v[8]}, v[2] or '1')
  end
  redis.call('ZREM', KEYS[2], m)
end
return {#due, earliest(KEYS[2]), now}
`,
);

/** ARGV: group. Returns {ready, in flight, delayed, dead letters}. */
export const STATS = define(
  'stats',
  ['stream', 'delayed', 'dlq'],
  `
local len = redis.call('XLEN', KEYS[1])
local pel = 0
if len > 0 then
  local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1])
  if ok and type(p) == 'table' then pel = tonumber(p[1]) or 0 end
end
local ready = len - pel
if ready < 0 then ready = 0 end
return {ready, pel, redis.call('ZCARD', KEYS[2]), redis.call('HLEN', KEYS[3])}
`,
);

/** ARGV: stop index (-1 for all). Returns the records, oldest failure first. */
export const LIST_DEAD = define(
  'listDeadLetters',
  ['dlq', 'dlqIndex'],
  `
local ids = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(ids) do
  local r = redis.call('HGET', KEYS[1], id)
  if r then out[#out + 1] = r end
end
return out
`,
);

/**
 * Re-enqueues dead letters as fresh tasks (attempt 1). A pending-dedupe letter whose id is live again
 * stays put: replaying it would run that id twice. ARGV: group, nonce, ids...; KEYS: fixed, then one id
 * key per id. Returns how many were replayed.
 */
export const REPLAY = define(
  'replayDeadLetters',
  ['stream', 'dlq', 'dlqIndex'],
  `
ensure_group(KEYS[1], ARGV[1])
local now = now_ms()
local replayed = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local rec = redis.call('HGET', KEYS[2], id)
  if rec then
    local ok, v = pcall(cjson.decode, rec)
    if ok and type(v) == 'table' then
      local nonce = ARGV[2] .. ':' .. (i - 2)
      local free = true
      if v[7] == 'p' then free = redis.call('SET', KEYS[i + 1], nonce, 'NX') end
      if free then
        add(KEYS[1], {i = id, r = v[3], t = v[4], p = tostring(now), n = nonce, u = v[7], d = v[8]}, 1)
        redis.call('HDEL', KEYS[2], id)
        redis.call('ZREM', KEYS[3], id)
        replayed = replayed + 1
      end
    else
      redis.call('HDEL', KEYS[2], id)
      redis.call('ZREM', KEYS[3], id)
    end
  end
end
return replayed
`,
  true,
);

/** ARGV: ids... (none: purge all). Returns how many were purged. */
export const PURGE = define(
  'purgeDeadLetters',
  ['dlq', 'dlqIndex'],
  `
if #ARGV == 0 then
  local count = redis.call('HLEN', KEYS[1])
  redis.call('DEL', KEYS[1], KEYS[2])
  return count
end
local purged = 0
for _, id in ipairs(ARGV) do
  purged = purged + redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
return purged
`,
);

/** Removes this consumer from the group when it has nothing pending. ARGV: group, consumer. */
export const FORGET_CONSUMER = define(
  'forgetConsumer',
  ['stream'],
  `
local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if not ok or type(p) ~= 'table' or p[1] then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
`,
);

/**
 * Removes consumers of dead processes: nothing pending and idle for at least min-idle ms. A live consumer
 * that was removed is recreated by its next read. ARGV: group, minIdle.
 */
export const REAP_CONSUMERS = define(
  'reapConsumers',
  ['stream'],
  `
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok or type(consumers) ~= 'table' then return 0 end
local reaped = 0
for _, c in ipairs(consumers) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if tonumber(info.pending) == 0 and tonumber(info.idle) >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info.name)
    reaped = reaped + 1
  end
end
return reaped
`,
);

export const SCRIPTS: readonly QueueScript[] = [
  PUBLISH,
  ACK,
  RETRY,
  DEAD_LETTER,
  TOUCH,
  RELEASE,
  CLAIM,
  RECOVER,
  PROMOTE,
  STATS,
  LIST_DEAD,
  REPLAY,
  PURGE,
  FORGET_CONSUMER,
  REAP_CONSUMERS,
];
