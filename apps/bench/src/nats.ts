/**
 * The NATS suite: @cluster/core on @cluster/adapter-nats side by side with the raw nats.js v3
 * clients (core pub/sub, JetStream publish + pull + ack, KV put/get), in one process against one
 * nats-server with JetStream (NATS_URL, default nats://127.0.0.1:4222). Locks are reported next to
 * the Redis adapter's when a Redis server is reachable (REDIS_URL). Every subject, stream and bucket
 * of the run carries a unique run id; the streams and buckets are deleted at the end.
 */
import process from 'node:process';
import type { LockManager } from '@cluster/core';
import {
  checkFigure,
  checkTarget,
  type Loaded,
  loadPeer,
  peerInfo,
  type ReportRow,
  type Scenario,
  type SuiteReport,
  type TargetCheck,
} from './harness.js';
import { type LockImpl, lockContended, lockSequential } from './scenarios/lock.js';
import { burstRow, managerPubSub, type PubSubImpl, pubSubThroughput, type Tick } from './scenarios/pubsub.js';
import {
  eventQueueChannels,
  type JobHandler,
  missingJobs,
  publishInChunks,
  type QueueLane,
  queueE2eColumns,
  queueE2eRows,
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
  redact,
  sequentialMethod,
  sleep,
  smokeKv,
  split,
  startClock,
  suiteReport,
  throughputScenario,
  unreachableReport,
} from './suite.js';

// ---------------------------------------------------------------------------------------------
// Settings (tuned for well under 2 minutes on 2 cores)
// ---------------------------------------------------------------------------------------------

const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
/** Subject prefix of the run (letters, digits, `_`): part of every subject, stream and bucket name. */
const RUN_ID = newRunId();

const SEQ = { warmupOps: 500, rounds: 5, opsPerRound: 5_000, sampleEvery: 4, maxRoundMs: 600 };
const PUBSUB = { burst: 20_000, sequential: 5_000, rounds: 5, warmup: 5_000, timeoutMs: 20_000 };
const QUEUE = { jobs: 5_000, chunk: 500, concurrency: 50, rounds: 5, warmup: 500 };
const LOCK_TTL = 10_000;
const LOCK_CONTENDED = { callers: 50, opsPerRound: 1_000, warmupOps: 100, rounds: 2 };

const SEQ_METHOD = sequentialMethod(SEQ, 'one caller, every op awaited before the next');

const OURS = '@cluster/adapter-nats';

interface Value {
  id: number;
  name: string;
  tags: string[];
}

function makeValue(id: number): Value {
  return { id, name: `item-${id}`, tags: ['a', 'b', 'c'] };
}

/** Why a target has no figure: the load error alone (this suite's targets name the peer already). */
function loadFailure(loaded: Loaded<unknown>): string | undefined {
  return loaded.available ? undefined : loaded.reason;
}

async function rawConnection() {
  const { connect } = await import('@nats-io/transport-node');
  return connect({ servers: NATS_URL, name: 'bench-raw' });
}

// ---------------------------------------------------------------------------------------------
// 1. cache set + get
// ---------------------------------------------------------------------------------------------

type KvImpl = Kv<Value>;

async function loadOursKv(): Promise<Loaded<KvImpl>> {
  const loaded = await loadPeer(OURS, async () => {
    const { CacheManager } = await import('@cluster/core');
    const { createNatsCacheStore } = await import('@cluster/adapter-nats');
    const manager = new CacheManager({
      appName: 'bench-cache',
      stores: { nats: createNatsCacheStore({ servers: NATS_URL, subjectPrefix: RUN_ID }) },
      defaultStore: 'nats',
    });
    await manager.start();
    const cache = await manager.createCache({ name: 'c' });
    const impl: KvImpl = {
      name: 'ours: Cache + createNatsCacheStore',
      set: (key, value) => cache.set(key, value),
      get: (key) => cache.get<Value>(key),
      close: () => manager.close(),
    };
    await smokeKv(impl, makeValue(7));
    return impl;
  });
  return loaded;
}

async function loadRawKv(): Promise<Loaded<KvImpl>> {
  const loaded = await loadPeer('@nats-io/kv', async () => {
    const { Kvm } = await import('@nats-io/kv');
    const nc = await rawConnection();
    const kv = await new Kvm(nc).create(`${RUN_ID}_rawkv`, { history: 1 });
    const encoder = new TextEncoder();
    const impl: KvImpl = {
      name: '',
      set: (key, value) => kv.put(`k.${key}`, encoder.encode(JSON.stringify(value))),
      get: async (key) => {
        const entry = await kv.get(`k.${key}`);
        return entry && entry.operation === 'PUT' ? entry.json<Value>() : undefined;
      },
      close: () => nc.close(),
    };
    await smokeKv(impl, makeValue(7));
    return impl;
  });
  if (loaded.available) loaded.value.name = label(loaded, 'raw KV put/get + JSON');
  return loaded;
}

function cacheSequential(impls: KvImpl[], skipped: ReportRow[], oursName?: string): Promise<Scenario> {
  return throughputScenario({
    id: 'nats.cache.setget',
    title: '1. cache set + get on JetStream KV, sequential (one op = one set then one get, 1,000 keys)',
    cases: impls.map((impl) => ({
      name: impl.name,
      op: async (i: number) => {
        const key = `key-${i % 1_000}`;
        await impl.set(key, makeValue(i));
        await impl.get(key);
      },
    })),
    settings: SEQ,
    oursName,
    skipped,
    notes: [
      SEQ_METHOD,
      "ours: core's Cache (serializer, namespacing) over createNatsCacheStore (expiry stored with the value, checked on read); raw: Kvm bucket, put + get with JSON.stringify / parse",
    ],
  });
}

// ---------------------------------------------------------------------------------------------
// 2. pub/sub throughput
// ---------------------------------------------------------------------------------------------

async function loadOursPubSub(): Promise<Loaded<PubSubImpl>> {
  const loaded = await loadPeer(OURS, async () => {
    const { PubSubManager } = await import('@cluster/core');
    const { createNatsPubSub } = await import('@cluster/adapter-nats');
    // Two instances of one app, each with its own adapter (so its own connection), as two processes.
    const make = () =>
      new PubSubManager({
        appName: 'bench-ps',
        adapter: createNatsPubSub({ servers: NATS_URL, subjectPrefix: RUN_ID }),
      });
    const publisher = make();
    const subscriber = make();
    await Promise.all([publisher.start(), subscriber.start()]);
    return managerPubSub(publisher, subscriber, async () => {
      await Promise.all([publisher.close(), subscriber.close()]);
    });
  });
  if (loaded.available) loaded.value.name = 'ours: PubSubManager + createNatsPubSub';
  return loaded;
}

async function loadRawPubSub(): Promise<Loaded<PubSubImpl>> {
  const loaded = await loadPeer('@nats-io/transport-node', async () => {
    const [pub, sub] = await Promise.all([rawConnection(), rawConnection()]);
    const subject = `${RUN_ID}.raw.tick`;
    const encoder = new TextEncoder();
    const decoder = new TextDecoder();
    const impl: PubSubImpl = {
      name: '',
      receiver: () => {},
      publish: async (r, s, t) =>
        pub.publish(subject, encoder.encode(JSON.stringify({ r, s, t } satisfies Tick))),
      close: async () => {
        await Promise.all([pub.close(), sub.close()]);
      },
    };
    sub.subscribe(subject, {
      callback: (_error, msg) => {
        const m = JSON.parse(decoder.decode(msg.data)) as Tick;
        impl.receiver(m.r, m.s, m.t);
      },
    });
    await sub.flush();
    return impl;
  });
  if (loaded.available) loaded.value.name = label(loaded, 'raw core publish/subscribe + JSON');
  return loaded;
}

// ---------------------------------------------------------------------------------------------
// 3. queue end to end
// ---------------------------------------------------------------------------------------------

interface QueueImpl {
  name: string;
  /** Starts a consumer; `handler(i)` runs when job i starts. Ready when resolved. */
  consume(concurrency: number, handler: (i: number) => void): Promise<void>;
  publishMany(first: number, count: number): Promise<void>;
  close(): Promise<void>;
}

async function loadOursQueue(): Promise<Loaded<QueueImpl>> {
  return loadPeer(OURS, async () => {
    const { EventQueue } = await import('@cluster/core');
    const { createNatsQueue } = await import('@cluster/adapter-nats');
    // A producer and a consumer instance, with their own connections.
    const make = () =>
      new EventQueue({
        appName: 'bench-q',
        adapter: createNatsQueue({ servers: NATS_URL, subjectPrefix: RUN_ID }),
      });
    const producer = make();
    const consumer = make();
    await Promise.all([producer.start(), consumer.start()]);
    const ours = eventQueueChannels({ producer, consumer, statsOf: producer }, QUEUE.chunk, async () => {
      await Promise.all([consumer.close({ timeout: 2_000 }), producer.close({ timeout: 2_000 })]);
    });
    const impl: QueueImpl = {
      name: 'ours: EventQueue + createNatsQueue',
      consume: (concurrency, handler) => ours.consume('e2e', concurrency, handler),
      publishMany: (first, count) => ours.publishMany('e2e', first, count),
      close: ours.close,
    };
    return impl;
  });
}

async function loadRawQueue(): Promise<Loaded<QueueImpl>> {
  const loaded = await loadPeer('@nats-io/jetstream', async () => {
    const { AckPolicy, jetstream, jetstreamManager, RetentionPolicy } = await import('@nats-io/jetstream');
    const [pubConn, subConn] = await Promise.all([rawConnection(), rawConnection()]);
    const stream = `${RUN_ID}_rawq`;
    const subject = `${RUN_ID}.rawq`;
    const jsm = await jetstreamManager(pubConn);
    await jsm.streams.add({ name: stream, subjects: [subject], retention: RetentionPolicy.Workqueue });
    await jsm.consumers.add(stream, { durable_name: 'workers', ack_policy: AckPolicy.Explicit });
    const js = jetstream(pubConn);
    const encoder = new TextEncoder();
    const decoder = new TextDecoder();
    let stop: (() => void) | undefined;
    const impl: QueueImpl = {
      name: '',
      async consume(concurrency, handler) {
        const consumer = await jetstream(subConn).consumers.get(stream, 'workers');
        const messages = await consumer.consume({ max_messages: concurrency });
        stop = () => void messages.close();
        void (async () => {
          for await (const m of messages) {
            handler((JSON.parse(decoder.decode(m.data)) as { i: number }).i);
            m.ack();
          }
        })();
      },
      publishMany: (first, count) =>
        publishInChunks(first, count, QUEUE.chunk, (i) =>
          js.publish(subject, encoder.encode(JSON.stringify({ i }))),
        ),
      close: async () => {
        stop?.();
        await Promise.all([pubConn.close(), subConn.close()]);
      },
    };
    return impl;
  });
  if (loaded.available) loaded.value.name = label(loaded, 'raw publish + pull consume + ack');
  return loaded;
}

async function queueEndToEnd(
  impls: QueueImpl[],
  skipped: ReportRow[],
  oursName: string | undefined,
  log: (line: string) => void,
): Promise<Scenario> {
  const lanes: QueueLane[] = impls.map((impl) => ({
    name: impl.name,
    consume: (handler: JobHandler) => impl.consume(QUEUE.concurrency, handler),
    publishMany: (first, count) => impl.publishMany(first, count),
    // Let the last acks go out before the next round.
    settle: () => sleep(100),
  }));
  const measured = await runQueueRounds(
    lanes,
    { jobs: QUEUE.jobs, rounds: QUEUE.rounds, warmup: QUEUE.warmup, timeoutMs: 60_000 },
    log,
  );
  return {
    id: 'nats.queue.e2e',
    title: `3. queue end to end on JetStream, ${QUEUE.jobs.toLocaleString('en-US')} no-op jobs, consumer concurrency ${QUEUE.concurrency}`,
    columns: queueE2eColumns(false),
    rows: [...queueE2eRows(measured, oursName, { countRounds: false }), ...skipped],
    notes: [
      `jobs/s = jobs / (first publish call -> last handler started), consumer idle and ready at t0; median of ${QUEUE.rounds} interleaved rounds after a ${QUEUE.warmup}-job warm-up; ${QUEUE.chunk} publish calls in flight at a time`,
      'ours: EventQueue producer and consumer instances over createNatsQueue (work stream + durable pull consumer with explicit acks, fetch sized to the free slots, headers for id/retries/timeout, per-attempt timeout and backoff in the manager)',
      'raw: js.publish + consumer.consume({ max_messages: concurrency }) + ack on the same kind of work-queue stream; it has no concurrency bound beyond the pull batch, no timeouts, no retries',
      'producer and consumer share this one Node thread: jobs/s is bounded by the client CPU per job',
      "ours opens its connections with nats.js' noAsyncTraces (no eager Error objects per request; its failures are ClusterErrors anyway); raw uses nats.js defaults",
    ],
    raw: measured.map((r) => ({
      name: r.name,
      jobsPerSec: r.jobsPerSec,
      roundMs: r.rounds.map((x) => x.ms),
      publishMs: r.rounds.map((x) => x.publishMs),
      cpuUsPerJob: r.rounds.map((x) => x.cpuUsPerJob),
      missing: missingJobs(r),
    })),
  };
}

// ---------------------------------------------------------------------------------------------
// 4. lock
// ---------------------------------------------------------------------------------------------

function lockImpl(name: string, lm: LockManager): LockImpl {
  return {
    name,
    async cycle(key, _caller, onAcquired) {
      const lock = await lm.acquire(key, { ttl: LOCK_TTL });
      onAcquired?.();
      await lock.release();
    },
    close: () => lm.close(),
  };
}

async function loadOursLock(): Promise<Loaded<LockImpl>> {
  return loadPeer(OURS, async () => {
    const { LockManager } = await import('@cluster/core');
    const { createNatsLock } = await import('@cluster/adapter-nats');
    const lm = new LockManager({
      appName: 'bench-lock',
      adapters: { nats: createNatsLock({ servers: NATS_URL, subjectPrefix: RUN_ID }) },
      defaultAdapter: 'nats',
    });
    await lm.start();
    const impl = lockImpl('ours: LockManager acquire + release (createNatsLock)', lm);
    await impl.cycle('smoke', 0);
    return impl;
  });
}

async function loadRedisLock(): Promise<Loaded<LockImpl>> {
  return loadPeer('@cluster/adapter-redis', async () => {
    const { LockManager } = await import('@cluster/core');
    const { createRedisLock } = await import('@cluster/adapter-redis');
    const adapter = createRedisLock({ url: REDIS_URL, keyPrefix: RUN_ID });
    await adapter.connect();
    const lm = new LockManager({
      appName: 'bench-lock',
      adapters: { redis: adapter },
      defaultAdapter: 'redis',
    });
    await lm.start();
    const impl = lockImpl('reference: LockManager acquire + release (createRedisLock)', lm);
    await impl.cycle('smoke', 0);
    return impl;
  });
}

function natsLockSequential(impls: LockImpl[], skipped: ReportRow[], oursName?: string): Promise<Scenario> {
  return lockSequential(impls, skipped, oursName, SEQ, {
    id: 'nats.lock.sequential',
    title: `4a. lock acquire + release, sequential, one key per implementation, ttl ${LOCK_TTL} ms`,
    notes: [
      SEQ_METHOD,
      'ours (NATS): KV create (or update of an expired lease) to acquire, the revision as fencing token, owner-checked delete on the last revision to release: 2 round trips per cycle plus a read on release',
      'reference (Redis adapter, not a target): one script per acquire and per release, FIFO waiters',
    ],
  });
}

async function natsLockContended(
  impls: LockImpl[],
  skipped: ReportRow[],
  oursName?: string,
): Promise<Scenario> {
  // The per-implementation failures stay in the rows; this suite's JSON never had the map.
  const { failures: _failures, ...scenario } = await lockContended(impls, skipped, oursName, LOCK_CONTENDED, {
    id: 'nats.lock.contended',
    notes: [
      "ours (NATS): one LockManager, waiters woken by a KV watch on the key (fairness 'none': every woken waiter races a create); Redis adapter: FIFO line",
    ],
  });
  return scenario;
}

// ---------------------------------------------------------------------------------------------
// Suite
// ---------------------------------------------------------------------------------------------

/** The Redis reference lock leaves fencing counters under the run id: removed with SCAN + UNLINK. */
async function cleanUpRedis(): Promise<number> {
  const { Redis } = await import('ioredis');
  const admin = new Redis(REDIS_URL, {
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
  });
  admin.on('error', () => {});
  try {
    await admin.connect();
    let cursor = '0';
    let deleted = 0;
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `*${RUN_ID}*`, 'COUNT', 1_000);
      cursor = next;
      if (keys.length > 0) deleted += await admin.unlink(...keys);
    } while (cursor !== '0');
    return deleted;
  } finally {
    admin.disconnect();
  }
}

async function cleanUp(): Promise<{ deleted: number; left: number }> {
  const { jetstreamManager } = await import('@nats-io/jetstream');
  const nc = await rawConnection();
  try {
    const jsm = await jetstreamManager(nc);
    const names: string[] = [];
    for await (const name of jsm.streams.names()) if (name.includes(RUN_ID)) names.push(name);
    for (const name of names) await jsm.streams.delete(name);
    let left = 0;
    for await (const name of jsm.streams.names()) if (name.includes(RUN_ID)) left++;
    return { deleted: names.length, left };
  } finally {
    await nc.close();
  }
}

/** A target on ours / raw of one metric; `row` maps an implementation's name to its table row. */
function oursOverRaw(
  s: Scenario,
  description: string,
  key: string,
  impls: { ours: Loaded<{ name: string }>; raw: Loaded<{ name: string }> },
  target: number,
  row: (name: string | undefined) => string | undefined = (name) => name,
): TargetCheck {
  const { ours, raw } = impls;
  return checkTarget(
    s.id,
    description,
    { name: OURS, value: metric(s, row(nameOf(ours)), key) },
    {
      name: label(raw),
      value: metric(s, row(nameOf(raw)), key),
      reason: loadFailure(raw) ?? loadFailure(ours) ?? missing(s, row(nameOf(ours))),
    },
    target,
  );
}

export async function runNatsSuite(log: (line: string) => void = () => {}): Promise<SuiteReport> {
  const started = startClock();
  const scenarios: Scenario[] = [];
  const targets: TargetCheck[] = [];
  const notes: string[] = [
    'ratios are ours/peer on throughput (ops/s, msgs/s, jobs/s): above 1.00x ours is faster',
    `server ${redact(NATS_URL)}, run id ${RUN_ID} (every subject, stream and bucket of the run contains it)`,
    'the machine is shared with other work while this runs: figures move between runs; compare ratios taken in one run',
  ];

  log(`connecting to ${redact(NATS_URL)}...`);
  const server = await loadPeer('@nats-io/transport-node', async () => {
    const nc = await rawConnection();
    const version = nc.info?.version ?? '?';
    const jetstream = nc.info?.jetstream === true;
    await nc.close();
    if (!jetstream) throw new Error(`nats-server ${version} runs without JetStream`);
    return { version };
  });
  if (!server.available)
    return unreachableReport('nats', started, server, notes, {
      title: 'NATS suite (UNAVAILABLE)',
      reason: `NATS at NATS_URL is not usable: ${server.reason}`,
      hint: 'start nats-server with JetStream (`nats-server -js`) or set NATS_URL',
    });
  const peers: Loaded<unknown>[] = [server];
  notes.push(`nats-server ${server.value.version}`);

  try {
    // 1. cache ----------------------------------------------------------------------------------
    log('1/4 cache set + get...');
    {
      const oursKv = await loadOursKv();
      const rawKv = await loadRawKv();
      peers.push(rawKv);
      const { ok, skipped } = split([oursKv, rawKv]);
      const s = await guard(
        'nats.cache.setget',
        '1. cache set + get',
        ok.map((i) => i.name),
        () => cacheSequential(ok, skipped, nameOf(oursKv)),
      );
      scenarios.push(s);
      targets.push(
        oursOverRaw(
          s,
          'cache set+get ops/s: ours >= 0.90x raw KV put/get',
          'opsPerSec',
          { ours: oursKv, raw: rawKv },
          0.9,
        ),
      );
      await closeAll(ok);
    }

    // 2. pub/sub --------------------------------------------------------------------------------
    log('2/4 pub/sub throughput...');
    {
      const oursPs = await loadOursPubSub();
      const rawPs = await loadRawPubSub();
      peers.push(rawPs);
      const { ok, skipped } = split([oursPs, rawPs]);
      const s = await guard(
        'nats.pubsub',
        '2. pub/sub',
        ok.map((i) => i.name),
        () =>
          pubSubThroughput(ok, skipped, nameOf(oursPs), {
            id: 'nats.pubsub',
            number: '2',
            settings: PUBSUB,
            notes: [
              "ours: two PubSubManager instances of one app, each with its own createNatsPubSub (own connection); payload { r, s, t } through core's serializer plus the publisher-id envelope; raw: two connections, JSON.stringify / parse of the same payload",
            ],
          }),
      );
      scenarios.push(s);
      targets.push(
        oursOverRaw(
          s,
          'pub/sub burst msgs/s: ours >= 0.90x raw core NATS',
          'msgsPerSec',
          { ours: oursPs, raw: rawPs },
          0.9,
          burstRow,
        ),
      );
      await closeAll(ok);
    }

    // 3. queue ----------------------------------------------------------------------------------
    log('3/4 queue end to end...');
    {
      const oursQ = await loadOursQueue();
      const rawQ = await loadRawQueue();
      peers.push(rawQ);
      const { ok, skipped } = split([oursQ, rawQ]);
      const s = await guard(
        'nats.queue.e2e',
        '3. queue end to end',
        ok.map((i) => i.name),
        () => queueEndToEnd(ok, skipped, nameOf(oursQ), log),
      );
      scenarios.push(s);
      targets.push(
        oursOverRaw(
          s,
          'queue end-to-end jobs/s: ours >= 0.80x raw JetStream publish+pull+ack',
          'jobsPerSec',
          { ours: oursQ, raw: rawQ },
          0.8,
        ),
      );
      targets.push(
        checkFigure(
          s.id,
          'queue end-to-end: no job missing (ours)',
          OURS,
          metric(s, nameOf(oursQ), 'missing'),
          0,
          '==',
        ),
      );
      await closeAll(ok);
    }

    // 4. lock -----------------------------------------------------------------------------------
    log('4/4 lock (sequential, then 50 contenders)...');
    {
      const oursLock = await loadOursLock();
      const redisLock = await loadRedisLock();
      peers.push(redisLock);
      const { ok, skipped } = split([oursLock, redisLock]);
      const names = ok.map((i) => i.name);
      const seq = await guard('nats.lock.sequential', '4a. lock sequential', names, () =>
        natsLockSequential(ok, skipped, nameOf(oursLock)),
      );
      const cont = await guard('nats.lock.contended', '4b. lock contended', names, () =>
        natsLockContended(ok, skipped, nameOf(oursLock)),
      );
      scenarios.push(seq, cont);
      const oursName = nameOf(oursLock);
      targets.push(
        checkFigure(
          cont.id,
          'lock contended: every contender served (least-served share > 0)',
          OURS,
          metric(cont, oursName, 'leastServedShare'),
          0.000001,
          '>=',
          loadFailure(oursLock) ?? missing(cont, oursName),
        ),
        checkFigure(
          cont.id,
          'lock contended: no failed acquire (ours)',
          OURS,
          metric(cont, oursName, 'failures'),
          0,
          '==',
          loadFailure(oursLock) ?? missing(cont, oursName),
        ),
      );
      notes.push(
        'lock figures are reported next to the Redis adapter (no ratio target in the issue); the lock has no FIFO fairness, so least-served is reported, not promised',
      );
      await closeAll(ok);
    }
  } finally {
    const cleaned = await cleanUp().catch((error: unknown) => ({
      deleted: 0,
      left: -1,
      error: String(error),
    }));
    notes.push(`clean-up: ${cleaned.deleted} streams/buckets of this run deleted, ${cleaned.left} left`);
    const redisKeys = await cleanUpRedis().catch(() => 0);
    if (redisKeys > 0) notes.push(`clean-up: ${redisKeys} Redis keys of the reference lock deleted`);
  }

  return suiteReport('nats', started, { peers: peers.map(peerInfo), scenarios, targets, notes });
}
