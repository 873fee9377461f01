/**
 * The Redis suite: @cluster/core on @cluster/adapter-redis side by side with raw ioredis, keyv +
 * @keyv/redis, cache-manager 7, BullMQ and redis-semaphore, in one process against one Redis server
 * (REDIS_URL, default redis://127.0.0.1:6379). Every key this run writes carries a unique run id, and
 * is deleted at the end with SCAN + UNLINK on that id; nothing ever runs FLUSHALL / FLUSHDB.
 */
import type { Cluster } from '@cluster/core';
import type { Redis } from 'ioredis';
import {
  checkFigure,
  checkTarget,
  compareContended,
  fmt,
  type Loaded,
  loadPeer,
  nowNs,
  peerInfo,
  Recorder,
  type ReportRow,
  type Scenario,
  type SuiteReport,
  sinceMs,
  type TargetCheck,
  throughputColumns,
} from './harness.js';
import { loadBullmq } from './peers/bullmq.js';
import { type LockImpl, lockContended, lockSequential } from './scenarios/lock.js';
import { burstRow, managerPubSub, type PubSubImpl, pubSubThroughput, type Tick } from './scenarios/pubsub.js';
import {
  type ConcurrentChannelQueue,
  channelLane,
  eventQueueChannels,
  missingJobs,
  queueE2eColumns,
  queueE2eRows,
  queuePickup,
  runQueueRounds,
} from './scenarios/queue.js';
import {
  closeAll,
  guard,
  type KvImpl as Kv,
  label,
  metric,
  missing,
  nameOf,
  newRunId,
  REDIS_URL,
  reasonOf,
  redact,
  sectionWanted,
  sequentialMethod,
  sleep,
  smokeKv,
  split,
  startClock,
  suiteReport,
  throughputScenario,
  unavailableRow,
  unreachableReport,
} from './suite.js';

// ---------------------------------------------------------------------------------------------
// Settings (tuned for well under 3 minutes on 2 cores)
// ---------------------------------------------------------------------------------------------

/** Part of every key, channel and queue name of this run; the clean-up deletes `*<RUN_ID>*`. */
const RUN_ID = newRunId();

const CACHE_KEYS = 1_000;
const SEQ = { warmupOps: 1_000, rounds: 7, opsPerRound: 20_000, sampleEvery: 4, maxRoundMs: 600 };
const CONCURRENT = { callers: 50, opsPerRound: 10_000, warmupOps: 2_000, rounds: 3 };
const PUBSUB = { burst: 20_000, sequential: 5_000, rounds: 3, warmup: 10_000, timeoutMs: 20_000 };
const QUEUE = { jobs: 10_000, chunk: 1_000, rounds: { 50: 3, 1: 1 }, pickups: 200, pickupWarmup: 20 };
const LOCK_TTL = 10_000;
const LOCK_CONTENDED = { callers: 50, opsPerRound: 5_000, warmupOps: 500, rounds: 2 };
const STAMPEDE = { instances: 4, keys: 50, callersPerInstance: 25, loaderMs: 5 };

const SEQ_METHOD = sequentialMethod(SEQ, 'one caller, every op awaited before the next');
const CONCURRENT_METHOD = `${CONCURRENT.callers} callers in flight sharing ${CONCURRENT.opsPerRound.toLocaleString('en-US')} ops per round, ${CONCURRENT.rounds} rounds after ${CONCURRENT.warmupOps.toLocaleString('en-US')} warm-up ops; p50/p99 = latency of one op under that load`;

const OURS = '@cluster/adapter-redis';

// ---------------------------------------------------------------------------------------------
// Values and clients
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

async function newIoredis(): Promise<Redis> {
  const { Redis } = await import('ioredis');
  const client = new Redis(REDIS_URL, { lazyConnect: true });
  client.on('error', () => {});
  await client.connect();
  return client;
}

// ---------------------------------------------------------------------------------------------
// 1. cache set + get
// ---------------------------------------------------------------------------------------------

type KvImpl = Kv<Value>;

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
    await smokeKv(impl, makeValue(7));
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
    await smokeKv(impl, makeValue(7));
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
    await smokeKv(impl, makeValue(7));
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
    await smokeKv(impl, makeValue(7));
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
  return throughputScenario({
    id: 'redis.cache.setget',
    title: `1a. cache set+get over Redis, small object, ${CACHE_KEYS.toLocaleString('en-US')} keys, sequential (1 op = set + get, 2 round trips)`,
    cases: kvCases(impls, wrong).map((c) => ({ name: c.impl.name, op: c.op })),
    settings: SEQ,
    oursName,
    skipped,
    extraColumns: [{ key: 'wrongReads', label: 'bad reads', format: fmt.int }],
    extraMetrics: (impl) => ({ wrongReads: wrong.get(impl) ?? 0 }),
    notes: [
      SEQ_METHOD,
      "ours: createCluster({ cache: { defaultStore: 'redis', stores: { redis: createRedisCacheStore() } } }), cacheManager.createCache(); tagged-JSON serializer, key namespacing, a command timeout on every call",
      'raw ioredis: default client options, SET/GET of JSON.stringify / JSON.parse (the floor: no namespacing, no timeouts, no error mapping)',
      'keyv and cache-manager 7 use @keyv/redis, which runs on node-redis (@redis/client), not ioredis: the client library differs too',
    ],
  });
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
    return managerPubSub(publisher.pubSubManager, subscriber.pubSubManager, async () => {
      await Promise.all([publisher.stop(), subscriber.stop()]);
    });
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

// ---------------------------------------------------------------------------------------------
// 3. queue end-to-end and pickup latency
// ---------------------------------------------------------------------------------------------

/** Every implementation of this suite takes the consumer's concurrency per channel, as BullMQ does. */
type QueueImpl = ConcurrentChannelQueue;

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
    const queues = {
      producer: producer.eventQueue,
      consumer: consumer.eventQueue,
      statsOf: producer.eventQueue,
    };
    return eventQueueChannels(queues, QUEUE.chunk, async () => {
      await Promise.all([consumer.stop(), producer.stop()]);
    });
  });
  if (loaded.available) loaded.value.name = 'ours: EventQueue + createRedisQueue';
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

async function queueEndToEnd(
  impls: QueueImpl[],
  skipped: ReportRow[],
  oursName: string | undefined,
  log: (line: string) => void,
): Promise<Scenario> {
  const results: QueueE2eResult[] = [];
  const rows: ReportRow[] = [];
  for (const concurrency of [50, 1] as const) {
    const channel = `e2e-c${concurrency}`;
    const lanes = impls.map((impl) =>
      channelLane(impl, channel, (handler) => impl.consume(channel, concurrency, handler)),
    );
    const measured = await runQueueRounds(
      lanes,
      {
        jobs: QUEUE.jobs,
        rounds: QUEUE.rounds[concurrency],
        warmup: 500,
        timeoutMs: 60_000,
        logPrefix: `c=${concurrency} `,
      },
      log,
    );
    for (const r of measured) {
      results.push({
        name: r.name,
        concurrency,
        jobs: QUEUE.jobs,
        jobsPerSec: r.jobsPerSec,
        roundJobsPerSec: r.roundJobsPerSec,
        roundMs: r.rounds.map((x) => x.ms),
        publishMs: r.rounds.map((x) => x.publishMs),
        cpuUsPerJob: r.rounds.map((x) => x.cpuUsPerJob),
        drainedMs: r.rounds.map((x) => x.settleMs),
        missing: missingJobs(r),
      });
    }
    rows.push(
      ...queueE2eRows(measured, oursName, {
        rowName: (name) => `${name} [c=${concurrency}]`,
        countRounds: true,
      }),
    );
  }
  return {
    id: 'redis.queue.e2e',
    title: `3a. queue end to end, ${QUEUE.jobs.toLocaleString('en-US')} no-op jobs, consumer concurrency 50 and 1`,
    columns: queueE2eColumns(true),
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

function queuePickupScenario(impls: QueueImpl[], skipped: ReportRow[], oursName?: string): Promise<Scenario> {
  const lanes = impls.map((impl) =>
    channelLane(impl, 'pickup', (handler) => impl.consume('pickup', 1, handler)),
  );
  return queuePickup(lanes, skipped, oursName, {
    id: 'redis.queue.pickup',
    title: `3b. queue single-job pickup latency (publish one job -> its handler starts; consumer idle, concurrency 1), ${QUEUE.pickups} samples`,
    pickups: QUEUE.pickups,
    warmup: QUEUE.pickupWarmup,
    untilPublished: true,
  });
}

// ---------------------------------------------------------------------------------------------
// 4. lock
// ---------------------------------------------------------------------------------------------

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

/**
 * The floor of any Redis lock with this suite's guarantees, as a reference row: a bare ioredis
 * client (default options: no adapter, no manager, no command deadlines) running the leanest
 * scripts that still put a fencing token from a per-key counter into the value and refuse to grant
 * past a waiting line — acquire: EXISTS line, INCR counter, SET NX PX; release: owner+token-checked
 * GET + DEL, then EXISTS line (a hand-over would follow). It cannot wait (there is no line to join):
 * it is measured sequentially only.
 */
async function loadFencedFloor(): Promise<Loaded<LockImpl>> {
  const loaded = await loadPeer('floor', async () => {
    const client = await newIoredis();
    const acquire = await client.script(
      'LOAD',
      "if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end " +
        "local t = redis.call('INCR', KEYS[3]) " +
        "if redis.call('SET', KEYS[1], t .. ':' .. ARGV[1], 'NX', 'PX', ARGV[2]) then return t end return 0",
    );
    const release = await client.script(
      'LOAD',
      "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end redis.call('DEL', KEYS[1]) " +
        "if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end return 1",
    );
    let seq = 0;
    const impl: LockImpl = {
      name: 'floor: bare ioredis, leanest fenced + line-checked scripts (reference)',
      async cycle(key) {
        const keys = [
          `${RUN_ID}:floor:{${key}}:lock`,
          `${RUN_ID}:floor:{${key}}:line`,
          `${RUN_ID}:floor:{${key}}:fence`,
        ];
        const owner = `o${++seq}`;
        const token = (await client.evalsha(acquire as string, 3, ...keys, owner, LOCK_TTL)) as number;
        if (token === 0) throw new Error(`floor: ${key} was held`);
        if ((await client.evalsha(release as string, 3, ...keys, `${token}:${owner}`)) === 0) {
          throw new Error(`floor: ${key} was not ours at release`);
        }
      },
      close: async () => {
        await client.quit();
      },
    };
    await impl.cycle('smoke', 0);
    return impl;
  });
  return loaded;
}

function redisLockSequential(impls: LockImpl[], skipped: ReportRow[], oursName?: string): Promise<Scenario> {
  return lockSequential(impls, skipped, oursName, SEQ, {
    id: 'redis.lock.sequential',
    title: `4a. lock acquire + release over Redis, sequential, one key per implementation, ttl ${LOCK_TTL} ms`,
    notes: [
      SEQ_METHOD,
      'ours: a fencing token per grant (INCR in the acquire script), owner+token-checked release that hands the key to the next waiter in a FIFO line; runExclusive also arms a renewal timer',
      'redis-semaphore Mutex: SET NX PX, release by an owner-checked Lua DEL, a refresh interval while held; waiters poll every retryInterval (default 10 ms); one Mutex reused (its cheapest use)',
    ],
  });
}

function redisLockContended(impls: LockImpl[], skipped: ReportRow[], oursName?: string) {
  return lockContended(impls, skipped, oursName, LOCK_CONTENDED, {
    id: 'redis.lock.contended',
    methodDetail: 'min/max ops per contender over the measured rounds',
    notes: [
      'ours: one LockManager (one adapter, its waiters woken by pub/sub on release); redis-semaphore: one Mutex per contender on one ioredis client, default retryInterval 10 ms, acquireTimeout 10 s',
    ],
  });
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

export async function runRedisSuite(log: (line: string) => void = () => {}): Promise<SuiteReport> {
  const started = startClock();
  const scenarios: Scenario[] = [];
  const targets: TargetCheck[] = [];
  const notes: string[] = [
    'ratios are ours/peer on throughput (ops/s, msgs/s, jobs/s): above 1.00x ours is faster; pickup compares p50 latency (this/ours: above 1.00x ours is faster)',
    `server ${redact(REDIS_URL)}, run id ${RUN_ID} (every key of the run contains it)`,
  ];

  log(`connecting to ${redact(REDIS_URL)}...`);
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
  if (!server.available)
    return unreachableReport('redis', started, server, notes, {
      title: 'Redis suite (UNAVAILABLE)',
      reason: `Redis at REDIS_URL is not reachable: ${server.reason}`,
      hint: 'start a Redis server (e.g. `docker compose up -d redis`) or set REDIS_URL',
    });
  const peers: Loaded<unknown>[] = [server];
  const { admin, version: serverVersion } = server.value;
  notes.push(`redis-server ${serverVersion}`);
  keyvRedis = await loadPeer('@keyv/redis', async () => import('@keyv/redis'));

  // 1. cache -----------------------------------------------------------------------------------
  if (sectionWanted('cache')) {
    log('1/6 cache set+get (sequential, then 50 in flight)...');
    const kvLoaded = [await loadOursKv(), await loadRawKv(), await loadKeyvKv(), await loadCacheManagerKv()];
    const [oursKv, rawKv, keyvKv, cmKv] = kvLoaded as [
      Loaded<KvImpl>,
      Loaded<KvImpl>,
      Loaded<KvImpl>,
      Loaded<KvImpl>,
    ];
    peers.push(oursKv, keyvKv, keyvRedis, cmKv);
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
  if (sectionWanted('pubsub')) {
    log('2/6 pub/sub throughput...');
    const psLoaded = [await loadOursPubSub(), await loadRawPubSub()];
    const [oursPs, rawPs] = psLoaded as [Loaded<PubSubImpl>, Loaded<PubSubImpl>];
    const { ok, skipped } = split(psLoaded);
    const s = await guard(
      'redis.pubsub',
      '2. pub/sub throughput',
      ok.map((i) => i.name),
      () =>
        pubSubThroughput(ok, skipped, nameOf(oursPs), {
          id: 'redis.pubsub',
          number: '2',
          settings: PUBSUB,
          notes: [
            "ours: two createCluster instances of one app, each with its own createRedisPubSub; payload { r, s, t } through core's serializer plus the publisher-id envelope; raw: two ioredis clients, JSON.stringify / JSON.parse of the same payload",
          ],
        }),
    );
    scenarios.push(s);
    const oursBurst = burstRow(nameOf(oursPs));
    const rawBurst = burstRow(nameOf(rawPs));
    targets.push(
      checkTarget(
        s.id,
        `pub/sub msgs/s (${PUBSUB.burst.toLocaleString('en-US')} in flight): ours >= 0.90x raw ioredis`,
        { name: OURS, value: metric(s, oursBurst, 'msgsPerSec') },
        {
          name: 'raw ioredis',
          value: metric(s, rawBurst, 'msgsPerSec'),
          reason: reasonOf(oursPs) ?? reasonOf(rawPs) ?? missing(s, oursBurst),
        },
        0.9,
      ),
    );
    await closeAll(ok);
  }

  // 3. queue -----------------------------------------------------------------------------------
  if (sectionWanted('queue')) {
    log('3/6 queue end to end (c=50, c=1)...');
    const qLoaded = [
      await loadOursQueue(),
      await loadBullmq({
        redisUrl: REDIS_URL,
        prefix: `${RUN_ID}-bull`,
        chunk: QUEUE.chunk,
        labelSuffix: 'Queue.addBulk + Worker',
      }),
    ];
    const [oursQ, bull] = qLoaded as [Loaded<QueueImpl>, Loaded<QueueImpl>];
    peers.push(bull);
    const { ok, skipped } = split(qLoaded);
    const names = ok.map((i) => i.name);
    const e2e = await guard('redis.queue.e2e', '3a. queue end to end', names, () =>
      queueEndToEnd(ok, skipped, nameOf(oursQ), log),
    );
    log('4/6 queue pickup latency...');
    const pickup = await guard('redis.queue.pickup', '3b. queue pickup latency', names, () =>
      queuePickupScenario(ok, skipped, nameOf(oursQ)),
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
  if (sectionWanted('lock')) {
    log('5/6 lock (sequential, then 50 contenders)...');
    const oursLock = await loadOursLock();
    const sem = await loadRedisSemaphore();
    const floor = await loadFencedFloor();
    peers.push(oursLock, sem);
    const ours: LockImpl[] = oursLock.available
      ? [oursLock.value.acquireRelease, oursLock.value.runExclusive]
      : [];
    const skipped: ReportRow[] = [];
    if (!oursLock.available) skipped.push(unavailableRow(label(oursLock, '(lock)'), oursLock.reason));
    if (!sem.available) skipped.push(unavailableRow(label(sem), sem.reason));
    if (!floor.available) skipped.push(unavailableRow('floor (reference)', floor.reason));
    const all = [...ours, ...(sem.available ? [sem.value] : []), ...(floor.available ? [floor.value] : [])];
    const names = all.map((i) => i.name);
    const oursAr = oursLock.available ? oursLock.value.acquireRelease.name : undefined;
    const oursRe = oursLock.available ? oursLock.value.runExclusive.name : undefined;
    const seq = await guard('redis.lock.sequential', '4a. lock sequential', names, () =>
      redisLockSequential(all, skipped, oursAr),
    );
    const contenders = [...(oursAr ? [ours[0]!] : []), ...(sem.available ? [sem.value] : [])];
    const cont = await guard(
      'redis.lock.contended',
      '4b. lock contended',
      contenders.map((i) => i.name),
      () => redisLockContended(contenders, skipped, oursAr),
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
    const floorOps = floor.available ? metric(seq, floor.value.name, 'opsPerSec') : null;
    const semOps = metric(seq, nameOf(sem), 'opsPerSec');
    if (floorOps !== null && semOps !== null) {
      notes.push(
        `lock sequential floor (bare ioredis, leanest fenced + line-checked scripts, no adapter): ${fmt.ratio(floorOps / semOps)} redis-semaphore: about the most a lock with a fencing token in its value and a FIFO line can reach through ioredis on this server`,
      );
    }
    const semRow = cont.rows.find((r) => r.impl === nameOf(sem) && r.available);
    if (semRow) {
      notes.push(
        `redis-semaphore under ${LOCK_CONTENDED.callers} contenders: wait p99 ${fmt.ms((semRow.metrics.waitP99Us as number) / 1e3)} ms, least-served ${fmt.share(semRow.metrics.leastServedShare ?? null)} (min ${semRow.metrics.minPerCaller} ops of ${semRow.metrics.totalOps})`,
      );
    }
    await closeAll([...(sem.available ? [sem.value] : []), ...(floor.available ? [floor.value] : [])]);
    if (oursLock.available) await oursLock.value.app.stop().catch(() => {});
  }

  // 5. wrap stampede ---------------------------------------------------------------------------
  if (sectionWanted('wrap')) {
    log('6/6 wrap stampede over 4 instances...');
    const wrapLoaded = [await loadOursWrap(), await loadCacheManagerWrap()];
    const [oursWrap] = wrapLoaded as [Loaded<WrapImpl>, Loaded<WrapImpl>];
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

  return suiteReport('redis', started, {
    peers: peers.map(peerInfo).filter(uniqueByName()),
    scenarios,
    targets,
    notes,
  });
}

function uniqueByName() {
  const seen = new Set<string>();
  return (p: { name: string }) => {
    if (seen.has(p.name)) return false;
    seen.add(p.name);
    return true;
  };
}
