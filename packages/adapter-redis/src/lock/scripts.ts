import { createHash } from 'node:crypto';
import type { RedisClient } from '../connection.js';
import { taggedKey } from '../keys.js';

/**
 * The keys of one lock name. All carry the same `{name}` hash tag, so every script below touches a
 * single Redis Cluster slot.
 *
 * - `lock`: string `<token>:<owner>` with a PX lease; absent when free.
 * - `fence`: the fencing counter (INCR); never expires, never goes backwards (with AOF persistence).
 * - `waiters`: ZSET member → arrival number: the FIFO line (head = lowest score). A member is
 *   `<adapter id>/<ttl>/<owner>`: whom to wake, with what lease.
 * - `alive`: ZSET member → liveness deadline (server ms), refreshed by each waiter's polls, so a
 *   waiter whose process died drops out of the line instead of blocking it.
 */
export interface LockKeys {
  readonly lock: string;
  readonly fence: string;
  readonly waiters: string;
  readonly alive: string;
  /** [lock, fence, waiters, alive]: the KEYS of most scripts, built once per name. */
  readonly all: readonly string[];
}

export function lockKeys(keyPrefix: string, name: string): LockKeys {
  const lock = taggedKey(keyPrefix, name, 'lock');
  const fence = taggedKey(keyPrefix, name, 'fence');
  const waiters = taggedKey(keyPrefix, name, 'waiters');
  const alive = taggedKey(keyPrefix, name, 'alive');
  return { lock, fence, waiters, alive, all: [lock, fence, waiters, alive] };
}

/**
 * Prefix of the adapters' wake channels: a hand-over is published on `<prefix><adapter id>` to the
 * one adapter whose waiter got the key, as `<token>:<server ms>:<owner>`.
 */
export function wakeChannelPrefix(keyPrefix: string): string {
  return `${keyPrefix}:lock-wake:`;
}

export interface LockScript {
  readonly name: string;
  readonly lua: string;
  readonly sha: string;
  /** Which of the name's keys the script receives as KEYS, in order. */
  readonly keys: readonly KeyRole[];
  /** `keys` is all four, in `LockKeys.all` order: the prebuilt list is passed as is. */
  readonly allKeys: boolean;
}

type KeyRole = 'lock' | 'fence' | 'waiters' | 'alive';

/** Defined ahead of the common case's fast path, which needs it; COMMON (for lines) comes after it. */
const NEXT_TOKEN = `
-- The next token: above the counter and above the caller's floor (the highest token it saw, which a
-- counter lost in a restart without persistence would repeat). Returns token, 1 if it had to be raised.
local function next_token(fence, floor)
  local token = redis.call('INCR', fence)
  local least = tonumber(floor) + 1
  if token >= least then return token, 0 end
  redis.call('SET', fence, least)
  return least, 1
end
`;

const COMMON = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The owner and token of a lock value '<token>:<owner>' (owners may contain ':', tokens do not).
local function split(value)
  local sep = string.find(value, ':', 1, true)
  if not sep then return value, nil end
  return string.sub(value, sep + 1), tonumber(string.sub(value, 1, sep - 1))
end
-- Drops waiters whose liveness deadline has passed: their process died or stopped polling.
local function purge(waiters, alive, now)
  local dead = redis.call('ZRANGEBYSCORE', alive, '-inf', now, 'LIMIT', 0, 100)
  if #dead > 0 then
    redis.call('ZREM', alive, unpack(dead))
    redis.call('ZREM', waiters, unpack(dead))
  end
end
-- The first live waiter, or nil; drops dead waiters first (only when there is a line at all).
-- EXISTS first: it costs a third of a ZRANGE, and most grants and releases find no line.
local function head(waiters, alive)
  if redis.call('EXISTS', waiters) == 0 then return nil end
  local now = now_ms()
  purge(waiters, alive, now)
  while true do
    local first = redis.call('ZRANGE', waiters, 0, 0)[1]
    if not first then return nil end
    local deadline = redis.call('ZSCORE', alive, first)
    if deadline and tonumber(deadline) > now then return first end
    redis.call('ZREM', waiters, first)
    redis.call('ZREM', alive, first)
  end
end
-- Hands a free key to the first live waiter and tells its adapter. Returns 1 if the counter was raised.
local function hand_over(lock, fence, waiters, alive, floor, channels)
  local first = head(waiters, alive)
  if not first then return 0 end
  local now = now_ms()
  local s1 = string.find(first, '/', 1, true)
  local s2 = s1 and string.find(first, '/', s1 + 1, true)
  redis.call('ZREM', waiters, first)
  redis.call('ZREM', alive, first)
  local ttl = s2 and tonumber(string.sub(first, s1 + 1, s2 - 1))
  if not ttl or ttl < 1 then return 0 end
  ttl = math.floor(ttl)
  local owner = string.sub(first, s2 + 1)
  local token, raised = next_token(fence, floor)
  redis.call('SET', lock, token .. ':' .. owner, 'PX', ttl)
  redis.call('PUBLISH', channels .. string.sub(first, 1, s1 - 1), token .. ':' .. now .. ':' .. owner)
  return raised
end
`;

/**
 * KEYS lock, fence, waiters, alive. ARGV owner, ttl, join ('1': join or stay in line; '0': one
 * attempt), waiter liveness ms, floor (highest token this process saw for the key), member.
 * Returns the token when granted (a bare integer: the common reply is the cheapest to send and
 * parse), {1, token, 1} when granted with the fence counter lifted to the floor (it had gone
 * backwards), else {0, pttl of the holder (0 when free), 1 if the caller heads the line, and when
 * joining: server ms, the fence counter (every hand-over so far has a token at most this)}.
 * Granted only when the key is free and nobody is ahead in line; with nobody in line, the attempt
 * spends a token even when the key is held.
 * Idempotent per owner: a grant whose reply or hand-over message was lost is found again (and its
 * lease restarted) by the next attempt of the same owner.
 */
const ACQUIRE = `${NEXT_TOKEN}
local owner, ttl, member = ARGV[1], ARGV[2], ARGV[6]
-- The common case first, before the helpers for lines are defined (that costs on every run): nobody
-- in line, so the key goes to the caller if it is free. The token is spent even when it is held: a
-- gap in the tokens, which need only increase.
if redis.call('EXISTS', KEYS[3]) == 0 then
  local token, raised = next_token(KEYS[2], ARGV[5])
  if redis.call('SET', KEYS[1], token .. ':' .. owner, 'NX', 'PX', ttl) then
    if raised == 1 then return {1, token, 1} end
    return token
  end
end
${COMMON}
local current = redis.call('GET', KEYS[1])
if current then
  local holder, token = split(current)
  if holder == owner and token then
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('ZREM', KEYS[3], member)
    redis.call('ZREM', KEYS[4], member)
    return token
  end
else
  local first = head(KEYS[3], KEYS[4])
  if (not first) or first == member then
    local token, raised = next_token(KEYS[2], ARGV[5])
    redis.call('SET', KEYS[1], token .. ':' .. owner, 'PX', ttl)
    if first then
      redis.call('ZREM', KEYS[3], member)
      redis.call('ZREM', KEYS[4], member)
    end
    if raised == 1 then return {1, token, 1} end
    return token
  end
end
local pttl = 0
if current then pttl = redis.call('PTTL', KEYS[1]) end
if ARGV[3] ~= '1' then return {0, pttl, 0, 0} end
local now = now_ms()
purge(KEYS[3], KEYS[4], now)
local life = tonumber(ARGV[4])
if not redis.call('ZSCORE', KEYS[3], member) then
  local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
  local seq = 1
  if last[2] then seq = tonumber(last[2]) + 1 end
  redis.call('ZADD', KEYS[3], seq, member)
end
redis.call('ZADD', KEYS[4], now + life, member)
-- The line disappears by itself once nobody refreshes it.
if redis.call('PTTL', KEYS[3]) < 2 * life then redis.call('PEXPIRE', KEYS[3], 2 * life) end
if redis.call('PTTL', KEYS[4]) < 2 * life then redis.call('PEXPIRE', KEYS[4], 2 * life) end
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if head(KEYS[3], KEYS[4]) == member then return {0, pttl, 1, now, fence} end
return {0, pttl, 0, now, fence}
`;

/**
 * KEYS lock, fence, waiters, alive. ARGV '<token>:<owner>', floor, wake channel prefix. Frees the
 * key if it is ours and hands it to the first waiter. Returns 1 if released, 0 if not ours, 2 if
 * released and the hand-over had to lift the fence counter to the floor.
 */
const RELEASE = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
-- Nobody in line (the common case): done, before the helpers below are defined.
if redis.call('EXISTS', KEYS[3]) == 0 then return 1 end
${NEXT_TOKEN}
${COMMON}
return 1 + hand_over(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[3])
`;

/** KEYS lock. ARGV '<token>:<owner>', ttl. Returns 1 if the lease was restarted, 0 if not ours. */
const EXTEND = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`;

/**
 * KEYS lock, fence, waiters, alive. ARGV owner, member, floor, wake channel prefix. An acquisition
 * that gave up (timeout, abort, error, close) leaves the line, and gives back a grant it never saw
 * (a late reply, a lost one, a hand-over after it left), handing the key to the next waiter.
 * Returns {2 if it gave a grant back, 1 if the key is free, 0 if someone else holds it; raised}.
 */
const CANCEL = `${NEXT_TOKEN}
${COMMON}
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
local current = redis.call('GET', KEYS[1])
local result = 1
if current then
  if split(current) ~= ARGV[1] then return {0, 0} end
  redis.call('DEL', KEYS[1])
  result = 2
end
return {result, hand_over(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[3], ARGV[4])}
`;

function script(name: string, lua: string, keys: LockScript['keys']): LockScript {
  const allKeys = keys.join() === 'lock,fence,waiters,alive';
  return { name, lua, keys, allKeys, sha: createHash('sha1').update(lua).digest('hex') };
}

export const SCRIPTS = {
  acquire: script('acquire', ACQUIRE, ['lock', 'fence', 'waiters', 'alive']),
  release: script('release', RELEASE, ['lock', 'fence', 'waiters', 'alive']),
  extend: script('extend', EXTEND, ['lock']),
  cancel: script('cancel', CANCEL, ['lock', 'fence', 'waiters', 'alive']),
} as const;

/** Runs a script by SHA, loading it with EVAL when the server does not know it (first use, restart). */
export async function runScript(
  client: RedisClient,
  which: LockScript,
  keys: LockKeys,
  args: readonly (string | number)[],
): Promise<unknown> {
  const names = which.allKeys ? keys.all : which.keys.map((k) => keys[k]);
  try {
    return await client.evalsha(which.sha, names.length, ...names, ...args);
  } catch (error) {
    if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
    return await client.eval(which.lua, names.length, ...names, ...args);
  }
}
