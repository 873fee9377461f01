import { createRequire } from 'node:module';
import { ClusterError, EventQueue, type QueueDelivery } from '@cluster/core';
import { REDIS, requireServer, signal, uniqueName, waitFor, within } from '@cluster/testkit';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisQueue } from '../src/index.js';
import { ACK, channelKeys, GROUP, keysFor, PUBLISH, REAP_CONSUMERS, SCRIPTS } from '../src/queue/scripts.js';
import { deleteKeys, REDIS_URL } from './helpers/queue-redis.js';

// cluster-key-slot is a dependency of ioredis: resolved through it rather than added to this package.
const requireFromIoredis = createRequire(createRequire(import.meta.url).resolve('ioredis'));
const keySlot = requireFromIoredis('cluster-key-slot') as (key: string) => number;

describe('queue key layout', () => {
  const channels = ['app:jobs', 'a%3Ab:c', 'we{ir}d:{}', 'x'];
  const ids = ['order-1', '{other}', 'ü:é', 'a b'];

  it('puts every key of every script of one channel in one Redis Cluster slot', () => {
    for (const script of SCRIPTS) {
      for (const channel of channels) {
        const keys = keysFor(script, 'cluster', channel, ids);
        expect(keys.length, script.name).toBeGreaterThan(0);
        const slots = new Set(keys.map((key) => keySlot(key)));
        expect([...slots], `${script.name} on ${channel}: ${keys.join(' ')}`).toHaveLength(1);
      }
    }
  });

  it('gives different channels and different key prefixes different keys', () => {
    const all = new Set<string>();
    for (const prefix of ['cluster', 'other']) {
      for (const channel of channels)
        for (const key of keysFor(PUBLISH, prefix, channel, ['1'])) all.add(key);
    }
    // The fixed keys plus the one id key.
    expect(all.size).toBe(2 * channels.length * (PUBLISH.keys.length + 1));
  });
});

const available = await requireServer(REDIS);

describe.skipIf(!available)('redis queue adapter', () => {
  const prefixes: string[] = [];
  let raw: Redis;

  beforeAll(async () => {
    raw = new Redis(REDIS_URL);
  });

  afterAll(async () => {
    raw.disconnect();
    for (const prefix of prefixes) await deleteKeys(prefix);
  });

  function prefix(): string {
    const name = uniqueName('tqu');
    prefixes.push(name);
    return name;
  }

  async function evalScript(script: (typeof SCRIPTS)[number], keys: string[], args: (string | number)[]) {
    return raw.call('EVAL', script.source, keys.length, ...keys, ...args);
  }

  it('declares its capabilities from its options', () => {
    const plain = createRedisQueue({ url: REDIS_URL, keyPrefix: prefix() });
    expect(plain.capabilities).toMatchObject({
      durable: false,
      crossProcess: true,
      delivery: 'at-least-once',
      delayed: true,
      deadLetter: true,
      dedupe: 'pending',
      redelivery: true,
      visibilityTimeoutMs: 30_000,
      maxPayloadBytes: 1024 * 1024,
    });
    const windowed = createRedisQueue({
      url: REDIS_URL,
      durable: true,
      dedupeWindow: 500,
      visibilityTimeout: 900,
    });
    expect(windowed.capabilities).toMatchObject({
      durable: true,
      dedupe: 'window',
      dedupeWindowMs: 500,
      visibilityTimeoutMs: 900,
    });
    expect(() => createRedisQueue({ visibilityTimeout: 0 })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    expect(() => createRedisQueue({ blockMs: 0 })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    void plain.close();
    void windowed.close();
  });

  it('rejects calls before connect() and after close() with typed errors', async () => {
    const adapter = createRedisQueue({ url: REDIS_URL, keyPrefix: prefix() });
    const task = { id: 'x', payload: '1', maxRetries: 0, timeout: 1_000, delay: 0, dedupe: false };
    await expect(adapter.publish('c', task)).rejects.toMatchObject({ code: 'NOT_STARTED' });
    await adapter.connect();
    expect((await adapter.publish('c', task)).duplicate).toBe(false);
    await adapter.close();
    await expect(adapter.publish('c', task)).rejects.toMatchObject({ code: 'CLOSED' });
    await expect(adapter.connect()).rejects.toMatchObject({ code: 'CLOSED' });
  });

  it('fails to connect to an unreachable server with a typed, credential-free error', async () => {
    const adapter = createRedisQueue({
      url: 'redis://user:s3cr3t-sentinel@127.0.0.1:1',
      commandTimeout: 300,
      redisOptions: { retryStrategy: () => 50, connectTimeout: 500 },
    });
    const error = await within(
      adapter.connect().catch((e: unknown) => e),
      10_000,
      'connect',
    );
    expect(ClusterError.is(error)).toBe(true);
    expect(
      JSON.stringify({ message: (error as Error).message, stack: (error as Error).stack }),
    ).not.toContain('s3cr3t-sentinel');
    await adapter.close();
  });

  it('publish is idempotent per call: a resent script (same nonce) enqueues nothing and is no duplicate', async () => {
    const keyPrefix = prefix();
    const channel = 'app:resend';
    const keys = keysFor(PUBLISH, keyPrefix, channel, ['t-1']);
    const args = [GROUP, 't-1', '"p"', 0, 1_000, 0, 'n', 60_000, 'nonce-1'];
    expect(await evalScript(PUBLISH, keys, args)).toEqual([[0, 0, 0]]);
    expect(await evalScript(PUBLISH, keys, args)).toEqual([[0, 0, 0]]);
    expect(await raw.xlen(keys[0]!)).toBe(1);
    // The same id from another publish call (another nonce) is a duplicate when it must dedupe.
    const dedupe = keysFor(PUBLISH, keyPrefix, channel, ['t-2']);
    expect(await evalScript(PUBLISH, dedupe, [GROUP, 't-2', '1', 0, 1_000, 0, 'p', 0, 'a'])).toEqual([
      [0, 0, 0],
    ]);
    expect(await evalScript(PUBLISH, dedupe, [GROUP, 't-2', '1', 0, 1_000, 0, 'p', 0, 'b'])).toEqual([
      [1, 0, 0],
    ]);
    expect(await raw.xlen(keys[0]!)).toBe(2);
    // Several tasks in one call (a turn's publishes): each gets its own reply, in order, and an id
    // repeated within the call is a duplicate of its first occurrence.
    const many = keysFor(PUBLISH, keyPrefix, channel, ['t-3', 't-4', 't-3']);
    const task = (id: string, nonce: string, delay = 0) => [id, '1', 0, 1_000, delay, 'p', 0, nonce];
    const replies = (await evalScript(PUBLISH, many, [
      GROUP,
      ...task('t-3', 'c'),
      ...task('t-4', 'd', 60_000),
      ...task('t-3', 'e'),
    ])) as number[][];
    expect(replies).toHaveLength(3);
    expect(replies[0]).toEqual([0, 0, 0]);
    expect(replies[1]![0]).toBe(0);
    expect(replies[1]![1]).toBeGreaterThan(replies[1]![2]!); // due = server now + delay
    expect(replies[2]).toEqual([1, 0, 0]);
    expect(await raw.xlen(keys[0]!)).toBe(3);
    expect(await raw.zcard(channelKeys(keyPrefix, channel).delayed)).toBe(1);
  });

  it('settles a delivery once; a settlement with a stale delivery count is refused', async () => {
    const keyPrefix = prefix();
    const adapter = createRedisQueue({ url: REDIS_URL, keyPrefix, visibilityTimeout: 5_000 });
    await adapter.connect();
    const got = signal<QueueDelivery>();
    const consumer = await adapter.consume('app:once', { concurrency: 1, deliver: (d) => got.resolve(d) });
    await adapter.publish('app:once', {
      id: 'o-1',
      payload: '1',
      maxRetries: 0,
      timeout: 1_000,
      delay: 0,
      dedupe: true,
    });
    const delivery = await within(got.promise, 5_000, 'delivery');
    const streamKey = keysFor(ACK, keyPrefix, 'app:once', ['o-1'])[0]!;
    const [entry, owner] = ((await raw.xpending(streamKey, GROUP, '-', '+', 1)) as [string, string][])[0]!;
    // Count 2 is not this delivery (count 1): refused, nothing changes.
    expect(
      await evalScript(ACK, keysFor(ACK, keyPrefix, 'app:once', ['o-1']), [GROUP, owner, entry, 2, 'p', 'x']),
    ).toEqual([0]);
    expect(await delivery.ack()).toBe(true);
    expect(await delivery.ack()).toBe(false);
    expect(await delivery.touch()).toBe(false);
    expect(await adapter.stats('app:once')).toEqual({ pending: 0, delayed: 0, inFlight: 0, deadLetters: 0 });
    // Pending dedupe: the id is free again once its task is done.
    expect(
      (
        await adapter.publish('app:once', {
          id: 'o-1',
          payload: '2',
          maxRetries: 0,
          timeout: 1_000,
          delay: 0,
          dedupe: true,
        })
      ).duplicate,
    ).toBe(false);
    await consumer.close();
    await adapter.close();
  });

  it('window dedupe holds an id for the window, also after its task is done', async () => {
    const adapter = createRedisQueue({ url: REDIS_URL, keyPrefix: prefix(), dedupeWindow: 400 });
    const queue = new EventQueue({ appName: 'w', adapter, idleInterval: 20 });
    await queue.start();
    const ran: unknown[] = [];
    queue.subscribe('jobs', { process: async (payload) => void ran.push(payload) });
    const startedAt = Date.now();
    expect((await queue.publish('jobs', 1, { id: 'w-1' })).duplicate).toBe(false);
    await waitFor(() => ran.length === 1, { message: 'task ran' });
    const second = await queue.publish('jobs', 2, { id: 'w-1' });
    // Only meaningful while still inside the window (a stalled box may have passed it).
    if (Date.now() - startedAt < 350) expect(second.duplicate).toBe(true);
    await waitFor(async () => !(await queue.publish('jobs', 3, { id: 'w-1' })).duplicate, {
      timeout: 5_000,
      interval: 50,
      message: 'window over',
    });
    await waitFor(() => ran.includes(3), { message: 'task after the window ran' });
    await queue.close();
  });

  it('moves a delayed task on time even when it was published by another adapter', async () => {
    const keyPrefix = prefix();
    const producer = createRedisQueue({ url: REDIS_URL, keyPrefix, blockMs: 200 });
    const worker = new EventQueue({
      appName: 'd',
      adapter: createRedisQueue({ url: REDIS_URL, keyPrefix, blockMs: 200 }),
    });
    await producer.connect();
    await worker.start();
    const ran = signal<number>();
    worker.subscribe('later', { process: async () => ran.resolve(Date.now()) });
    const publishedAt = Date.now();
    await producer.publish(worker.getFullChannel('later'), {
      id: 'd-1',
      payload: '1',
      maxRetries: 0,
      timeout: 1_000,
      delay: 300,
      dedupe: false,
    });
    const at = await within(ran.promise, 5_000, 'delayed task');
    expect(at - publishedAt).toBeGreaterThanOrEqual(297);
    // Discovered by the periodic check (every blockMs), then run on time.
    expect(at - publishedAt).toBeLessThan(300 + 200 + 1_000);
    await worker.close();
    await producer.close();
  });

  function task(id: string, payload = '1') {
    return { id, payload, maxRetries: 0, timeout: 1_000, delay: 0, dedupe: false };
  }

  it('delivers nothing while paused: a read in flight at pause() hands its entries back', async () => {
    const adapter = createRedisQueue({ url: REDIS_URL, keyPrefix: prefix(), blockMs: 500 });
    await adapter.connect();
    const got: QueueDelivery[] = [];
    const consumer = await adapter.consume('app:paused', { concurrency: 3, deliver: (d) => got.push(d) });
    consumer.pause();
    for (const id of ['p-1', 'p-2', 'p-3']) await adapter.publish('app:paused', task(id));
    await waitFor(
      async () => {
        const stats = await adapter.stats('app:paused');
        return stats.pending === 3 && stats.inFlight === 0;
      },
      { message: 'all three back in the stream, none claimed' },
    );
    expect(got).toEqual([]);
    consumer.resume();
    await waitFor(() => got.length === 3, { message: 'delivered after resume' });
    expect(got.map((d) => d.attempt)).toEqual([1, 1, 1]);
    for (const d of got) expect(await d.ack()).toBe(true);
    await consumer.close();
    await adapter.close();
  });

  it('recreates its stream and group when they vanish under a running consumer', async () => {
    const keyPrefix = prefix();
    const adapter = createRedisQueue({ url: REDIS_URL, keyPrefix, blockMs: 200 });
    await adapter.connect();
    const got: QueueDelivery[] = [];
    const consumer = await adapter.consume('app:gone', {
      concurrency: 1,
      deliver: (d) => {
        got.push(d);
        void d.ack();
      },
    });
    await adapter.publish('app:gone', task('g-1'));
    await waitFor(() => got.length === 1, { message: 'first task' });
    // What a server restart without persistence (or a manual cleanup) does.
    await raw.del(channelKeys(keyPrefix, 'app:gone').stream);
    await adapter.publish('app:gone', task('g-2'));
    await waitFor(() => got.length === 2, { timeout: 10_000, message: 'task after the stream vanished' });
    expect(got[1]!.id).toBe('g-2');
    await consumer.close();
    await adapter.close();
  });

  it('removes consumers that left nothing pending, and only those', async () => {
    const keyPrefix = prefix();
    const stream = channelKeys(keyPrefix, 'app:reap').stream;
    await raw.xgroup('CREATE', stream, GROUP, '0', 'MKSTREAM');
    await raw.xgroup('CREATECONSUMER', stream, GROUP, 'dead-idle');
    await raw.xadd(stream, '*', 'i', 'x');
    await raw.xreadgroup('GROUP', GROUP, 'dead-holding', 'COUNT', 1, 'STREAMS', stream, '>');
    expect(await evalScript(REAP_CONSUMERS, [stream], [GROUP, 0])).toBe(1);
    const left = (await raw.xinfo('CONSUMERS', stream, GROUP)) as unknown[][];
    expect(left.map((c) => c[c.indexOf('name') + 1])).toEqual(['dead-holding']);
  });

  it('works over a client given by the application and leaves that client open', async () => {
    const keyPrefix = prefix();
    const client = new Redis(REDIS_URL);
    try {
      const queue = new EventQueue({ appName: 'given', adapter: createRedisQueue({ client, keyPrefix }) });
      await queue.start();
      const ran = signal<number>();
      queue.subscribe<number>('jobs', { process: async (n) => ran.resolve(n) });
      await queue.publish('jobs', 42);
      expect(await within(ran.promise, 5_000, 'task')).toBe(42);
      await queue.close();
      expect(client.status).toBe('ready');
      expect(await client.ping()).toBe('PONG');
    } finally {
      client.disconnect();
    }
  });

  it('reads entries in the earlier layout (one stream field per task field) and settles them', async () => {
    const keyPrefix = prefix();
    const adapter = createRedisQueue({ url: REDIS_URL, keyPrefix });
    await adapter.connect();
    const got: QueueDelivery[] = [];
    const consumer = await adapter.consume('app:old', { concurrency: 2, deliver: (d) => got.push(d) });
    const { stream } = channelKeys(keyPrefix, 'app:old');
    const marker = keysFor(PUBLISH, keyPrefix, 'app:old', ['old-1'])[2]!;
    await raw.set(marker, 'nonce-old');
    // As written before the fields were packed into `m`: pending dedupe, attempt 2.
    await raw.xadd(
      stream,
      '*',
      'i',
      'old-1',
      'a',
      '2',
      'r',
      '3',
      't',
      '1500',
      'p',
      '1700000000000',
      'n',
      'nonce-old',
      'u',
      'p',
      'd',
      '"x"',
    );
    await waitFor(() => got.length === 1, { message: 'old-layout delivery' });
    expect(got[0]).toMatchObject({
      id: 'old-1',
      payload: '"x"',
      attempt: 2,
      maxRetries: 3,
      timeout: 1_500,
      publishedAt: 1_700_000_000_000,
    });
    expect(await got[0]!.ack()).toBe(true);
    // The ack freed the pending-dedupe marker, as for an entry of the current layout.
    expect(await raw.exists(marker)).toBe(0);
    // And one of the current layout next to it: a retry keeps its fields.
    await adapter.publish('app:old', { ...task('new-1', '"y"'), maxRetries: 2 });
    await waitFor(() => got.length === 2, { message: 'new-layout delivery' });
    expect(got[1]).toMatchObject({ id: 'new-1', attempt: 1, maxRetries: 2, timeout: 1_000 });
    const publishedAt = got[1]!.publishedAt;
    expect(publishedAt).toBeGreaterThan(Date.now() - 60_000);
    expect(await got[1]!.retry(0, 'again')).toBe(true);
    await waitFor(() => got.length === 3, { message: 'retried delivery' });
    expect(got[2]).toMatchObject({ id: 'new-1', attempt: 2, maxRetries: 2, timeout: 1_000, publishedAt });
    expect(await got[2]!.ack()).toBe(true);
    await consumer.close();
    await adapter.close();
  });

  it('carries any payload text intact through the delayed set and a delayed retry', async () => {
    const adapter = createRedisQueue({ url: REDIS_URL, keyPrefix: prefix() });
    await adapter.connect();
    const text = `héllo ✓ 😀 "q" \\ / \u0001 ${'x'.repeat(10_000)}`;
    const got: QueueDelivery[] = [];
    const consumer = await adapter.consume('app:text', { concurrency: 1, deliver: (d) => got.push(d) });
    await adapter.publish('app:text', { ...task('u-1', text), delay: 30, maxRetries: 1 });
    await waitFor(() => got.length === 1, { message: 'delayed delivery' });
    expect(got[0]!.payload).toBe(text);
    expect(await got[0]!.retry(30, 'again')).toBe(true);
    await waitFor(() => got.length === 2, { message: 'delayed retry' });
    expect(got[1]!).toMatchObject({ payload: text, attempt: 2, maxRetries: 1, timeout: 1_000 });
    expect(await got[1]!.deadLetter('failed ✗')).toBe(true);
    const [letter] = await adapter.listDeadLetters('app:text');
    expect(letter).toMatchObject({ id: 'u-1', payload: text, attempts: 2, error: 'failed ✗' });
    await consumer.close();
    await adapter.close();
  });
});
