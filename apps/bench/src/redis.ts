/**
 * The Redis suite: @cluster/core on @cluster/adapter-redis side by side with raw ioredis, keyv +
 * @keyv/redis, cache-manager 7, BullMQ and redis-semaphore, in one process against one Redis server
 * (REDIS_URL, default redis://127.0.0.1:6379). Every key this run writes carries a unique run id, and
 * is deleted at the end with SCAN + UNLINK on that id; nothing ever runs FLUSHALL / FLUSHDB.
 */
import { randomBytes } from 'node:crypto';
import process from 'node:process';
import type { Cluster } from '@cluster/core';
import type { Redis } from 'ioredis';
import {
  checkFigure,
  checkTarget,
  compareContended,
  compareThroughput,
  contendedRows,
  fmt,
  type Loaded,
  loadPeer,
  machineInfo,
  median,
  nowNs,
  peerInfo,
  Recorder,
  type ReportRow,
  ratioColumn,
  type Scenario,
  type SuiteReport,
  sinceMs,
  type TargetCheck,
  throughputColumns,
  throughputRows,
} from './harness.js';

// ---------------------------------------------------------------------------------------------
// Settings (tuned for well under 3 minutes on 2 cores)
// ---------------------------------------------------------------------------------------------

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
/** Part of every key, channel and queue name of this run; the clean-up deletes `*<RUN_ID>*`. */
const RUN_ID = `bench${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;

const CACHE_KEYS = 1_000;
const SEQ = { warmupOps: 1_000, rounds: 7, opsPerRound: 20_000, sampleEvery: 4, maxRoundMs: 600 };
const CONCURRENT = { callers: 50, opsPerRound: 10_000, warmupOps: 2_000, rounds: 3 };
const PUBSUB = { burst: 20_000, sequential: 5_000, rounds: 3, warmup: 10_000, timeoutMs: 20_000 };
const QUEUE = { jobs: 10_000, chunk: 1_000, rounds: { 50: 2, 1: 1 }, pickups: 200, pickupWarmup: 20 };
const LOCK_TTL = 10_000;
const LOCK_CONTENDED = { callers: 50, opsPerRound: 5_000, warmupOps: 500, rounds: 2 };
const STAMPEDE = { instances: 4, keys: 50, callersPerInstance: 25, loaderMs: 5 };

const SEQ_METHOD = `${SEQ.rounds} rounds of up to ${SEQ.opsPerRound.toLocaleString('en-US')} ops or ${SEQ.maxRoundMs} ms after up to ${SEQ.warmupOps.toLocaleString('en-US')} warm-up ops; one caller, every op awaited before the next; rounds interleaved; ops/s = median round; latency on every ${SEQ.sampleEvery}th op`;
const CONCURRENT_METHOD = `${CONCURRENT.callers} callers in flight sharing ${CONCURRENT.opsPerRound.toLocaleString('en-US')} ops per round, ${CONCURRENT.rounds} rounds after ${CONCURRENT.warmupOps.toLocaleString('en-US')} warm-up ops; p50/p99 = latency of one op under that load`;

const OURS = '@cluster/adapter-redis';

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

interface Value {
  id: number;
  name: string;
  tags: string[];
  at: number;
}

function makeValue(id: number): Value {
  return { id, name: `user-${id}`, tags: ['admin', 'editor', `team-${id % 7}`], at: Date.now() };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function label(loaded: Loaded<unknown>, suffix = ''): string {
  return `${loaded.name}${loaded.version ? `@${loaded.version}` : ''} ${suffix}`.trim();
}

function unavailableRow(impl: string, reason: string, status?: 'failed'): ReportRow {
  return { impl, available: false, reason, metrics: {}, ...(status && { status }) };
}

/** ioredis connection fields from REDIS_URL, for libraries that want options rather than a URL. */
function redisOptionsFromUrl(url: string): {
  host: string;
  port: number;
  db?: number;
  username?: string;
  password?: string;
  tls?: object;
} {
  const u = new URL(url);
  const db = Number(u.pathname.replace(/^\//, ''));
  return {
    host: u.hostname || '127.0.0.1',
    port: Number(u.port || 6379),
    ...(Number.isInteger(db) && db > 0 && { db }),
    ...(u.username && { username: decodeURIComponent(u.username) }),
    ...(u.password && { password: decodeURIComponent(u.password) }),
    ...(u.protocol === 'rediss:' && { tls: {} }),
  };
}

async function newIoredis(): Promise<Redis> {
  const { Redis } = await import('ioredis');
  const client = new Redis(REDIS_URL, { lazyConnect: true });
  client.on('error', () => {});
  await client.connect();
  return client;
}

/** Resolves when `check()` is true, polling every `everyMs`; false after `timeoutMs`. */
async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 10) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > end) return false;
    await sleep(everyMs);
  }
}

/** A scenario that throws is reported as failed (with the error) instead of ending the run. */
async function guard(
  id: string,
  title: string,
  impls: string[],
  run: () => Promise<Scenario>,
): Promise<Scenario> {
  try {
    return await run();
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return {
      id,
      title: `${title} (FAILED)`,
      columns: [{ key: 'error', label: 'error' }],
      rows: [unavailableRow(impls.join(', ') || '-', reason, 'failed')],
      notes: [],
    };
  }
}

function metric(s: Scenario | undefined, impl: string | undefined, key: string): number | null {
  const v = s?.rows.find((r) => r.impl === impl && r.available)?.metrics[key];
  return typeof v === 'number' ? v : null;
}

/** Why a figure is missing: the row's reason, or the scenario's failure. */
function missing(s: Scenario | undefined, impl: string | undefined): string | undefined {
  if (s === undefined) return 'scenario not run';
  const row = s.rows.find((r) => r.impl === impl);
  if (row && !row.available) return `${row.impl}: ${row.reason ?? 'unavailable'}`;
  const failed = s.rows.find((r) => r.status === 'failed');
  return failed ? `scenario failed: ${failed.reason}` : undefined;
}

// ---------------------------------------------------------------------------------------------
// 1. cache set + get
// ---------------------------------------------------------------------------------------------

interface KvImpl {
  name: string;
  set(key: string, value: Value): Promise<unknown>;
  get(key: string): Promise<Value | undefined>;
  close(): Promise<void>;
}

async function smokeKv(impl: KvImpl): Promise<void> {
  const v = makeValue(7);
  await impl.set('smoke', v);
  const got = await impl.get('smoke');
  if (got?.id !== v.id || got.tags.length !== v.tags.length) throw new Error('set/get round trip failed');
}

async function loadOursKv(): Promise<Loaded<KvImpl>> {
  const loaded = await loadPeer(OURS, async () => {
    const { createCluster } = await import('@cluster/core');
    const { createRedisCacheStore } = await import('@cluster/adapter-redis');
    const app = createCluster({
      name: 'bench',
      cache: {
        defaultStore: 'redis',
        stores: { redis: createRedisCacheStore({ url: REDIS_URL, keyPrefix: RUN_ID }) },
      },
    });
    await app.start();
    const cache = await app.cacheManager.createCache({ name: 'setget' });
    const impl: KvImpl = {
      name: '',
      set: (k, v) => cache.set(k, v),
      get: (k) => cache.get<Value>(k),
      close: () => app.stop(),
    };
    await smokeKv(impl);
    return impl;
  });
  if (loaded.available) loaded.value.name = 'ours: core cache + createRedisCacheStore';
  return loaded;
}

async function loadRawKv(): Promise<Loaded<KvImpl>> {
  const loaded = await loadPeer('ioredis', async () => {
    const client = await newIoredis();
    const prefix = `${RUN_ID}:raw:`;
    const impl: KvImpl = {
      name: '',
      set: (k, v) => client.set(prefix + k, JSON.stringify(v)),
      async get(k) {
        const text = await client.get(prefix + k);
        return text === null ? undefined : (JSON.parse(text) as Value);
      },
      close: async () => {
        await client.quit();
      },
    };
    await smokeKv(impl);
    return impl;
  });
  if (loaded.available) loaded.value.name = label(loaded, 'raw SET/GET + JSON');
  return loaded;
}

async function loadKeyvKv(): Promise<Loaded<KvImpl>> {
  const loaded = await loadPeer('keyv', async () => {
    const { createKeyv } = await import('@keyv/redis');
    const keyv = createKeyv(REDIS_URL, { namespace: `${RUN_ID}-keyv` });
    keyv.on('error', () => {});
    const impl: KvImpl = {
      name: '',
      set: (k, v) => keyv.set(k, v),
      get: (k) => keyv.get<Value>(k),
      close: () => keyv.disconnect(),
    };
    await smokeKv(impl);
    return impl;
  });
  if (loaded.available) loaded.value.name = label(loaded, `+ @keyv/redis@${keyvRedisVersion()}`);
  return loaded;
}

async function loadCacheManagerKv(): Promise<Loaded<KvImpl>> {
  const loaded = await loadPeer('cache-manager', async () => {
    const { createCache } = await import('cache-manager');
    const { createKeyv } = await import('@keyv/redis');
    const cache = createCache({ stores: [createKeyv(REDIS_URL, { namespace: `${RUN_ID}-cm` })] });
    const impl: KvImpl = {
      name: '',
      set: (k, v) => cache.set(k, v),
      async get(k) {
        return (await cache.get<Value>(k)) ?? undefined;
      },
      close: async () => {
        await cache.disconnect();
      },
    };
    await smokeKv(impl);
    return impl;
  });
  if (loaded.available) loaded.value.name = label(loaded, `+ @keyv/redis@${keyvRedisVersion()}`);
  return loaded;
}

let keyvRedis: Loaded<unknown> | undefined;
function keyvRedisVersion(): string {
  return keyvRedis?.version ?? '?';
}

function kvCases(impls: KvImpl[], wrong: Map<string, number>) {
  const values = Array.from({ length: CACHE_KEYS }, (_, i) => makeValue(i));
  const keys = values.map((_, i) => `user:${i}`);
  return impls.map((impl) => {
    wrong.set(impl.name, 0);
    return {
      impl,
      async op(i: number) {
        const n = i % CACHE_KEYS;
        const key = keys[n]!;
        await impl.set(key, values[n]!);
        const got = await impl.get(key);
        if (got?.id !== n) wrong.set(impl.name, (wrong.get(impl.name) ?? 0) + 1);
      },
    };
  });
}

async function cacheSequential(impls: KvImpl[], skipped: ReportRow[], oursName?: string): Promise<Scenario> {
  const wrong = new Map<string, number>();
  const cases = kvCases(impls, wrong).map((c) => ({ name: c.impl.name, op: c.op }));
  const results = await compareThroughput(cases, SEQ);
  const rows = throughputRows(results, oursName);
  for (const row of rows) row.metrics.wrongReads = wrong.get(row.impl) ?? 0;
  return {
    id: 'redis.cache.setget',
    title: `1a. cache set+get over Redis, small object, ${CACHE_KEYS.toLocaleString('en-US')} keys, sequential (1 op = set + get, 2 round trips)`,
    columns: [...throughputColumns, { key: 'wrongReads', label: 'bad reads', format: fmt.int }],
    rows: [...rows, ...skipped],
    notes: [
      SEQ_METHOD,
      "ours: createCluster({ cache: { defaultStore: 'redis', stores: { redis: createRedisCacheStore() } } }), cacheManager.createCache(); tagged-JSON serializer, key namespacing, a command timeout on every call",
      'raw ioredis: default client options, SET/GET of JSON.stringify / JSON.parse (the floor: no namespacing, no timeouts, no error mapping)',
      'keyv and cache-manager 7 use @keyv/redis, which runs on node-redis (@redis/client), not ioredis: the client library differs too',
    ],
    raw: results,
  };
}

async function cacheConcurrent(impls: KvImpl[], skipped: ReportRow[], oursName?: string): Promise<Scenario> {
  const wrong = new Map<string, number>();
  const cases = kvCases(impls, wrong).map((c) => ({
    name: c.impl.name,
    async op(caller: number, calledAt: number, latency: Recorder) {
      await c.op(caller * 997 + (calledAt % 1_000));
      latency.record(nowNs() - calledAt);
    },
  }));
  const results = await compareContended(cases, CONCURRENT);
  const ours = results.find((r) => r.name === oursName);
  const rows: ReportRow[] = results.map((r) => ({
    impl: r.name,
    available: true,
    metrics: {
      opsPerSec: r.opsPerSec,
      p50Us: r.wait.p50Us,
      p99Us: r.wait.p99Us,
      totalOps: r.totalOps,
      wrongReads: wrong.get(r.name) ?? 0,
      oursOverThis: ours ? ours.opsPerSec / r.opsPerSec : null,
    },
  }));
  return {
    id: 'redis.cache.setget.concurrent',
    title: `1b. cache set+get over Redis, ${CONCURRENT.callers} ops in flight`,
    columns: [...throughputColumns, { key: 'wrongReads', label: 'bad reads', format: fmt.int }],
    rows: [...rows, ...skipped],
    notes: [
      CONCURRENT_METHOD,
      'bad reads can be non-zero here for any implementation: two callers may write the same key at once',
    ],
    raw: results,
  };
}

// ---------------------------------------------------------------------------------------------
// 2. pub/sub throughput
// ---------------------------------------------------------------------------------------------

type Receiver = (round: number, seq: number, sentAt: number) => void;

interface PubSubImpl {
  name: string;
  /** Where received messages go; replaced per round. */
  receiver: Receiver;
  publish(round: number, seq: number, sentAt: number): Promise<unknown>;
  close(): Promise<void>;
}

interface Tick {
  r: number;
  s: number;
  t: number;
}

async function loadOursPubSub(): Promise<Loaded<PubSubImpl>> {
  const loaded = await loadPeer(OURS, async () => {
    const { createCluster } = await import('@cluster/core');
    const { createRedisPubSub } = await import('@cluster/adapter-redis');
    // Two instances of one app, each with its own adapter (so its own connections), as two processes.
    const make = (instanceId: string) =>
      createCluster({
        name: 'bench-ps',
        instanceId,
        pubSub: { adapter: createRedisPubSub({ url: REDIS_URL, keyPrefix: RUN_ID }) },
      });
    const publisher = make('publisher');
    const subscriber = make('subscriber');
    await Promise.all([publisher.start(), subscriber.start()]);
    const impl: PubSubImpl = {
      name: '',
      receiver: () => {},
      publish: (r, s, t) => publisher.pubSubManager.publish('tick', { r, s, t } satisfies Tick),
      close: async () => {
        await Promise.all([publisher.stop(), subscriber.stop()]);
      },
    };
    await subscriber.pubSubManager.subscribe('tick', (m: Tick) => impl.receiver(m.r, m.s, m.t));
    return impl;
  });
  if (loaded.available) loaded.value.name = 'ours: PubSubManager + createRedisPubSub';
  return loaded;
}

async function loadRawPubSub(): Promise<Loaded<PubSubImpl>> {
  const loaded = await loadPeer('ioredis', async () => {
    const [pub, sub] = await Promise.all([newIoredis(), newIoredis()]);
    const channel = `${RUN_ID}:raw:tick`;
    const impl: PubSubImpl = {
      name: '',
      receiver: () => {},
      publish: (r, s, t) => pub.publish(channel, JSON.stringify({ r, s, t } satisfies Tick)),
      close: async () => {
        await Promise.all([pub.quit(), sub.quit()]);
      },
    };
    sub.on('message', (_channel: string, message: string) => {
      const m = JSON.parse(message) as Tick;
      impl.receiver(m.r, m.s, m.t);
    });
    await sub.subscribe(channel);
    return impl;
  });
  if (loaded.available) loaded.value.name = label(loaded, 'raw PUBLISH/SUBSCRIBE + JSON');
  return loaded;
}

interface PubSubRound {
  msgsPerSec: number;
  received: number;
  lost: number;
  ms: number;
}

let pubSubRoundSeq = 0;

/** One round: publish `n` messages (all in flight, or each awaited), until the last one arrives. */
async function pubSubRound(
  impl: PubSubImpl,
  n: number,
  mode: 'burst' | 'sequential',
  latency: Recorder | undefined,
): Promise<PubSubRound> {
  const round = ++pubSubRoundSeq;
  let received = 0;
  let lastAt = 0;
  let done!: () => void;
  const all = new Promise<void>((resolve) => {
    done = resolve;
  });
  impl.receiver = (r, s, t) => {
    if (r !== round) return;
    const now = nowNs();
    received++;
    lastAt = now;
    if (latency && s % 4 === 0) latency.record(now - t);
    if (received === n) done();
  };
  const t0 = nowNs();
  if (mode === 'burst') {
    const sent: Promise<unknown>[] = new Array(n);
    for (let s = 0; s < n; s++) sent[s] = impl.publish(round, s, nowNs());
    await Promise.all(sent);
  } else {
    for (let s = 0; s < n; s++) await impl.publish(round, s, nowNs());
  }
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([all, new Promise<void>((resolve) => (timer = setTimeout(resolve, PUBSUB.timeoutMs)))]);
  clearTimeout(timer);
  impl.receiver = () => {};
  const ms = ((received === n ? lastAt : nowNs()) - t0) / 1e6;
  return { msgsPerSec: received / (ms / 1000), received, lost: n - received, ms };
}

interface PubSubResult {
  name: string;
  mode: 'burst' | 'sequential';
  messages: number;
  msgsPerSec: number;
  rounds: PubSubRound[];
  lost: number;
  latency: ReturnType<Recorder['stats']>;
}

async function pubSubThroughput(
  impls: PubSubImpl[],
  skipped: ReportRow[],
  oursName?: string,
): Promise<Scenario> {
  const results: PubSubResult[] = [];
  for (const mode of ['burst', 'sequential'] as const) {
    const n = mode === 'burst' ? PUBSUB.burst : PUBSUB.sequential;
    const state = impls.map((impl) => ({ impl, rounds: [] as PubSubRound[], latency: new Recorder() }));
    for (const s of state) await pubSubRound(s.impl, PUBSUB.warmup, mode, undefined);
    for (let round = 0; round < PUBSUB.rounds; round++) {
      for (let k = 0; k < state.length; k++) {
        const s = state[(round + k) % state.length]!;
        (globalThis as { gc?: () => void }).gc?.();
        s.rounds.push(await pubSubRound(s.impl, n, mode, s.latency));
      }
    }
    for (const s of state) {
      results.push({
        name: s.impl.name,
        mode,
        messages: n,
        msgsPerSec: median(s.rounds.map((r) => r.msgsPerSec)),
        rounds: s.rounds,
        lost: s.rounds.reduce((a, r) => a + r.lost, 0),
        latency: s.latency.stats(),
      });
    }
  }
  const rows: ReportRow[] = results.map((r) => {
    const ours = results.find((o) => o.name === oursName && o.mode === r.mode);
    return {
      impl: `${r.name} [${r.mode}]`,
      available: true,
      metrics: {
        msgsPerSec: r.msgsPerSec,
        latencyP50Us: r.latency.p50Us,
        latencyP99Us: r.latency.p99Us,
        lost: r.lost,
        messages: r.messages * r.rounds.length,
        oursOverThis: ours ? ours.msgsPerSec / r.msgsPerSec : null,
      },
    };
  });
  return {
    id: 'redis.pubsub',
    title: `2. pub/sub throughput, one publisher instance -> one subscriber instance (${PUBSUB.burst.toLocaleString('en-US')} msgs all in flight [burst]; ${PUBSUB.sequential.toLocaleString('en-US')} msgs each awaited [sequential])`,
    columns: [
      { key: 'msgsPerSec', label: 'msgs/s', format: fmt.ops },
      { key: 'latencyP50Us', label: 'deliv p50 µs', format: fmt.us },
      { key: 'latencyP99Us', label: 'deliv p99 µs', format: fmt.us },
      { key: 'lost', label: 'lost', format: fmt.int },
      { key: 'messages', label: 'msgs', format: fmt.int },
      ratioColumn(),
    ],
    rows: [...rows, ...skipped],
    notes: [
      `msgs/s = messages / (first publish call -> last message received), median of ${PUBSUB.rounds} interleaved rounds after a ${PUBSUB.warmup.toLocaleString('en-US')}-message warm-up; deliv = publish call -> handler, every 4th message`,
      "ours: two createCluster instances of one app, each with its own createRedisPubSub; payload { r, s, t } through core's serializer plus the publisher-id envelope; raw: two ioredis clients, JSON.stringify / JSON.parse of the same payload",
    ],
    raw: results,
  };
}

// ---------------------------------------------------------------------------------------------
// 3. queue end-to-end and pickup latency
// ---------------------------------------------------------------------------------------------

type JobHandler = (i: number) => void;

interface QueueImpl {
  name: string;
  /** Starts a consumer of `channel`; every job calls `handler(i)` when it starts. Ready when resolved. */
  consume(channel: string, concurrency: number, handler: JobHandler): Promise<void>;
  /** Enqueues jobs first..first+count-1, as fast as the library allows. */
  publishMany(channel: string, first: number, count: number): Promise<void>;
  publishOne(channel: string, i: number): Promise<unknown>;
  /** Resolves once nothing is waiting or running on `channel` (false after the timeout). */
  drained(channel: string, timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
}

async function loadOursQueue(): Promise<Loaded<QueueImpl>> {
  const loaded = await loadPeer(OURS, async () => {
    const { createCluster } = await import('@cluster/core');
    const { createRedisQueue } = await import('@cluster/adapter-redis');
    // A producer instance and a consumer instance (as BullMQ's Queue and Worker), own connections each.
    const make = (instanceId: string) =>
      createCluster({
        name: 'bench-q',
        instanceId,
        queue: { adapter: createRedisQueue({ url: REDIS_URL, keyPrefix: RUN_ID }) },
      });
    const producer = make('producer');
    const consumer = make('consumer');
    await Promise.all([producer.start(), consumer.start()]);
    const impl: QueueImpl = {
      name: '',
      async consume(channel, concurrency, handler) {
        let ready!: () => void;
        const first = new Promise<void>((resolve) => {
          ready = resolve;
        });
        consumer.eventQueue.subscribe(channel, {
          concurrency,
          process: (payload: { i: number }) => {
            if (payload.i < 0) ready();
            else handler(payload.i);
          },
        });
        // subscribe() starts consuming in the background: wait until a first job went through.
        await producer.eventQueue.publish(channel, { i: -1 });
        await first;
      },
      async publishMany(channel, first, count) {
        for (let start = first; start < first + count; start += QUEUE.chunk) {
          const end = Math.min(first + count, start + QUEUE.chunk);
          const sent: Promise<unknown>[] = [];
          for (let i = start; i < end; i++) sent.push(producer.eventQueue.publish(channel, { i }));
          await Promise.all(sent);
        }
      },
      publishOne: (channel, i) => producer.eventQueue.publish(channel, { i }),
      drained: (channel, timeoutMs) =>
        waitFor(
          async () => {
            const s = await producer.eventQueue.stats(channel);
            return s.pending + s.inFlight + s.delayed === 0;
          },
          timeoutMs,
          20,
        ),
      close: async () => {
        await Promise.all([consumer.stop(), producer.stop()]);
      },
    };
    return impl;
  });
  if (loaded.available) loaded.value.name = 'ours: EventQueue + createRedisQueue';
  return loaded;
}

async function loadBullmq(): Promise<Loaded<QueueImpl>> {
  const loaded = await loadPeer('bullmq', async () => {
    const { Queue, Worker } = await import('bullmq');
    // BullMQ's production advice: maxRetriesPerRequest null (required for workers), auto-removal of
    // finished jobs. Its own key prefix keeps the run's keys apart.
    const connection = { ...redisOptionsFromUrl(REDIS_URL), maxRetriesPerRequest: null };
    const prefix = `${RUN_ID}-bull`;
    const defaultJobOptions = { removeOnComplete: true, removeOnFail: 1_000 };
    const queues = new Map<string, InstanceType<typeof Queue>>();
    const workers: { close(): Promise<void> }[] = [];
    const queueOf = (channel: string) => {
      let q = queues.get(channel);
      if (!q) {
        q = new Queue(channel, { connection, prefix, defaultJobOptions });
        q.on('error', () => {});
        queues.set(channel, q);
      }
      return q;
    };
    const impl: QueueImpl = {
      name: '',
      async consume(channel, concurrency, handler) {
        const queue = queueOf(channel);
        await queue.waitUntilReady();
        let ready!: () => void;
        const first = new Promise<void>((resolve) => {
          ready = resolve;
        });
        const worker = new Worker(
          channel,
          async (job) => {
            const i = (job.data as { i: number }).i;
            if (i < 0) ready();
            else handler(i);
          },
          { connection, prefix, concurrency },
        );
        worker.on('error', () => {});
        workers.push(worker);
        await worker.waitUntilReady();
        await queue.add('job', { i: -1 });
        await first;
      },
      async publishMany(channel, first, count) {
        const queue = queueOf(channel);
        for (let start = first; start < first + count; start += QUEUE.chunk) {
          const end = Math.min(first + count, start + QUEUE.chunk);
          const jobs = [];
          for (let i = start; i < end; i++) jobs.push({ name: 'job', data: { i } });
          await queue.addBulk(jobs);
        }
      },
      publishOne: (channel, i) => queueOf(channel).add('job', { i }),
      drained: (channel, timeoutMs) =>
        waitFor(
          async () => {
            const c = await queueOf(channel).getJobCounts('wait', 'active', 'delayed', 'prioritized');
            return Object.values(c).every((v) => v === 0);
          },
          timeoutMs,
          20,
        ),
      close: async () => {
        await Promise.all(workers.map((w) => w.close()));
        for (const q of queues.values()) {
          await q.obliterate({ force: true }).catch(() => {});
          await q.close();
        }
      },
    };
    return impl;
  });
  if (loaded.available) loaded.value.name = label(loaded, 'Queue.addBulk + Worker');
  return loaded;
}

interface QueueE2eResult {
  name: string;
  concurrency: number;
  jobs: number;
  jobsPerSec: number;
  roundJobsPerSec: number[];
  roundMs: number[];
  publishMs: number[];
  cpuUsPerJob: number[];
  drainedMs: number[];
  missing: number;
}

/** One round: every job published at t0 (consumer idle and ready), until the last one started. */
async function queueRound(
  impl: QueueImpl,
  channel: string,
  handlerRef: { fn: JobHandler },
  first: number,
  jobs: number,
): Promise<{ ms: number; publishMs: number; cpuUsPerJob: number; drainedMs: number; missing: number }> {
  let seen = 0;
  let lastAt = 0;
  let done!: () => void;
  const all = new Promise<void>((resolve) => {
    done = resolve;
  });
  handlerRef.fn = (i) => {
    if (i < first || i >= first + jobs) return;
    seen++;
    lastAt = nowNs();
    if (seen === jobs) done();
  };
  const cpu0 = process.cpuUsage();
  const t0 = nowNs();
  await impl.publishMany(channel, first, jobs);
  const publishMs = sinceMs(t0);
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([all, new Promise<void>((resolve) => (timer = setTimeout(resolve, 60_000)))]);
  clearTimeout(timer);
  const ms = ((seen === jobs ? lastAt : nowNs()) - t0) / 1e6;
  const cpu = process.cpuUsage(cpu0);
  const d0 = nowNs();
  await impl.drained(channel, 10_000);
  return {
    ms,
    publishMs,
    cpuUsPerJob: (cpu.user + cpu.system) / jobs,
    drainedMs: sinceMs(d0),
    missing: jobs - seen,
  };
}

async function queueEndToEnd(
  impls: QueueImpl[],
  skipped: ReportRow[],
  oursName: string | undefined,
  log: (line: string) => void,
): Promise<Scenario> {
  const results: QueueE2eResult[] = [];
  for (const concurrency of [50, 1] as const) {
    const channel = `e2e-c${concurrency}`;
    const state = [];
    for (const impl of impls) {
      const handlerRef: { fn: JobHandler } = { fn: () => {} };
      await impl.consume(channel, concurrency, (i) => handlerRef.fn(i));
      state.push({ impl, handlerRef, next: 0, rounds: [] as Awaited<ReturnType<typeof queueRound>>[] });
    }
    // Warm-up: a few hundred jobs through each, untimed.
    for (const s of state) {
      await queueRound(s.impl, channel, s.handlerRef, s.next, 500);
      s.next += 500;
    }
    const rounds = QUEUE.rounds[concurrency];
    for (let round = 0; round < rounds; round++) {
      for (let k = 0; k < state.length; k++) {
        const s = state[(round + k) % state.length]!;
        (globalThis as { gc?: () => void }).gc?.();
        const r = await queueRound(s.impl, channel, s.handlerRef, s.next, QUEUE.jobs);
        s.next += QUEUE.jobs;
        s.rounds.push(r);
        log(
          `    c=${concurrency} ${s.impl.name}: ${Math.round(QUEUE.jobs / (r.ms / 1000))} jobs/s (${r.ms.toFixed(0)} ms)`,
        );
      }
    }
    for (const s of state) {
      const perRound = s.rounds.map((r) => (QUEUE.jobs - r.missing) / (r.ms / 1000));
      results.push({
        name: s.impl.name,
        concurrency,
        jobs: QUEUE.jobs,
        jobsPerSec: median(perRound),
        roundJobsPerSec: perRound,
        roundMs: s.rounds.map((r) => r.ms),
        publishMs: s.rounds.map((r) => r.publishMs),
        cpuUsPerJob: s.rounds.map((r) => r.cpuUsPerJob),
        drainedMs: s.rounds.map((r) => r.drainedMs),
        missing: s.rounds.reduce((a, r) => a + r.missing, 0),
      });
    }
  }
  const rows: ReportRow[] = results.map((r) => {
    const ours = results.find((o) => o.name === oursName && o.concurrency === r.concurrency);
    return {
      impl: `${r.name} [c=${r.concurrency}]`,
      available: true,
      metrics: {
        jobsPerSec: r.jobsPerSec,
        roundMs: median(r.roundMs),
        publishMs: median(r.publishMs),
        cpuUsPerJob: median(r.cpuUsPerJob),
        missing: r.missing,
        rounds: r.roundMs.length,
        oursOverThis: ours ? ours.jobsPerSec / r.jobsPerSec : null,
      },
    };
  });
  return {
    id: 'redis.queue.e2e',
    title: `3a. queue end to end, ${QUEUE.jobs.toLocaleString('en-US')} no-op jobs, consumer concurrency 50 and 1`,
    columns: [
      { key: 'jobsPerSec', label: 'jobs/s', format: fmt.ops },
      { key: 'roundMs', label: 'round ms', format: fmt.ms },
      { key: 'publishMs', label: 'published ms', format: fmt.ms },
      { key: 'cpuUsPerJob', label: 'cpu µs/job', format: fmt.us },
      { key: 'missing', label: 'missing', format: fmt.int },
      { key: 'rounds', label: 'rounds', format: fmt.int },
      ratioColumn(),
    ],
    rows: [...rows, ...skipped],
    notes: [
      `jobs/s = jobs / (first publish call -> last handler started), consumer idle and ready at t0; median of interleaved rounds (${QUEUE.rounds[50]} at c=50, ${QUEUE.rounds[1]} at c=1) after a 500-job warm-up; the queue is drained (untimed) between rounds`,
      `publishing: ours ${QUEUE.chunk} concurrent EventQueue.publish calls at a time (no bulk API); BullMQ Queue.addBulk of ${QUEUE.chunk} jobs at a time`,
      'ours: a producer and a consumer createCluster instance, each with its own createRedisQueue; at-least-once on Streams with claims, dedupe markers, visibility timeout',
      'producer and consumer share this one Node thread (as a Queue and a Worker in one app): jobs/s is bounded by the client CPU per job (published ms = until every publish call resolved; cpu µs/job = this process, user + system, over the round)',
      'BullMQ: connection { maxRetriesPerRequest: null }, defaultJobOptions { removeOnComplete: true, removeOnFail: 1000 } (its production advice), own key prefix, obliterated at the end',
    ],
    raw: results,
  };
}

async function queuePickup(impls: QueueImpl[], skipped: ReportRow[], oursName?: string): Promise<Scenario> {
  const state = [];
  for (const impl of impls) {
    const waiting = new Map<number, () => void>();
    await impl.consume('pickup', 1, (i) => waiting.get(i)?.());
    state.push({ impl, waiting, recorder: new Recorder() });
  }
  const total = QUEUE.pickupWarmup + QUEUE.pickups;
  for (let n = 0; n < total; n++) {
    for (let k = 0; k < state.length; k++) {
      const s = state[(n + k) % state.length]!;
      const started = new Promise<void>((resolve) => s.waiting.set(n, resolve));
      const t0 = nowNs();
      await Promise.all([s.impl.publishOne('pickup', n), started]);
      if (n >= QUEUE.pickupWarmup) s.recorder.record(nowNs() - t0);
      s.waiting.delete(n);
      // Let the consumer settle the job and go back to waiting, so every pickup starts idle.
      await sleep(5);
    }
  }
  const stats = state.map((s) => ({ name: s.impl.name, latency: s.recorder.stats() }));
  const ours = stats.find((r) => r.name === oursName);
  return {
    id: 'redis.queue.pickup',
    title: `3b. queue single-job pickup latency (publish one job -> its handler starts; consumer idle, concurrency 1), ${QUEUE.pickups} samples`,
    columns: [
      { key: 'p50Us', label: 'p50 µs', format: fmt.us },
      { key: 'p99Us', label: 'p99 µs', format: fmt.us },
      { key: 'meanUs', label: 'mean µs', format: fmt.us },
      { key: 'maxUs', label: 'max µs', format: fmt.us },
      { key: 'thisOverOurs', label: 'this/ours p50', format: fmt.ratio },
    ],
    rows: [
      ...stats.map((r) => ({
        impl: r.name,
        available: true,
        metrics: {
          p50Us: r.latency.p50Us,
          p99Us: r.latency.p99Us,
          meanUs: r.latency.meanUs,
          maxUs: r.latency.maxUs,
          samples: r.latency.samples,
          thisOverOurs: ours ? r.latency.p50Us / ours.latency.p50Us : null,
        },
      })),
      ...skipped,
    ],
    notes: [
      `implementations alternate sample by sample, ${QUEUE.pickupWarmup} warm-up samples each, 5 ms pause after each; this/ours p50 above 1.00x means ours picks up faster`,
    ],
    raw: stats,
  };
}

// ---------------------------------------------------------------------------------------------
// 4. lock
// ---------------------------------------------------------------------------------------------

interface LockImpl {
  name: string;
  /** Acquire `key` (waiting), call `onAcquired`, release. */
  cycle(key: string, caller: number, onAcquired?: () => void): Promise<void>;
  close(): Promise<void>;
}

async function loadOursLock(): Promise<
  Loaded<{ app: Cluster; acquireRelease: LockImpl; runExclusive: LockImpl }>
> {
  return loadPeer(OURS, async () => {
    const { createCluster } = await import('@cluster/core');
    const { createRedisLock } = await import('@cluster/adapter-redis');
    if (typeof createRedisLock !== 'function') throw new Error('createRedisLock is not exported');
    const app = createCluster({
      name: 'bench-lock',
      lock: {
        defaultAdapter: 'redis',
        adapters: { redis: createRedisLock({ url: REDIS_URL, keyPrefix: RUN_ID }) },
      },
    });
    await app.start();
    const lm = app.lockManager;
    const acquireRelease: LockImpl = {
      name: 'ours: LockManager acquire + release (createRedisLock)',
      async cycle(key, _caller, onAcquired) {
        const lock = await lm.acquire(key, { ttl: LOCK_TTL });
        onAcquired?.();
        await lock.release();
      },
      close: async () => {},
    };
    const runExclusive: LockImpl = {
      name: 'ours: LockManager runExclusive (createRedisLock)',
      async cycle(key, _caller, onAcquired) {
        await lm.runExclusive(key, () => onAcquired?.(), { ttl: LOCK_TTL });
      },
      close: async () => {},
    };
    await acquireRelease.cycle('smoke', 0);
    await runExclusive.cycle('smoke', 0);
    return { app, acquireRelease, runExclusive };
  });
}

async function loadRedisSemaphore(): Promise<Loaded<LockImpl>> {
  const loaded = await loadPeer('redis-semaphore', async () => {
    const { Mutex } = await import('redis-semaphore');
    const client = await newIoredis();
    const mutexes = new Map<string, InstanceType<typeof Mutex>>();
    // One Mutex per (key, caller): a Mutex has one identifier, so each contender needs its own.
    const mutexOf = (key: string, caller: number) => {
      const id = `${key}#${caller}`;
      let m = mutexes.get(id);
      if (!m) {
        m = new Mutex(client, `${RUN_ID}:${key}`, { lockTimeout: LOCK_TTL });
        mutexes.set(id, m);
      }
      return m;
    };
    const impl: LockImpl = {
      name: '',
      async cycle(key, caller, onAcquired) {
        const m = mutexOf(key, caller);
        await m.acquire();
        onAcquired?.();
        await m.release();
      },
      close: async () => {
        await client.quit();
      },
    };
    await impl.cycle('smoke', 0);
    return impl;
  });
  if (loaded.available) loaded.value.name = label(loaded, 'Mutex acquire + release');
  return loaded;
}

async function lockSequential(impls: LockImpl[], skipped: ReportRow[], oursName?: string): Promise<Scenario> {
  const cases = impls.map((impl, n) => ({ name: impl.name, op: () => impl.cycle(`seq-${n}`, 0) }));
  const results = await compareThroughput(cases, SEQ);
  return {
    id: 'redis.lock.sequential',
    title: `4a. lock acquire + release over Redis, sequential, one key per implementation, ttl ${LOCK_TTL} ms`,
    columns: throughputColumns,
    rows: [...throughputRows(results, oursName), ...skipped],
    notes: [
      SEQ_METHOD,
      'ours: a fencing token per grant (INCR in the acquire script), owner+token-checked release that hands the key to the next waiter in a FIFO line; runExclusive also arms a renewal timer',
      'redis-semaphore Mutex: SET NX PX, release by an owner-checked Lua DEL, a refresh interval while held; waiters poll every retryInterval (default 10 ms); one Mutex reused (its cheapest use)',
    ],
    raw: results,
  };
}

async function lockContended(
  impls: LockImpl[],
  skipped: ReportRow[],
  oursName?: string,
): Promise<Scenario & { failures: Map<string, number> }> {
  const failures = new Map<string, number>();
  const errors = new Map<string, string>();
  const cases = impls.map((impl) => {
    failures.set(impl.name, 0);
    return {
      name: impl.name,
      async op(caller: number, calledAt: number, wait: Recorder) {
        try {
          await impl.cycle('contended', caller, () => wait.record(nowNs() - calledAt));
        } catch (error) {
          failures.set(impl.name, (failures.get(impl.name) ?? 0) + 1);
          errors.set(impl.name, error instanceof Error ? error.message : String(error));
        }
      },
    };
  });
  const results = await compareContended(cases, LOCK_CONTENDED);
  const rows = contendedRows(results, oursName);
  for (const row of rows) row.metrics.failures = failures.get(row.impl) ?? 0;
  return {
    id: 'redis.lock.contended',
    title: `4b. lock, ${LOCK_CONTENDED.callers} contenders looping acquire + release on one key`,
    columns: [
      { key: 'opsPerSec', label: 'ops/s', format: fmt.ops },
      { key: 'waitP50Us', label: 'wait p50 µs', format: fmt.us },
      { key: 'waitP99Us', label: 'wait p99 µs', format: fmt.us },
      { key: 'waitMaxUs', label: 'wait max µs', format: fmt.us },
      { key: 'leastServedShare', label: 'least-served', format: fmt.share },
      { key: 'minPerCaller', label: 'min ops', format: fmt.int },
      { key: 'maxPerCaller', label: 'max ops', format: fmt.int },
      { key: 'failures', label: 'failed', format: fmt.int },
      ratioColumn(),
    ],
    rows: [...rows, ...skipped],
    notes: [
      `${LOCK_CONTENDED.rounds} rounds of ${LOCK_CONTENDED.opsPerRound.toLocaleString('en-US')} ops shared by the contenders after ${LOCK_CONTENDED.warmupOps} warm-up ops; wait = acquire call -> lock held; min/max ops per contender over the measured rounds`,
      'least-served = min ops of one contender / mean ops per contender (1.00 = perfectly fair, 0 = starvation)',
      'ours: one LockManager (one adapter, its waiters woken by pub/sub on release); redis-semaphore: one Mutex per contender on one ioredis client, default retryInterval 10 ms, acquireTimeout 10 s',
      ...[...errors].map(([name, message]) => `${name}: last failure: ${message}`),
    ],
    raw: results,
    failures,
  };
}

// ---------------------------------------------------------------------------------------------
// 5. wrap stampede over 4 instances
// ---------------------------------------------------------------------------------------------

interface WrapInstance {
  wrap(key: string, fn: () => Promise<Value>): Promise<Value>;
}

interface WrapImpl {
  name: string;
  instances: WrapInstance[];
  close(): Promise<void>;
}

async function loadOursWrap(): Promise<Loaded<WrapImpl>> {
  const loaded = await loadPeer(OURS, async () => {
    const { createCluster } = await import('@cluster/core');
    const { createRedisAdapters } = await import('@cluster/adapter-redis');
    const apps: Cluster[] = [];
    const instances: WrapInstance[] = [];
    for (let n = 0; n < STAMPEDE.instances; n++) {
      // Each instance as its own process would have it: own adapters and connections, one server.
      const redis = createRedisAdapters({ url: REDIS_URL, keyPrefix: RUN_ID });
      const app = createCluster({
        name: 'bench-wrap',
        instanceId: `wrap-${n}`,
        cache: { defaultStore: 'redis', stores: { redis: redis.cacheStore }, singleFlight: 'cluster' },
        lock: { defaultAdapter: 'redis', adapters: { redis: redis.lock } },
      });
      await app.start();
      apps.push(app);
      const cache = await app.cacheManager.createCache({ name: 'wrap' });
      instances.push({ wrap: (k, fn) => cache.wrap(k, fn) });
    }
    return {
      name: 'ours: 4 instances, singleFlight cluster, lock on Redis',
      instances,
      close: async () => {
        await Promise.all(apps.map((a) => a.stop()));
      },
    };
  });
  return loaded;
}

async function loadCacheManagerWrap(): Promise<Loaded<WrapImpl>> {
  const loaded = await loadPeer('cache-manager', async () => {
    const { createCache } = await import('cache-manager');
    const { createKeyv } = await import('@keyv/redis');
    const caches = Array.from({ length: STAMPEDE.instances }, () =>
      createCache({ stores: [createKeyv(REDIS_URL, { namespace: `${RUN_ID}-cmwrap` })] }),
    );
    return {
      name: '',
      instances: caches.map((c) => ({ wrap: (k: string, fn: () => Promise<Value>) => c.wrap(k, fn) })),
      close: async () => {
        await Promise.all(caches.map((c) => c.disconnect()));
      },
    };
  });
  if (loaded.available) loaded.value.name = label(loaded, '4 instances over @keyv/redis (reference)');
  return loaded;
}

interface StampedeResult {
  name: string;
  phase: 'one by one' | 'all at once';
  keys: number;
  callersPerKey: number;
  computes: number;
  computesPerKey: number;
  maxComputesPerKey: number;
  wrongResults: number;
  failed: number;
  totalMs: number;
  fill: ReturnType<Recorder['stats']>;
}

async function stampedeOne(impl: WrapImpl, phase: StampedeResult['phase'], tag: string) {
  const computes = new Map<number, number>();
  let wrong = 0;
  let failed = 0;
  const fill = new Recorder();
  const fillKey = async (k: number) => {
    const key = `cold:${tag}:${k}`;
    const loader = async () => {
      computes.set(k, (computes.get(k) ?? 0) + 1);
      // A real loader takes a while: the other instances' callers arrive while it is in flight.
      await sleep(STAMPEDE.loaderMs);
      return makeValue(k);
    };
    const t0 = nowNs();
    const calls: Promise<Value>[] = [];
    for (const instance of impl.instances)
      for (let c = 0; c < STAMPEDE.callersPerInstance; c++) calls.push(instance.wrap(key, loader));
    const settled = await Promise.allSettled(calls);
    fill.record(nowNs() - t0);
    for (const s of settled) {
      if (s.status === 'rejected') failed++;
      else if (s.value?.id !== k) wrong++;
    }
  };
  const t0 = nowNs();
  if (phase === 'one by one') for (let k = 0; k < STAMPEDE.keys; k++) await fillKey(k);
  else await Promise.all(Array.from({ length: STAMPEDE.keys }, (_, k) => fillKey(k)));
  const total = [...computes.values()].reduce((a, b) => a + b, 0);
  return {
    name: impl.name,
    phase,
    keys: STAMPEDE.keys,
    callersPerKey: STAMPEDE.callersPerInstance * impl.instances.length,
    computes: total,
    computesPerKey: total / STAMPEDE.keys,
    maxComputesPerKey: Math.max(0, ...computes.values()),
    wrongResults: wrong,
    failed,
    totalMs: sinceMs(t0),
    fill: fill.stats(),
  } satisfies StampedeResult;
}

async function wrapStampede(impls: WrapImpl[], skipped: ReportRow[]): Promise<Scenario> {
  const results: StampedeResult[] = [];
  for (const phase of ['one by one', 'all at once'] as const) {
    for (const [n, impl] of impls.entries()) {
      results.push(await stampedeOne(impl, phase, `${n}:${phase === 'one by one' ? 'seq' : 'par'}`));
    }
  }
  return {
    id: 'redis.cache.wrapStampede',
    title: `5. wrap stampede over ${STAMPEDE.instances} instances: ${STAMPEDE.keys} cold keys x ${STAMPEDE.callersPerInstance} callers per instance (${STAMPEDE.instances * STAMPEDE.callersPerInstance} per key)`,
    columns: [
      { key: 'computes', label: 'computes', format: fmt.int },
      {
        key: 'computesPerKey',
        label: 'per key',
        format: (v) => (typeof v === 'number' ? v.toFixed(2) : '-'),
      },
      { key: 'maxComputesPerKey', label: 'max/key', format: fmt.int },
      { key: 'wrongResults', label: 'bad values', format: fmt.int },
      { key: 'failed', label: 'failed', format: fmt.int },
      { key: 'totalMs', label: 'time ms', format: fmt.ms },
      { key: 'fillP50Us', label: 'key p50 µs', format: fmt.us },
      { key: 'fillP99Us', label: 'key p99 µs', format: fmt.us },
    ],
    rows: [
      ...results.map((r) => ({
        impl: `${r.name} [${r.phase}]`,
        available: true,
        metrics: {
          computes: r.computes,
          computesPerKey: r.computesPerKey,
          maxComputesPerKey: r.maxComputesPerKey,
          wrongResults: r.wrongResults,
          failed: r.failed,
          totalMs: r.totalMs,
          fillP50Us: r.fill.p50Us,
          fillP99Us: r.fill.p99Us,
        },
      })),
      ...skipped,
    ],
    notes: [
      `the loader counts a compute and sleeps ${STAMPEDE.loaderMs} ms; [one by one] fills the keys one after another, [all at once] fills all ${STAMPEDE.keys} at the same time; key p50/p99 = time until all callers of one key have the value`,
      'ours: 4 createCluster instances in this process, each with its own createRedisAdapters (own connections) on one server and keyPrefix; the target is 1 compute per cold key',
      'cache-manager 7 coalesces wrap() within one instance only: a reference for what happens without a cross-instance guard, no target',
    ],
    raw: results,
  };
}

// ---------------------------------------------------------------------------------------------
// Clean-up
// ---------------------------------------------------------------------------------------------

/** Deletes every key of this run (SCAN MATCH *<run id>* + UNLINK), then counts what is left. */
async function cleanUp(admin: Redis): Promise<{ deleted: number; left: number }> {
  const pattern = `*${RUN_ID}*`;
  let deleted = 0;
  for (let pass = 0; pass < 3; pass++) {
    let cursor = '0';
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', pattern, 'COUNT', 1_000);
      cursor = next;
      const mine = keys.filter((k) => k.includes(RUN_ID));
      if (mine.length > 0) deleted += await admin.unlink(...mine);
    } while (cursor !== '0');
  }
  let left = 0;
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', pattern, 'COUNT', 1_000);
    cursor = next;
    left += keys.length;
  } while (cursor !== '0');
  return { deleted, left };
}

// ---------------------------------------------------------------------------------------------
// Suite
// ---------------------------------------------------------------------------------------------

function split<T>(all: Loaded<T>[]): { ok: T[]; skipped: ReportRow[] } {
  const ok: T[] = [];
  const skipped: ReportRow[] = [];
  for (const l of all) {
    if (l.available) ok.push(l.value);
    else skipped.push(unavailableRow(label(l), l.reason));
  }
  return { ok, skipped };
}

function nameOf<T extends { name: string }>(loaded: Loaded<T>): string | undefined {
  return loaded.available ? loaded.value.name : undefined;
}

function reasonOf(loaded: Loaded<unknown>): string | undefined {
  return loaded.available ? undefined : `${loaded.name} unavailable: ${loaded.reason}`;
}

async function closeAll(items: { close(): Promise<void> }[]): Promise<void> {
  await Promise.all(items.map((i) => i.close().catch(() => {})));
}

export async function runRedisSuite(log: (line: string) => void = () => {}): Promise<SuiteReport> {
  const startedAt = new Date();
  const t0 = nowNs();
  const scenarios: Scenario[] = [];
  const targets: TargetCheck[] = [];
  const notes: string[] = [
    'ratios are ours/peer on throughput (ops/s, msgs/s, jobs/s): above 1.00x ours is faster; pickup compares p50 latency (this/ours: above 1.00x ours is faster)',
    `server ${REDIS_URL.replace(/\/\/[^@/]*@/, '//***@')}, run id ${RUN_ID} (every key of the run contains it)`,
  ];

  log(`connecting to ${REDIS_URL.replace(/\/\/[^@/]*@/, '//***@')}...`);
  const server = await loadPeer('ioredis', async () => {
    const { Redis } = await import('ioredis');
    const admin = new Redis(REDIS_URL, {
      lazyConnect: true,
      connectTimeout: 3_000,
      maxRetriesPerRequest: 1,
      retryStrategy: (times) => (times > 3 ? null : 200),
    });
    admin.on('error', () => {});
    await admin.connect();
    const info = await admin.info('server');
    const version = /redis_version:(\S+)/.exec(info)?.[1] ?? '?';
    return { admin, version };
  });
  const peers: Loaded<unknown>[] = [server];
  if (!server.available) {
    const reason = `Redis at REDIS_URL is not reachable: ${server.reason}`;
    scenarios.push({
      id: 'redis',
      title: 'Redis suite (UNAVAILABLE)',
      columns: [],
      rows: [unavailableRow('all implementations', reason)],
      notes: ['start a Redis server (e.g. `docker compose up -d redis`) or set REDIS_URL'],
    });
    return {
      suite: 'redis',
      startedAt: startedAt.toISOString(),
      durationMs: sinceMs(t0),
      machine: machineInfo(),
      peers: peers.map(peerInfo),
      scenarios,
      targets,
      notes,
    };
  }
  const { admin, version: serverVersion } = server.value;
  notes.push(`redis-server ${serverVersion}`);
  keyvRedis = await loadPeer('@keyv/redis', async () => import('@keyv/redis'));

  // 1. cache -----------------------------------------------------------------------------------
  log('1/6 cache set+get (sequential, then 50 in flight)...');
  const kvLoaded = [await loadOursKv(), await loadRawKv(), await loadKeyvKv(), await loadCacheManagerKv()];
  const [oursKv, rawKv, keyvKv, cmKv] = kvLoaded as [
    Loaded<KvImpl>,
    Loaded<KvImpl>,
    Loaded<KvImpl>,
    Loaded<KvImpl>,
  ];
  peers.push(keyvKv, keyvRedis, cmKv);
  {
    const { ok, skipped } = split(kvLoaded);
    const names = ok.map((i) => i.name);
    const seq = await guard('redis.cache.setget', '1a. cache set+get', names, () =>
      cacheSequential(ok, skipped, nameOf(oursKv)),
    );
    const conc = await guard('redis.cache.setget.concurrent', '1b. cache set+get, 50 in flight', names, () =>
      cacheConcurrent(ok, skipped, nameOf(oursKv)),
    );
    scenarios.push(seq, conc);
    for (const [s, suffix] of [
      [seq, 'sequential'],
      [conc, '50 in flight'],
    ] as const) {
      for (const [peer, peerName, target] of [
        [rawKv, 'raw ioredis', 0.95],
        [keyvKv, 'keyv/@keyv/redis', 1.0],
        [cmKv, 'cache-manager 7/@keyv/redis', 1.0],
      ] as const) {
        targets.push(
          checkTarget(
            s.id,
            `cache set+get ops/s (${suffix}): ours >= ${target.toFixed(2)}x ${peerName}`,
            { name: OURS, value: metric(s, nameOf(oursKv), 'opsPerSec') },
            {
              name: peerName,
              value: metric(s, nameOf(peer), 'opsPerSec'),
              reason: reasonOf(oursKv) ?? reasonOf(peer) ?? missing(s, nameOf(oursKv)),
            },
            target,
          ),
        );
      }
    }
    await closeAll(ok);
  }

  // 2. pub/sub ---------------------------------------------------------------------------------
  log('2/6 pub/sub throughput...');
  const psLoaded = [await loadOursPubSub(), await loadRawPubSub()];
  const [oursPs, rawPs] = psLoaded as [Loaded<PubSubImpl>, Loaded<PubSubImpl>];
  {
    const { ok, skipped } = split(psLoaded);
    const s = await guard(
      'redis.pubsub',
      '2. pub/sub throughput',
      ok.map((i) => i.name),
      () => pubSubThroughput(ok, skipped, nameOf(oursPs)),
    );
    scenarios.push(s);
    const oursBurst = nameOf(oursPs) && `${nameOf(oursPs)} [burst]`;
    const rawBurst = nameOf(rawPs) && `${nameOf(rawPs)} [burst]`;
    targets.push(
      checkTarget(
        s.id,
        `pub/sub msgs/s (${PUBSUB.burst.toLocaleString('en-US')} in flight): ours >= 0.90x raw ioredis`,
        { name: OURS, value: metric(s, oursBurst || undefined, 'msgsPerSec') },
        {
          name: 'raw ioredis',
          value: metric(s, rawBurst || undefined, 'msgsPerSec'),
          reason: reasonOf(oursPs) ?? reasonOf(rawPs) ?? missing(s, oursBurst || undefined),
        },
        0.9,
      ),
    );
    await closeAll(ok);
  }

  // 3. queue -----------------------------------------------------------------------------------
  log('3/6 queue end to end (c=50, c=1)...');
  const qLoaded = [await loadOursQueue(), await loadBullmq()];
  const [oursQ, bull] = qLoaded as [Loaded<QueueImpl>, Loaded<QueueImpl>];
  peers.push(bull);
  {
    const { ok, skipped } = split(qLoaded);
    const names = ok.map((i) => i.name);
    const e2e = await guard('redis.queue.e2e', '3a. queue end to end', names, () =>
      queueEndToEnd(ok, skipped, nameOf(oursQ), log),
    );
    log('4/6 queue pickup latency...');
    const pickup = await guard('redis.queue.pickup', '3b. queue pickup latency', names, () =>
      queuePickup(ok, skipped, nameOf(oursQ)),
    );
    scenarios.push(e2e, pickup);
    for (const [c, target] of [
      [50, 2.0],
      [1, 1.0],
    ] as const) {
      const o = nameOf(oursQ) && `${nameOf(oursQ)} [c=${c}]`;
      const b = nameOf(bull) && `${nameOf(bull)} [c=${c}]`;
      targets.push(
        checkTarget(
          e2e.id,
          `queue jobs/s at concurrency ${c}: ours >= ${target.toFixed(2)}x BullMQ`,
          { name: OURS, value: metric(e2e, o || undefined, 'jobsPerSec') },
          {
            name: 'bullmq',
            value: metric(e2e, b || undefined, 'jobsPerSec'),
            reason: reasonOf(oursQ) ?? reasonOf(bull) ?? missing(e2e, o || undefined),
          },
          target,
        ),
      );
    }
    const oursP50 = metric(pickup, nameOf(oursQ), 'p50Us');
    const bullP50 = metric(pickup, nameOf(bull), 'p50Us');
    targets.push({
      scenario: pickup.id,
      description: 'queue pickup p50: ours / BullMQ <= 1.00x (lower is better)',
      ours: OURS,
      peer: 'bullmq',
      ratio: oursP50 !== null && bullP50 !== null ? oursP50 / bullP50 : null,
      target: 1,
      comparison: '<=',
      met: oursP50 !== null && bullP50 !== null ? oursP50 <= bullP50 : null,
      ...((oursP50 === null || bullP50 === null) && {
        reason: reasonOf(oursQ) ?? reasonOf(bull) ?? missing(pickup, nameOf(oursQ)) ?? 'not measured',
      }),
    });
    await closeAll(ok);
  }

  // 4. lock ------------------------------------------------------------------------------------
  log('5/6 lock (sequential, then 50 contenders)...');
  const oursLock = await loadOursLock();
  const sem = await loadRedisSemaphore();
  peers.push(sem);
  {
    const ours: LockImpl[] = oursLock.available
      ? [oursLock.value.acquireRelease, oursLock.value.runExclusive]
      : [];
    const skipped: ReportRow[] = [];
    if (!oursLock.available) skipped.push(unavailableRow(label(oursLock, '(lock)'), oursLock.reason));
    if (!sem.available) skipped.push(unavailableRow(label(sem), sem.reason));
    const all = [...ours, ...(sem.available ? [sem.value] : [])];
    const names = all.map((i) => i.name);
    const oursAr = oursLock.available ? oursLock.value.acquireRelease.name : undefined;
    const oursRe = oursLock.available ? oursLock.value.runExclusive.name : undefined;
    const seq = await guard('redis.lock.sequential', '4a. lock sequential', names, () =>
      lockSequential(all, skipped, oursAr),
    );
    const contenders = [...(oursAr ? [ours[0]!] : []), ...(sem.available ? [sem.value] : [])];
    const cont = await guard(
      'redis.lock.contended',
      '4b. lock contended',
      contenders.map((i) => i.name),
      () => lockContended(contenders, skipped, oursAr),
    );
    scenarios.push(seq, cont);
    const oursReason = reasonOf(oursLock);
    for (const [oursName, what] of [
      [oursAr, 'acquire+release'],
      [oursRe, 'runExclusive'],
    ] as const) {
      targets.push(
        checkTarget(
          seq.id,
          `lock sequential ops/s: ours ${what} >= 1.00x redis-semaphore`,
          { name: OURS, value: metric(seq, oursName, 'opsPerSec') },
          {
            name: 'redis-semaphore',
            value: metric(seq, nameOf(sem), 'opsPerSec'),
            reason: oursReason ?? reasonOf(sem) ?? missing(seq, oursName),
          },
          1.0,
        ),
      );
    }
    const p99 = metric(cont, oursAr, 'waitP99Us');
    const contReason = oursReason ?? missing(cont, oursAr);
    targets.push(
      checkFigure(
        cont.id,
        `lock ${LOCK_CONTENDED.callers} contenders: ours wait p99 <= 50 ms`,
        OURS,
        p99 === null ? null : p99 / 1e3,
        50,
        '<=',
        contReason,
      ),
      checkFigure(
        cont.id,
        `lock ${LOCK_CONTENDED.callers} contenders: ours least-served share >= 0.50 of mean`,
        OURS,
        metric(cont, oursAr, 'leastServedShare'),
        0.5,
        '>=',
        contReason,
      ),
    );
    const semRow = cont.rows.find((r) => r.impl === nameOf(sem) && r.available);
    if (semRow) {
      notes.push(
        `redis-semaphore under ${LOCK_CONTENDED.callers} contenders: wait p99 ${fmt.ms((semRow.metrics.waitP99Us as number) / 1e3)} ms, least-served ${fmt.share(semRow.metrics.leastServedShare ?? null)} (min ${semRow.metrics.minPerCaller} ops of ${semRow.metrics.totalOps})`,
      );
    }
    await closeAll(sem.available ? [sem.value] : []);
    if (oursLock.available) await oursLock.value.app.stop().catch(() => {});
  }

  // 5. wrap stampede ---------------------------------------------------------------------------
  log('6/6 wrap stampede over 4 instances...');
  const wrapLoaded = [await loadOursWrap(), await loadCacheManagerWrap()];
  const [oursWrap] = wrapLoaded as [Loaded<WrapImpl>, Loaded<WrapImpl>];
  {
    const { ok, skipped } = split(wrapLoaded);
    const s = await guard(
      'redis.cache.wrapStampede',
      '5. wrap stampede',
      ok.map((i) => i.name),
      () => wrapStampede(ok, skipped),
    );
    scenarios.push(s);
    for (const phase of ['one by one', 'all at once']) {
      const row = nameOf(oursWrap) && `${nameOf(oursWrap)} [${phase}]`;
      const perKey = metric(s, row || undefined, 'computesPerKey');
      const max = metric(s, row || undefined, 'maxComputesPerKey');
      const bad =
        (metric(s, row || undefined, 'wrongResults') ?? 0) + (metric(s, row || undefined, 'failed') ?? 0);
      const check = checkFigure(
        s.id,
        `wrap stampede [${phase}]: ours computes exactly 1 per cold key (4 instances)`,
        OURS,
        perKey,
        1,
        '==',
        reasonOf(oursWrap) ?? missing(s, row || undefined),
      );
      if (check.met === true && (max !== 1 || bad !== 0)) {
        check.met = false;
        check.reason = `max ${max} computes on one key, ${bad} bad or failed results`;
      }
      targets.push(check);
    }
    await closeAll(ok);
  }

  // Clean-up -----------------------------------------------------------------------------------
  log('cleaning up this run’s keys...');
  try {
    const { deleted, left } = await cleanUp(admin);
    notes.push(`clean-up: ${deleted} keys of this run deleted (SCAN + UNLINK on the run id), ${left} left`);
  } catch (error) {
    notes.push(`clean-up FAILED: ${error instanceof Error ? error.message : String(error)}`);
  }
  await admin.quit().catch(() => admin.disconnect());

  return {
    suite: 'redis',
    startedAt: startedAt.toISOString(),
    durationMs: sinceMs(t0),
    machine: machineInfo(),
    peers: [oursKv, oursLock, ...peers].map(peerInfo).filter(uniqueByName()),
    scenarios,
    targets,
    notes,
  };
}

function uniqueByName() {
  const seen = new Set<string>();
  return (p: { name: string }) => {
    if (seen.has(p.name)) return false;
    seen.add(p.name);
    return true;
  };
}
