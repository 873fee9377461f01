import {
  ClusterError,
  computeBackoffDelay,
  createMemoryHub,
  createMemoryQueue,
  createSerializer,
  EventQueue,
  type EventQueueOptions,
  type Logger,
  type QueueAdapter,
  type QueueCapabilities,
  type QueueDelivery,
  type Serializer,
} from '@cluster/core';
import { signal, waitFor, within } from '@cluster/testkit';
import { afterEach, describe, expect, it } from 'vitest';

type LogRecord = { level: string; obj: Record<string, unknown>; msg: string | undefined };

function recordingLogger(): Logger & { records: LogRecord[] } {
  const records: LogRecord[] = [];
  const make = (): Logger => ({
    debug: (obj, msg) => records.push({ level: 'debug', obj: obj as Record<string, unknown>, msg }),
    info: (obj, msg) => records.push({ level: 'info', obj: obj as Record<string, unknown>, msg }),
    warn: (obj, msg) => records.push({ level: 'warn', obj: obj as Record<string, unknown>, msg }),
    error: (obj, msg) => records.push({ level: 'error', obj: obj as Record<string, unknown>, msg }),
    child: () => make(),
  });
  return Object.assign(make(), { records });
}

const code = (c: string) => expect.objectContaining({ code: c });

/** Wraps an adapter to observe or alter what the manager sees of each delivery. */
function spyAdapter(
  inner: QueueAdapter,
  wrap: (delivery: QueueDelivery) => QueueDelivery,
  capabilities: Partial<QueueCapabilities> = {},
): QueueAdapter {
  return {
    capabilities: { ...inner.capabilities, ...capabilities },
    connect: () => inner.connect(),
    publish: (channel, task) => inner.publish(channel, task),
    consume: (channel, options) =>
      inner.consume(channel, { ...options, deliver: (delivery) => options.deliver(wrap(delivery)) }),
    listDeadLetters: (channel, options) => inner.listDeadLetters(channel, options),
    replayDeadLetters: (channel, ids) => inner.replayDeadLetters(channel, ids),
    purgeDeadLetters: (channel, ids) => inner.purgeDeadLetters(channel, ids),
    stats: (channel) => inner.stats(channel),
    close: () => inner.close(),
    [Symbol.asyncDispose]: () => inner.close(),
  };
}

const opened: { close(): Promise<void> }[] = [];
const releases: (() => void)[] = [];

function track<T extends { close(): Promise<void> }>(resource: T): T {
  opened.push(resource);
  return resource;
}

function queue(options: Partial<EventQueueOptions> = {}): EventQueue {
  return track(
    new EventQueue({
      appName: 'unit',
      adapter: createMemoryQueue(),
      idleInterval: 10,
      backoff: { baseMs: 10, maxMs: 40 },
      closeTimeout: 500,
      ...options,
    }),
  );
}

afterEach(async () => {
  for (const release of releases.splice(0)) release();
  for (const resource of opened.splice(0).reverse()) await resource.close();
});

describe('computeBackoffDelay', () => {
  const options = { baseMs: 100, maxMs: 1_000, factor: 2 };

  it('stays within [ceiling/2, ceiling] with ceiling = min(maxMs, baseMs * factor^(attempt-1))', () => {
    const ceilings = [100, 200, 400, 800, 1_000, 1_000];
    for (const [i, ceiling] of ceilings.entries()) {
      const attempt = i + 1;
      expect(computeBackoffDelay(attempt, options, () => 0)).toBe(ceiling / 2);
      expect(computeBackoffDelay(attempt, options, () => 0.999_999)).toBe(ceiling);
      for (let n = 0; n < 50; n++) {
        const delay = computeBackoffDelay(attempt, options);
        expect(delay).toBeGreaterThanOrEqual(ceiling / 2);
        expect(delay).toBeLessThanOrEqual(ceiling);
      }
    }
  });

  it('jitters: delays for one attempt spread over its range', () => {
    const delays = new Set(Array.from({ length: 100 }, () => computeBackoffDelay(4, options)));
    expect(delays.size).toBeGreaterThan(20);
  });

  it('never decreases from one attempt to the next with factor 2, below the cap', () => {
    // Ceilings 100, 200, 400, 800 stay under maxMs; from there on delays jitter within [500, 1000].
    for (let attempt = 1; attempt < 4; attempt++) {
      const highestNow = computeBackoffDelay(attempt, options, () => 0.999_999);
      const lowestNext = computeBackoffDelay(attempt + 1, options, () => 0);
      expect(lowestNext).toBeGreaterThanOrEqual(highestNow);
    }
  });

  it('caps huge attempts at maxMs instead of overflowing', () => {
    expect(computeBackoffDelay(10_000, options, () => 0.999_999)).toBe(1_000);
    expect(computeBackoffDelay(10_000, { baseMs: 1, maxMs: 5, factor: 1e308 }, () => 0)).toBe(3);
  });

  it('uses 1 s, 60 s and factor 2 by default', () => {
    expect(computeBackoffDelay(1, undefined, () => 0.999_999)).toBe(1_000);
    expect(computeBackoffDelay(3, {}, () => 0.999_999)).toBe(4_000);
    expect(computeBackoffDelay(20, {}, () => 0.999_999)).toBe(60_000);
  });

  it('rejects invalid options', () => {
    for (const bad of [{ baseMs: -1 }, { baseMs: 10, maxMs: 5 }, { factor: 0.5 }, { maxMs: Number.NaN }]) {
      expect(() => computeBackoffDelay(1, bad)).toThrow(code('INVALID_ARGUMENT'));
    }
  });
});

describe('EventQueue arguments and lifecycle', () => {
  it('validates constructor options', () => {
    const adapter = createMemoryQueue();
    const bad: unknown[] = [
      { appName: '', adapter },
      { appName: 'a\nb', adapter },
      { appName: 'app' },
      { appName: 'app', adapter: {} },
      { appName: 'app', adapter, defaultTimeout: 0 },
      { appName: 'app', adapter, defaultTimeout: 2 ** 31 },
      { appName: 'app', adapter, closeTimeout: -1 },
      { appName: 'app', adapter, idleInterval: 0 },
      { appName: 'app', adapter, backoff: { factor: 0 } },
      { appName: 'app', adapter, serializer: {} },
    ];
    for (const options of bad) {
      expect(() => new EventQueue(options as EventQueueOptions)).toThrow(code('INVALID_ARGUMENT'));
    }
  });

  it('rejects publish, stats and dead-letter calls before start with NOT_STARTED', async () => {
    const q = queue();
    await expect(q.publish('ch', 1)).rejects.toEqual(code('NOT_STARTED'));
    await expect(q.stats('ch')).rejects.toEqual(code('NOT_STARTED'));
    await expect(q.deadLetters.list('ch')).rejects.toEqual(code('NOT_STARTED'));
    await expect(q.deadLetters.replay('ch')).rejects.toEqual(code('NOT_STARTED'));
    await expect(q.deadLetters.purge('ch')).rejects.toEqual(code('NOT_STARTED'));
    expect(q.isConnected()).toBe(false);
  });

  it('start() and close() are idempotent and every call after close fails with CLOSED', async () => {
    const q = queue();
    const starting = q.start();
    expect(q.start()).toBe(starting);
    await starting;
    expect(q.isConnected()).toBe(true);
    const closing = q.close();
    expect(q.close()).toBe(closing);
    await closing;
    await q[Symbol.asyncDispose]();
    expect(q.isConnected()).toBe(false);
    await expect(q.start()).rejects.toEqual(code('CLOSED'));
    await expect(q.publish('ch', 1)).rejects.toEqual(code('CLOSED'));
    await expect(q.stats('ch')).rejects.toEqual(code('CLOSED'));
    await expect(q.deadLetters.list('ch')).rejects.toEqual(code('CLOSED'));
    await expect(q.unsubscribe('ch')).rejects.toEqual(code('CLOSED'));
    expect(() => q.subscribe('ch', { process: () => {} })).toThrow(code('CLOSED'));
    expect(q.capabilities.redelivery).toBe(true);
  });

  it('validates subscribe() and leaves nothing registered when it throws', async () => {
    const q = queue();
    const process = () => {};
    const bad: [string, unknown][] = [
      ['', { process }],
      ['ch', undefined],
      ['ch', {}],
      ['ch', { process, concurrency: 0 }],
      ['ch', { process, concurrency: 1.5 }],
      ['ch', { process, concurrency: -1 }],
      ['ch', { process, idle: true }],
    ];
    for (const [channel, options] of bad) {
      expect(() => q.subscribe(channel, options as never)).toThrow(code('INVALID_ARGUMENT'));
    }
    q.subscribe('ch', { process });
    expect(() => q.subscribe('ch', { process })).toThrow(code('ALREADY_SUBSCRIBED'));
    expect(() => q.subscribe('ch', { process })).toThrow(ClusterError);
  });

  it('validates dead-letter and close arguments', async () => {
    const q = queue();
    await q.start();
    await expect(q.deadLetters.list('ch', { limit: 0 })).rejects.toEqual(code('INVALID_ARGUMENT'));
    await expect(q.deadLetters.replay('ch', 'id' as never)).rejects.toEqual(code('INVALID_ARGUMENT'));
    await expect(q.deadLetters.purge('ch', [1] as never)).rejects.toEqual(code('INVALID_ARGUMENT'));
    await expect(q.close({ timeout: -5 })).rejects.toEqual(code('INVALID_ARGUMENT'));
    expect(q.isConnected()).toBe(true);
  });

  it('activates consumers subscribed before start() once it runs', async () => {
    const q = queue();
    const got = signal<unknown>();
    q.subscribe('early', { process: (payload) => got.resolve(payload) });
    await q.start();
    await q.publish('early', { hi: 1 });
    expect(await within(got.promise, 2_000)).toEqual({ hi: 1 });
  });

  it('unsubscribe() of a channel never subscribed is a no-op', async () => {
    const q = queue();
    await q.start();
    await expect(q.unsubscribe('nothing')).resolves.toBeUndefined();
  });

  it('maps channels to app-prefixed, escaped adapter names', () => {
    const q = queue({ appName: 'a:b' });
    expect(q.getFullChannel('c')).toBe('a%3Ab:c');
    expect(() => q.getFullChannel('')).toThrow(code('INVALID_ARGUMENT'));
  });

  it("rejects payloads over the adapter's limit even when the serializer allows more", async () => {
    const adapter = spyAdapter(createMemoryQueue(), (d) => d, { maxPayloadBytes: 100 });
    const q = queue({ adapter, serializer: createSerializer({ maxPayloadBytes: 10_000 }) });
    await q.start();
    await expect(q.publish('ch', 'x'.repeat(200))).rejects.toEqual(code('PAYLOAD_TOO_LARGE'));
    await expect(q.publish('ch', 'x'.repeat(50))).resolves.toMatchObject({ duplicate: false });
  });
});

describe('EventQueue task handling', () => {
  it('logs handler failures with channel, id and attempt but never the payload', async () => {
    const logger = recordingLogger();
    const q = queue({ logger });
    await q.start();
    let calls = 0;
    q.subscribe('fails', {
      process: () => {
        calls += 1;
        if (calls === 1) throw new Error('sync failure'); // a handler that throws synchronously
        return Promise.reject(new Error('async failure'));
      },
    });
    const { id } = await q.publish('fails', { secret: 'hunter2' }, { maxRetries: 1 });
    await waitFor(async () => (await q.stats('fails')).deadLetters === 1);
    const errors = logger.records.filter((r) => r.level === 'error');
    expect(errors).toHaveLength(2);
    expect(errors[0]!.obj).toMatchObject({
      channel: 'fails',
      id,
      attempt: 1,
      err: { message: 'sync failure' },
    });
    expect(errors[1]!.obj).toMatchObject({
      channel: 'fails',
      id,
      attempt: 2,
      err: { message: 'async failure' },
    });
    expect(JSON.stringify(logger.records)).not.toContain('hunter2');
  });

  it('retries after a jittered delay within the backoff bounds', async () => {
    const delays: number[] = [];
    const adapter = spyAdapter(createMemoryQueue(), (d) => ({
      ...d,
      ack: () => d.ack(),
      deadLetter: (error) => d.deadLetter(error),
      touch: () => d.touch(),
      retry: (delayMs, error) => {
        delays.push(delayMs);
        return d.retry(delayMs, error);
      },
    }));
    const q = queue({ adapter, backoff: { baseMs: 8, maxMs: 32, factor: 2 } });
    await q.start();
    q.subscribe('retry', {
      process: () => {
        throw new Error('no');
      },
    });
    await q.publish('retry', 1, { maxRetries: 4 });
    await waitFor(async () => (await q.stats('retry')).deadLetters === 1);
    const ceilings = [8, 16, 32, 32];
    expect(delays).toHaveLength(4);
    for (const [i, delay] of delays.entries()) {
      expect(delay).toBeGreaterThanOrEqual(ceilings[i]! / 2);
      expect(delay).toBeLessThanOrEqual(ceilings[i]!);
    }
  });

  it('applies defaultTimeout to tasks published without a timeout', async () => {
    const seen = signal<QueueDelivery>();
    const adapter = spyAdapter(createMemoryQueue(), (d) => {
      seen.resolve(d);
      return d;
    });
    const q = queue({ adapter, defaultTimeout: 1_234 });
    await q.start();
    q.subscribe('t', { process: () => {} });
    await q.publish('t', 1);
    const delivery = await within(seen.promise, 2_000);
    expect(delivery).toMatchObject({ timeout: 1_234, maxRetries: 0, attempt: 1 });
  });

  it('touches running tasks at a third of the adapter visibility timeout', async () => {
    let touches = 0;
    const adapter = spyAdapter(createMemoryQueue({ visibilityTimeout: 90 }), (d) => ({
      ...d,
      ack: () => d.ack(),
      retry: (ms, e) => d.retry(ms, e),
      deadLetter: (e) => d.deadLetter(e),
      touch: () => {
        touches += 1;
        return d.touch();
      },
    }));
    const q = queue({ adapter });
    await q.start();
    const attempts: number[] = [];
    q.subscribe('long', {
      process: async (_p, { attempt }) => {
        attempts.push(attempt);
        await waitFor(() => touches >= 5, { timeout: 5_000 });
      },
    });
    await q.publish('long', 1);
    await waitFor(
      async () => attempts.length === 1 && (await q.stats('long')).inFlight === 0 && touches >= 5,
    );
    expect(attempts).toEqual([1]);
  });

  it('dead-letters a payload it cannot decode, and lists it with decodeError', async () => {
    const logger = recordingLogger();
    const inner = createSerializer();
    const picky: Serializer = {
      maxPayloadBytes: inner.maxPayloadBytes,
      encode: (value) => inner.encode(value),
      decode: (text) => {
        if (text.includes('poison')) throw new ClusterError('SERIALIZATION', 'cannot read this');
        return inner.decode(text);
      },
    };
    const q = queue({ logger, serializer: picky });
    await q.start();
    let calls = 0;
    q.subscribe('decode', {
      process: () => {
        calls += 1;
      },
    });
    await q.publish('decode', 'poison', { maxRetries: 3 });
    await waitFor(async () => (await q.stats('decode')).deadLetters === 1);
    expect(calls).toBe(0);
    const [letter] = await q.deadLetters.list('decode');
    expect(letter).toMatchObject({ payload: undefined, attempts: 1, decodeError: 'cannot read this' });
    expect(letter!.error).toContain('could not be decoded');
    expect(logger.records.some((r) => r.level === 'error' && r.obj.channel === 'decode')).toBe(true);
  });

  it('logs a settlement that lost its claim at warn and carries on', async () => {
    const logger = recordingLogger();
    const adapter = spyAdapter(createMemoryQueue(), (d) => ({
      ...d,
      ack: async () => {
        await d.ack();
        return false;
      },
      retry: (ms, e) => d.retry(ms, e),
      deadLetter: (e) => d.deadLetter(e),
      touch: () => d.touch(),
    }));
    const q = queue({ adapter, logger });
    await q.start();
    let runs = 0;
    q.subscribe('lost', {
      process: () => {
        runs += 1;
      },
    });
    await q.publish('lost', 1);
    await q.publish('lost', 2);
    await waitFor(() => logger.records.filter((r) => r.level === 'warn').length === 2);
    expect(runs).toBe(2);
    expect(logger.records.find((r) => r.level === 'warn')!.obj).toMatchObject({
      channel: 'lost',
      attempt: 1,
    });
  });

  it('treats an idle() that throws as busy and logs it once per failing streak', async () => {
    const logger = recordingLogger();
    const q = queue({ logger });
    await q.start();
    let throwing = true;
    let polls = 0;
    const ran = signal();
    q.subscribe('idle', {
      idle: () => {
        polls += 1;
        if (throwing) throw new Error('monitor down');
        return true;
      },
      process: () => ran.resolve(),
    });
    await q.publish('idle', 1);
    await waitFor(() => polls >= 5);
    expect((await q.stats('idle')).pending).toBe(1);
    const idleErrors = logger.records.filter((r) => r.level === 'error' && r.msg?.includes('idle()'));
    expect(idleErrors).toHaveLength(1);
    throwing = false;
    await within(ran.promise, 2_000, 'task after idle() recovered');
  });

  it('pauses a running consumer when idle() turns false and resumes on the next poll', async () => {
    const q = queue();
    await q.start();
    let idle = true;
    const ran: number[] = [];
    let polls = 0;
    q.subscribe<number>('gate', {
      concurrency: 2,
      idle: () => {
        polls += 1;
        return idle;
      },
      process: (n) => {
        ran.push(n);
      },
    });
    await q.publish('gate', 1);
    await waitFor(() => ran.length === 1);
    idle = false;
    const seen = polls;
    await waitFor(() => polls >= seen + 3);
    await q.publish('gate', 2);
    await q.publish('gate', 3);
    const after = polls;
    await waitFor(() => polls >= after + 3);
    expect(ran).toEqual([1]);
    idle = true;
    await waitFor(() => ran.length === 3);
  });

  it('close() aborts handlers still running at the deadline with a CLOSED reason', async () => {
    const q = queue();
    await q.start();
    const started = signal<AbortSignal>();
    const hung = signal();
    releases.push(() => hung.resolve());
    q.subscribe('stuck', {
      process: async (_p, { signal: abort }) => {
        started.resolve(abort);
        await hung.promise;
      },
    });
    await q.publish('stuck', 1);
    const abort = await within(started.promise, 2_000);
    await within(q.close({ timeout: 20 }), 2_000, 'close');
    expect(abort.aborted).toBe(true);
    expect(ClusterError.is(abort.reason, 'CLOSED')).toBe(true);
  });

  it('stats() passes the adapter counts through', async () => {
    const q = queue();
    await q.start();
    await q.publish('s', 1);
    await q.publish('s', 2, { delay: 60_000 });
    expect(await q.stats('s')).toEqual({ pending: 1, delayed: 1, inFlight: 0, deadLetters: 0 });
    const hung = signal();
    releases.push(() => hung.resolve());
    const started = signal();
    q.subscribe('s', {
      process: async () => {
        started.resolve();
        await hung.promise;
      },
    });
    await within(started.promise, 2_000);
    expect(await q.stats('s')).toEqual({ pending: 0, delayed: 1, inFlight: 1, deadLetters: 0 });
  });
});

describe('createMemoryQueue', () => {
  const task = (id: string, extra: Record<string, unknown> = {}) => ({
    id,
    payload: JSON.stringify(id),
    maxRetries: 0,
    timeout: 1_000,
    delay: 0,
    dedupe: true,
    ...extra,
  });

  it('declares its capabilities', () => {
    expect(createMemoryQueue().capabilities).toMatchObject({
      durable: false,
      crossProcess: false,
      delivery: 'at-least-once',
      delayed: true,
      deadLetter: true,
      dedupe: 'pending',
      redelivery: true,
      visibilityTimeoutMs: 30_000,
      maxPayloadBytes: 1024 * 1024,
    });
    expect(createMemoryQueue({ dedupeWindow: 500 }).capabilities).toMatchObject({
      dedupe: 'window',
      dedupeWindowMs: 500,
    });
  });

  it('validates its options', () => {
    for (const bad of [{ visibilityTimeout: 0 }, { dedupeWindow: -1 }, { hub: {} }]) {
      expect(() => createMemoryQueue(bad as never)).toThrow(code('INVALID_ARGUMENT'));
    }
  });

  it('needs connect() first and rejects everything with CLOSED after close()', async () => {
    const adapter = createMemoryQueue();
    await expect(adapter.publish('ch', task('a'))).rejects.toEqual(code('NOT_STARTED'));
    await adapter.connect();
    await adapter.close();
    await adapter.close();
    await expect(adapter.publish('ch', task('a'))).rejects.toEqual(code('CLOSED'));
    await expect(adapter.connect()).rejects.toEqual(code('CLOSED'));
    await expect(adapter.stats('ch')).rejects.toEqual(code('CLOSED'));
  });

  it('validates publish requests and consumer options', async () => {
    const adapter = track(createMemoryQueue());
    await adapter.connect();
    for (const bad of [
      task(''),
      task('a', { payload: 1 }),
      task('a', { maxRetries: -1 }),
      task('a', { timeout: 0 }),
      task('a', { delay: -1 }),
      task('a', { dedupe: 'yes' }),
    ]) {
      await expect(adapter.publish('ch', bad as never)).rejects.toEqual(code('INVALID_ARGUMENT'));
    }
    await expect(adapter.publish('ch', task('a', { payload: 'x'.repeat(1024 * 1024 + 1) }))).rejects.toEqual(
      code('PAYLOAD_TOO_LARGE'),
    );
    await expect(adapter.consume('ch', { concurrency: 0, deliver: () => {} })).rejects.toEqual(
      code('INVALID_ARGUMENT'),
    );
    expect(await adapter.stats('ch')).toEqual({ pending: 0, delayed: 0, inFlight: 0, deadLetters: 0 });
  });

  it('hands tasks out in turn to consumers with free capacity, never beyond their concurrency', async () => {
    const hub = createMemoryHub();
    const a = track(createMemoryQueue({ hub }));
    const b = track(createMemoryQueue({ hub }));
    await a.connect();
    await b.connect();
    const got: { who: string; delivery: QueueDelivery }[] = [];
    await a.consume('ch', { concurrency: 2, deliver: (delivery) => got.push({ who: 'a', delivery }) });
    await b.consume('ch', { concurrency: 1, deliver: (delivery) => got.push({ who: 'b', delivery }) });
    for (const id of ['1', '2', '3', '4', '5']) await a.publish('ch', task(id));
    await waitFor(() => got.length === 3);
    await new Promise((r) => setImmediate(r));
    expect(got.map((g) => g.who).sort()).toEqual(['a', 'a', 'b']);
    expect(await a.stats('ch')).toMatchObject({ pending: 2, inFlight: 3 });
    expect(await got.find((g) => g.who === 'b')!.delivery.ack()).toBe(true);
    await waitFor(() => got.length === 4);
    expect(got[3]!.who).toBe('b');
  });

  it('dedupes by id while the task lives, and within the window in window mode', async () => {
    const pending = track(createMemoryQueue());
    await pending.connect();
    expect(await pending.publish('ch', task('x'))).toEqual({ id: 'x', duplicate: false });
    expect(await pending.publish('ch', task('x', { delay: 10 }))).toEqual({ id: 'x', duplicate: true });
    expect(await pending.publish('ch', task('x', { dedupe: false }))).toEqual({ id: 'x', duplicate: false });
    expect((await pending.stats('ch')).pending).toBe(2);

    const windowed = track(createMemoryQueue({ dedupeWindow: 50 }));
    await windowed.connect();
    const delivered = signal<QueueDelivery>();
    await windowed.consume('ch', { concurrency: 1, deliver: (d) => delivered.resolve(d) });
    expect((await windowed.publish('ch', task('w'))).duplicate).toBe(false);
    expect(await (await delivered.promise).ack()).toBe(true);
    // Done, but still inside the window.
    expect((await windowed.publish('ch', task('w'))).duplicate).toBe(true);
    // Publishing is accepted again once the window has passed (a duplicate publish changes nothing).
    const windowStart = Date.now();
    await waitFor(async () => !(await windowed.publish('ch', task('w'))).duplicate, { timeout: 5_000 });
    expect(Date.now() - windowStart).toBeGreaterThanOrEqual(40);
  });

  it('hands unsettled deliveries back at once when an adapter closes; their late settlements are ignored', async () => {
    const hub = createMemoryHub();
    const leaving = createMemoryQueue({ hub });
    const staying = track(createMemoryQueue({ hub }));
    await leaving.connect();
    await staying.connect();
    const first = signal<QueueDelivery>();
    await leaving.consume('ch', { concurrency: 1, deliver: (d) => first.resolve(d) });
    await staying.publish('ch', task('t'));
    const stale = await within(first.promise, 2_000);
    await leaving.close();
    expect(await staying.stats('ch')).toMatchObject({ pending: 1, inFlight: 0 });
    const second = signal<QueueDelivery>();
    await staying.consume('ch', { concurrency: 1, deliver: (d) => second.resolve(d) });
    const fresh = await within(second.promise, 2_000);
    expect(fresh.attempt).toBe(2);
    expect(await stale.ack()).toBe(false);
    expect(await fresh.ack()).toBe(true);
    expect(await staying.stats('ch')).toEqual({ pending: 0, delayed: 0, inFlight: 0, deadLetters: 0 });
  });

  it('keeps a consumer slot taken until it settles, even after its claim expired', async () => {
    const adapter = track(createMemoryQueue({ visibilityTimeout: 30 }));
    await adapter.connect();
    const got: QueueDelivery[] = [];
    await adapter.consume('ch', { concurrency: 1, deliver: (d) => got.push(d) });
    await adapter.publish('ch', task('t'));
    await waitFor(() => got.length === 1);
    await waitFor(async () => (await adapter.stats('ch')).pending === 1);
    expect(got).toHaveLength(1);
    expect(await got[0]!.ack()).toBe(false);
    await waitFor(() => got.length === 2);
    expect(got[1]!.attempt).toBe(2);
  });

  it('replays dead letters as fresh tasks, except ids that are live again', async () => {
    const adapter = track(createMemoryQueue());
    await adapter.connect();
    const got: QueueDelivery[] = [];
    const consumer = await adapter.consume('ch', { concurrency: 5, deliver: (d) => got.push(d) });
    await adapter.publish('ch', task('a'));
    await adapter.publish('ch', task('b'));
    await waitFor(() => got.length === 2);
    for (const d of got.splice(0)) expect(await d.deadLetter('bad')).toBe(true);
    consumer.pause();
    expect((await adapter.listDeadLetters('ch')).map((r) => r.id)).toEqual(['a', 'b']);
    await adapter.publish('ch', task('b'));
    expect(await adapter.replayDeadLetters('ch')).toBe(1);
    expect((await adapter.listDeadLetters('ch')).map((r) => r.id)).toEqual(['b']);
    expect(await adapter.stats('ch')).toMatchObject({ pending: 2, deadLetters: 1 });
    expect(await adapter.replayDeadLetters('ch', ['missing'])).toBe(0);
    expect(await adapter.purgeDeadLetters('ch', ['b', 'b'])).toBe(1);
  });

  it('accepts delays longer than one timer can hold', async () => {
    const adapter = track(createMemoryQueue());
    await adapter.connect();
    await adapter.publish('ch', task('far', { delay: 3_000_000_000 }));
    expect(await adapter.stats('ch')).toMatchObject({ pending: 0, delayed: 1 });
  });
});

describe('poison guard', () => {
  it('dead-letters a task whose consumers keep dying, after maxRetries + 1 + maxLostDeliveries deliveries', async () => {
    const { createMemoryHub, createMemoryQueue, EventQueue } = await import('@cluster/core');
    const { waitFor } = await import('@cluster/testkit');
    const hub = createMemoryHub();
    const options = { appName: 'poison', maxLostDeliveries: 2 };
    const producer = new EventQueue({
      ...options,
      adapter: createMemoryQueue({ hub, visibilityTimeout: 40 }),
    });
    await producer.start();
    // A consumer that "dies" on every delivery: it never settles, so each claim expires and the task moves on.
    const dyingAdapter = createMemoryQueue({ hub, visibilityTimeout: 40 });
    await dyingAdapter.connect();
    const attempts: number[] = [];
    const dying = await dyingAdapter.consume(producer.getFullChannel('ch'), {
      concurrency: 4,
      deliver: (delivery) => void attempts.push(delivery.attempt),
    });
    await producer.publish('ch', { kill: true }, { maxRetries: 1 });
    await waitFor(() => attempts.length === 4, { timeout: 10_000 });
    expect(attempts).toEqual([1, 2, 3, 4]);
    // Its 4 slots are now held, so the next delivery (the 5th = maxRetries 1 + 1 + 2 lost) goes to a live
    // EventQueue, which must dead-letter it unrun.
    let ran = false;
    const live = new EventQueue({ ...options, adapter: createMemoryQueue({ hub, visibilityTimeout: 40 }) });
    live.subscribe('ch', { process: () => void (ran = true) });
    await live.start();
    await waitFor(async () => (await live.deadLetters.list('ch')).length === 1, { timeout: 10_000 });
    const [letter] = await live.deadLetters.list('ch');
    expect(letter!.error).toMatch(/without completing/);
    expect(letter!.attempts).toBe(5);
    expect(ran).toBe(false);
    await dying.close();
    await dyingAdapter.close();
    await live.close({ timeout: 10 });
    await producer.close({ timeout: 10 });
  });
});
