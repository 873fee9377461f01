import { createHash } from 'node:crypto';
import { ClusterError } from '@cluster/core';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommandBatcher } from '../src/command-batch.js';
import { type RedisServerHandle, redisBinariesAvailable, startRedisServer } from './helpers/redis-server.js';

// A private server: the test flushes its script cache, which must never happen on the shared one.
let server: RedisServerHandle;
let client: Redis;

const source = 'return {KEYS[1], ARGV[1]}';
const ECHO = { source, sha: createHash('sha1').update(source).digest('hex') };

/** Counts the pipelines the batcher opens on the client. */
function countPipelines(redis: Redis): { count: number } {
  const seen = { count: 0 };
  const pipeline = redis.pipeline.bind(redis);
  redis.pipeline = ((...args: Parameters<Redis['pipeline']>) => {
    seen.count += 1;
    return pipeline(...args);
  }) as Redis['pipeline'];
  return seen;
}

describe.skipIf(!redisBinariesAvailable)('command batches', () => {
  beforeAll(async () => {
    server = await startRedisServer();
    client = new Redis(server.url, { commandTimeout: 2_000 });
  });
  afterAll(async () => {
    client?.disconnect();
    await server?.stop();
  });

  it('sends the calls of one turn as one pipeline per hash tag, each caller getting its own reply', async () => {
    const batcher = new CommandBatcher(() => client, 3_000);
    const seen = countPipelines(client);
    await client.script('FLUSH');
    // First use after a flush: every call meets NOSCRIPT in the pipeline and is loaded with EVAL.
    const calls = Array.from({ length: 300 }, (_, i) =>
      batcher.evalScript(`tag${i % 3}`, ECHO, [`p:{tag${i % 3}}:q:stream`], [`v${i}`], 'echo'),
    );
    const replies = await Promise.all(calls);
    expect(replies).toEqual(replies.map((_, i) => [`p:{tag${i % 3}}:q:stream`, `v${i}`]));
    expect(seen.count).toBe(3);
    // Loaded now: the next turn's batch is answered by EVALSHA alone.
    const again = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        batcher.evalScript('tag0', ECHO, ['p:{tag0}:q:stream'], [`w${i}`], 'echo'),
      ),
    );
    expect(again.map((r) => (r as string[])[1])).toEqual(Array.from({ length: 10 }, (_, i) => `w${i}`));
    expect(seen.count).toBe(4);
  });

  it('merges the items of one turn that share script, tag and fixed arguments into bounded script calls', async () => {
    // Replies per item: its key and its argument, so every caller can check it got its own.
    const eachSource =
      'local out = {} for k = 1, #ARGV - 1 do out[k] = KEYS[1] .. "|" .. ARGV[1] .. "|" .. KEYS[1 + k] .. "|" .. ARGV[1 + k] end return out';
    const EACH = { source: eachSource, sha: createHash('sha1').update(eachSource).digest('hex') };
    await client.script('LOAD', eachSource);
    const batcher = new CommandBatcher(() => client, 3_000);
    const seen = countPipelines(client);
    const sent: number[] = [];
    const call = client.call.bind(client);
    client.call = ((...args: Parameters<Redis['call']>) => {
      sent.push(1);
      return call(...args);
    }) as Redis['call'];
    try {
      // 250 items of one group (3 calls of at most 100), 10 of another fixed argument (1 call).
      const items = Array.from({ length: 250 }, (_, i) =>
        batcher.evalEach('m', EACH, ['p:{m}:s'], ['a'], [`p:{m}:id:${i}`], [`v${i}`], 'each'),
      );
      const others = Array.from({ length: 10 }, (_, i) =>
        batcher.evalEach('m', EACH, ['p:{m}:s'], ['b'], [`p:{m}:id:${i}`], [`w${i}`], 'each'),
      );
      expect(await Promise.all(items)).toEqual(items.map((_, i) => `p:{m}:s|a|p:{m}:id:${i}|v${i}`));
      expect(await Promise.all(others)).toEqual(others.map((_, i) => `p:{m}:s|b|p:{m}:id:${i}|w${i}`));
      // The first item found the batcher idle and went out at once, alone; the 259 others were
      // merged into 4 script calls (100, 100, 49 and the other group's 10) in one pipeline.
      expect(sent).toHaveLength(1);
      expect(seen.count).toBe(1);
    } finally {
      client.call = call;
    }
    // A failing call rejects each of its items, and only those.
    const bad = Array.from({ length: 3 }, (_, i) =>
      batcher.evalEach(
        'm',
        { source: 'return redis.error_reply("nope")', sha: '0'.repeat(40) },
        ['p:{m}:s'],
        [],
        [`p:{m}:x${i}`],
        [i],
        'each',
      ),
    );
    const good = batcher.evalEach('m', EACH, ['p:{m}:s'], ['c'], ['p:{m}:y'], ['z'], 'each');
    for (const outcome of await Promise.allSettled(bad)) expect(outcome.status).toBe('rejected');
    expect(await good).toBe('p:{m}:s|c|p:{m}:y|z');
  });

  it('never reorders calls of one turn: only consecutive items of one kind are merged', async () => {
    const batcher = new CommandBatcher(() => client, 3_000);
    const key = 'p:{ord}:k';
    await client.del(key);
    // The first goes out at once (the batcher is idle); the others are batched behind it.
    const calls = [
      batcher.callEach('ord', 'mset', [], [key, 'a'], 'set', ['set', [key, 'a']]),
      batcher.callEach('ord', 'mget', [], [key], 'get', ['get', [key]]),
      batcher.callEach('ord', 'mget', [], [key], 'get', ['get', [key]]),
      batcher.callEach('ord', 'mset', [], [key, 'b'], 'set', ['set', [key, 'b']]),
      batcher.callEach('ord', 'mget', [], [key], 'get', ['get', [key]]),
      batcher.call('ord', 'set', [key, 'c'], 'set'),
      batcher.callEach('ord', 'mget', [], [key], 'get', ['get', [key]]),
    ];
    const replies = await Promise.all(calls);
    expect([replies[1], replies[2], replies[4], replies[6]]).toEqual(['a', 'a', 'b', 'c']);
    await client.del(key);
  });

  it('sends a call alone in its turn without a pipeline', async () => {
    const batcher = new CommandBatcher(() => client, 3_000);
    const seen = countPipelines(client);
    expect(await batcher.evalScript('solo', ECHO, ['p:{solo}:q:stream'], ['x'], 'echo')).toEqual([
      'p:{solo}:q:stream',
      'x',
    ]);
    expect(await batcher.evalScript('solo', ECHO, ['p:{solo}:q:stream'], ['y'], 'echo')).toEqual([
      'p:{solo}:q:stream',
      'y',
    ]);
    expect(seen.count).toBe(0);
  });

  it('rejects every call of a batch with TIMEOUT when the server does not answer in time', async () => {
    const stalled = new Redis(server.url);
    const batcher = new CommandBatcher(() => stalled, 300);
    await stalled.script('LOAD', source);
    // CLIENT PAUSE holds every reply of this server for a while: the batch's deadline fires first.
    await client.client('PAUSE', 1_500, 'ALL');
    const outcomes = await Promise.allSettled(
      Array.from({ length: 5 }, (_, i) =>
        batcher.evalScript('slow', ECHO, ['p:{slow}:q:stream'], [`s${i}`], 'slow echo'),
      ),
    );
    for (const outcome of outcomes) {
      expect(outcome.status).toBe('rejected');
      const error = (outcome as PromiseRejectedResult).reason;
      expect(ClusterError.is(error, 'TIMEOUT')).toBe(true);
      expect((error as Error).message).toContain('slow echo');
    }
    stalled.disconnect();
  });

  it('relies on a client’s own shorter command deadline, and works on once the server answers', async () => {
    await client.ping(); // waits out the pause of the test before
    const bounded = new Redis(server.url, { commandTimeout: 300 });
    bounded.on('error', () => {});
    const batcher = new CommandBatcher(() => bounded, 5_000);
    await bounded.script('LOAD', source);
    await client.client('PAUSE', 1_500, 'ALL');
    const started = Date.now();
    const outcomes = await Promise.allSettled([
      batcher.evalScript('slow', ECHO, ['p:{slow}:q:stream'], ['alone'], 'slow echo'),
      ...Array.from({ length: 4 }, (_, i) =>
        batcher.evalScript('slow', ECHO, ['p:{slow}:q:stream'], [`s${i}`], 'slow echo'),
      ),
    ]);
    // Rejected by ioredis' per-command deadline, long before the batcher's 5 s.
    expect(Date.now() - started).toBeLessThan(2_500);
    for (const outcome of outcomes) {
      expect(outcome.status).toBe('rejected');
      expect(String((outcome as PromiseRejectedResult).reason)).toMatch(/timed out/i);
    }
    // Nothing is left counted in flight: once the pause ends, a call alone goes out and succeeds.
    await client.ping(); // answered when the pause ends
    expect(await batcher.evalScript('after', ECHO, ['p:{after}:q'], ['x'], 'echo')).toEqual([
      'p:{after}:q',
      'x',
    ]);
    bounded.disconnect();
  });

  it('rejects the calls when no client can be had, without sending anything', async () => {
    const closed = new ClusterError('CLOSED', 'redis connections are closed');
    const batcher = new CommandBatcher(() => {
      throw closed;
    }, 1_000);
    await expect(batcher.evalScript('x', ECHO, ['p:{x}:q:stream'], ['a'], 'echo')).rejects.toBe(closed);
  });

  it('keeps plain commands of one turn in order in one pipeline', async () => {
    const batcher = new CommandBatcher(() => client, 3_000);
    const seen = countPipelines(client);
    const key = 'p:{order}:list';
    await Promise.all(Array.from({ length: 50 }, (_, i) => batcher.call('order', 'RPUSH', [key, i], 'push')));
    expect(seen.count).toBe(1);
    expect(await client.lrange(key, 0, -1)).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
    await client.del(key);
  });
});
