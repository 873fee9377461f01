/**
 * The NATS suite: @cluster/core on @cluster/adapter-nats side by side with the raw nats.js v3
 * clients (core pub/sub, JetStream publish + pull + ack, KV put/get), in one process against one
 * nats-server with JetStream (NATS_URL, default nats://127.0.0.1:4222). Locks are reported next to
 * the Redis adapter's when a Redis server is reachable (REDIS_URL). Every subject, stream and bucket
 * of the run carries a unique run id; the streams and buckets are deleted at the end.
 */
import { randomBytes } from 'node:crypto';
import process from 'node:process';
import type { LockManager } from '@cluster/core';
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
// Settings (tuned for well under 2 minutes on 2 cores)
// ---------------------------------------------------------------------------------------------

const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
/** Subject prefix of the run (letters, digits, `_`): part of every subject, stream and bucket name. */
const RUN_ID = `bench${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;

const SEQ = { warmupOps: 500, rounds: 5, opsPerRound: 5_000, sampleEvery: 4, maxRoundMs: 600 };
const PUBSUB = { burst: 20_000, sequential: 5_000, rounds: 5, warmup: 5_000, timeoutMs: 20_000 };
const QUEUE = { jobs: 5_000, chunk: 500, concurrency: 50, rounds: 5, warmup: 500 };
const LOCK_TTL = 10_000;
const LOCK_CONTENDED = { callers: 50, opsPerRound: 1_000, warmupOps: 100, rounds: 2 };

const SEQ_METHOD = `${SEQ.rounds} rounds of up to ${SEQ.opsPerRound.toLocaleString('en-US')} ops or ${SEQ.maxRoundMs} ms after up to ${SEQ.warmupOps} warm-up ops; one caller, every op awaited before the next; rounds interleaved; ops/s = median round; latency on every ${SEQ.sampleEvery}th op`;

const OURS = '@cluster/adapter-nats';

interface Value {
  id: number;
  name: string;
  tags: string[];
}

function makeValue(id: number): Value {
  return { id, name: `item-${id}`, tags: ['a', 'b', 'c'] };
}

function label(loaded: Loaded<unknown>, suffix = ''): string {
  return `${loaded.name}${loaded.version ? `@${loaded.version}` : ''}${suffix ? ` ${suffix}` : ''}`;
}

function unavailableRow(impl: string, reason: string, status?: 'failed'): ReportRow {
  return { impl, available: false, reason, ...(status && { status }), metrics: {} };
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

function missing(s: Scenario | undefined, impl: string | undefined): string | undefined {
  if (s === undefined) return 'scenario not run';
  const row = s.rows.find((r) => r.impl === impl);
  if (row && !row.available) return `${row.impl}: ${row.reason ?? 'unavailable'}`;
  const failed = s.rows.find((r) => r.status === 'failed');
  return failed ? `scenario failed: ${failed.reason}` : undefined;
}

async function rawConnection() {
  const { connect } = await import('@nats-io/transport-node');
  return connect({ servers: NATS_URL, name: 'bench-raw' });
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
  if (got?.id !== 7) throw new Error(`${impl.name}: smoke test read back ${JSON.stringify(got)}`);
}

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
    await smokeKv(impl);
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
    await smokeKv(impl);
    return impl;
  });
  if (loaded.available) loaded.value.name = label(loaded, 'raw KV put/get + JSON');
  return loaded;
}

async function cacheSequential(impls: KvImpl[], skipped: ReportRow[], oursName?: string): Promise<Scenario> {
  const cases = impls.map((impl) => ({
    name: impl.name,
    op: async (i: number) => {
      const key = `key-${i % 1_000}`;
      await impl.set(key, makeValue(i));
      await impl.get(key);
    },
  }));
  const results = await compareThroughput(cases, SEQ);
  return {
    id: 'nats.cache.setget',
    title: '1. cache set + get on JetStream KV, sequential (one op = one set then one get, 1,000 keys)',
    columns: throughputColumns,
    rows: [...throughputRows(results, oursName), ...skipped],
    notes: [
      SEQ_METHOD,
      "ours: core's Cache (serializer, namespacing) over createNatsCacheStore (expiry stored with the value, checked on read); raw: Kvm bucket, put + get with JSON.stringify / parse",
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
    const impl: PubSubImpl = {
      name: 'ours: PubSubManager + createNatsPubSub',
      receiver: () => {},
      publish: (r, s, t) => publisher.publish('tick', { r, s, t } satisfies Tick),
      close: async () => {
        await Promise.all([publisher.close(), subscriber.close()]);
      },
    };
    await subscriber.subscribe('tick', (m: Tick) => impl.receiver(m.r, m.s, m.t));
    return impl;
  });
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

interface PubSubRound {
  msgsPerSec: number;
  received: number;
  lost: number;
  ms: number;
}

let pubSubRoundSeq = 0;

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

async function pubSubThroughput(
  impls: PubSubImpl[],
  skipped: ReportRow[],
  oursName?: string,
): Promise<Scenario> {
  const results: {
    name: string;
    mode: 'burst' | 'sequential';
    messages: number;
    msgsPerSec: number;
    rounds: PubSubRound[];
    lost: number;
    latency: ReturnType<Recorder['stats']>;
  }[] = [];
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
    id: 'nats.pubsub',
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
      "ours: two PubSubManager instances of one app, each with its own createNatsPubSub (own connection); payload { r, s, t } through core's serializer plus the publisher-id envelope; raw: two connections, JSON.stringify / parse of the same payload",
    ],
    raw: results,
  };
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
    const impl: QueueImpl = {
      name: 'ours: EventQueue + createNatsQueue',
      async consume(concurrency, handler) {
        let ready!: () => void;
        const first = new Promise<void>((resolve) => {
          ready = resolve;
        });
        consumer.subscribe('e2e', {
          concurrency,
          process: (payload: { i: number }) => {
            if (payload.i < 0) ready();
            else handler(payload.i);
          },
        });
        await producer.publish('e2e', { i: -1 });
        await first;
      },
      async publishMany(first, count) {
        for (let start = first; start < first + count; start += QUEUE.chunk) {
          const end = Math.min(first + count, start + QUEUE.chunk);
          const sent: Promise<unknown>[] = [];
          for (let i = start; i < end; i++) sent.push(producer.publish('e2e', { i }));
          await Promise.all(sent);
        }
      },
      close: async () => {
        await Promise.all([consumer.close({ timeout: 2_000 }), producer.close({ timeout: 2_000 })]);
      },
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
      async publishMany(first, count) {
        for (let start = first; start < first + count; start += QUEUE.chunk) {
          const end = Math.min(first + count, start + QUEUE.chunk);
          const sent: Promise<unknown>[] = [];
          for (let i = start; i < end; i++)
            sent.push(js.publish(subject, encoder.encode(JSON.stringify({ i }))));
          await Promise.all(sent);
        }
      },
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

async function queueRound(impl: QueueImpl, ref: { fn: (i: number) => void }, first: number, jobs: number) {
  let seen = 0;
  let lastAt = 0;
  let done!: () => void;
  const all = new Promise<void>((resolve) => {
    done = resolve;
  });
  ref.fn = (i) => {
    if (i < first || i >= first + jobs) return;
    seen++;
    lastAt = nowNs();
    if (seen === jobs) done();
  };
  const cpu0 = process.cpuUsage();
  const t0 = nowNs();
  await impl.publishMany(first, jobs);
  const publishMs = sinceMs(t0);
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([all, new Promise<void>((resolve) => (timer = setTimeout(resolve, 60_000)))]);
  clearTimeout(timer);
  const ms = ((seen === jobs ? lastAt : nowNs()) - t0) / 1e6;
  const cpu = process.cpuUsage(cpu0);
  // Let the last acks go out before the next round.
  await new Promise((resolve) => setTimeout(resolve, 100));
  return { ms, publishMs, cpuUsPerJob: (cpu.user + cpu.system) / jobs, missing: jobs - seen };
}

async function queueEndToEnd(
  impls: QueueImpl[],
  skipped: ReportRow[],
  oursName: string | undefined,
  log: (line: string) => void,
): Promise<Scenario> {
  const state = [];
  for (const impl of impls) {
    const ref = { fn: (_i: number) => {} };
    await impl.consume(QUEUE.concurrency, (i) => ref.fn(i));
    state.push({ impl, ref, next: 0, rounds: [] as Awaited<ReturnType<typeof queueRound>>[] });
  }
  for (const s of state) {
    await queueRound(s.impl, s.ref, s.next, QUEUE.warmup);
    s.next += QUEUE.warmup;
  }
  for (let round = 0; round < QUEUE.rounds; round++) {
    for (let k = 0; k < state.length; k++) {
      const s = state[(round + k) % state.length]!;
      (globalThis as { gc?: () => void }).gc?.();
      const r = await queueRound(s.impl, s.ref, s.next, QUEUE.jobs);
      s.next += QUEUE.jobs;
      s.rounds.push(r);
      log(`    ${s.impl.name}: ${Math.round(QUEUE.jobs / (r.ms / 1000))} jobs/s (${r.ms.toFixed(0)} ms)`);
    }
  }
  const results = state.map((s) => ({
    name: s.impl.name,
    jobsPerSec: median(s.rounds.map((r) => (QUEUE.jobs - r.missing) / (r.ms / 1000))),
    roundMs: s.rounds.map((r) => r.ms),
    publishMs: s.rounds.map((r) => r.publishMs),
    cpuUsPerJob: s.rounds.map((r) => r.cpuUsPerJob),
    missing: s.rounds.reduce((a, r) => a + r.missing, 0),
  }));
  const ours = results.find((r) => r.name === oursName);
  return {
    id: 'nats.queue.e2e',
    title: `3. queue end to end on JetStream, ${QUEUE.jobs.toLocaleString('en-US')} no-op jobs, consumer concurrency ${QUEUE.concurrency}`,
    columns: [
      { key: 'jobsPerSec', label: 'jobs/s', format: fmt.ops },
      { key: 'roundMs', label: 'round ms', format: fmt.ms },
      { key: 'publishMs', label: 'published ms', format: fmt.ms },
      { key: 'cpuUsPerJob', label: 'cpu µs/job', format: fmt.us },
      { key: 'missing', label: 'missing', format: fmt.int },
      ratioColumn(),
    ],
    rows: [
      ...results.map((r) => ({
        impl: r.name,
        available: true,
        metrics: {
          jobsPerSec: r.jobsPerSec,
          roundMs: median(r.roundMs),
          publishMs: median(r.publishMs),
          cpuUsPerJob: median(r.cpuUsPerJob),
          missing: r.missing,
          oursOverThis: ours ? ours.jobsPerSec / r.jobsPerSec : null,
        },
      })),
      ...skipped,
    ],
    notes: [
      `jobs/s = jobs / (first publish call -> last handler started), consumer idle and ready at t0; median of ${QUEUE.rounds} interleaved rounds after a ${QUEUE.warmup}-job warm-up; ${QUEUE.chunk} publish calls in flight at a time`,
      'ours: EventQueue producer and consumer instances over createNatsQueue (work stream + durable pull consumer with explicit acks, fetch sized to the free slots, headers for id/retries/timeout, per-attempt timeout and backoff in the manager)',
      'raw: js.publish + consumer.consume({ max_messages: concurrency }) + ack on the same kind of work-queue stream; it has no concurrency bound beyond the pull batch, no timeouts, no retries',
      'producer and consumer share this one Node thread: jobs/s is bounded by the client CPU per job',
      "ours opens its connections with nats.js' noAsyncTraces (no eager Error objects per request; its failures are ClusterErrors anyway); raw uses nats.js defaults",
    ],
    raw: results,
  };
}

// ---------------------------------------------------------------------------------------------
// 4. lock
// ---------------------------------------------------------------------------------------------

interface LockImpl {
  name: string;
  cycle(key: string, onAcquired?: () => void): Promise<void>;
  close(): Promise<void>;
}

function lockImpl(name: string, lm: LockManager): LockImpl {
  return {
    name,
    async cycle(key, onAcquired) {
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
    await impl.cycle('smoke');
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
    await impl.cycle('smoke');
    return impl;
  });
}

async function lockSequential(impls: LockImpl[], skipped: ReportRow[], oursName?: string): Promise<Scenario> {
  const cases = impls.map((impl, n) => ({ name: impl.name, op: () => impl.cycle(`seq-${n}`) }));
  const results = await compareThroughput(cases, SEQ);
  return {
    id: 'nats.lock.sequential',
    title: `4a. lock acquire + release, sequential, one key per implementation, ttl ${LOCK_TTL} ms`,
    columns: throughputColumns,
    rows: [...throughputRows(results, oursName), ...skipped],
    notes: [
      SEQ_METHOD,
      'ours (NATS): KV create (or update of an expired lease) to acquire, the revision as fencing token, owner-checked delete on the last revision to release: 2 round trips per cycle plus a read on release',
      'reference (Redis adapter, not a target): one script per acquire and per release, FIFO waiters',
    ],
    raw: results,
  };
}

async function lockContended(impls: LockImpl[], skipped: ReportRow[], oursName?: string): Promise<Scenario> {
  const failures = new Map<string, number>();
  const errors = new Map<string, string>();
  const cases = impls.map((impl) => {
    failures.set(impl.name, 0);
    return {
      name: impl.name,
      async op(_caller: number, calledAt: number, wait: Recorder) {
        try {
          await impl.cycle('contended', () => wait.record(nowNs() - calledAt));
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
    id: 'nats.lock.contended',
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
      `${LOCK_CONTENDED.rounds} rounds of ${LOCK_CONTENDED.opsPerRound.toLocaleString('en-US')} ops shared by the contenders after ${LOCK_CONTENDED.warmupOps} warm-up ops; wait = acquire call -> lock held`,
      'least-served = min ops of one contender / mean ops per contender (1.00 = perfectly fair, 0 = starvation)',
      "ours (NATS): one LockManager, waiters woken by a KV watch on the key (fairness 'none': every woken waiter races a create); Redis adapter: FIFO line",
      ...[...errors].map(([name, message]) => `${name}: last failure: ${message}`),
    ],
    raw: results,
  };
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
  return loaded.available ? undefined : loaded.reason;
}

async function closeAll(items: { close(): Promise<void> }[]): Promise<void> {
  await Promise.allSettled(items.map((i) => i.close()));
}

export async function runNatsSuite(log: (line: string) => void = () => {}): Promise<SuiteReport> {
  const startedAt = new Date();
  const t0 = nowNs();
  const scenarios: Scenario[] = [];
  const targets: TargetCheck[] = [];
  const notes: string[] = [
    'ratios are ours/peer on throughput (ops/s, msgs/s, jobs/s): above 1.00x ours is faster',
    `server ${NATS_URL.replace(/\/\/[^@/]*@/, '//***@')}, run id ${RUN_ID} (every subject, stream and bucket of the run contains it)`,
    'the machine is shared with other work while this runs: figures move between runs; compare ratios taken in one run',
  ];

  log(`connecting to ${NATS_URL.replace(/\/\/[^@/]*@/, '//***@')}...`);
  const server = await loadPeer('@nats-io/transport-node', async () => {
    const nc = await rawConnection();
    const version = nc.info?.version ?? '?';
    const jetstream = nc.info?.jetstream === true;
    await nc.close();
    if (!jetstream) throw new Error(`nats-server ${version} runs without JetStream`);
    return { version };
  });
  const peers: Loaded<unknown>[] = [server];
  if (!server.available) {
    scenarios.push({
      id: 'nats',
      title: 'NATS suite (UNAVAILABLE)',
      columns: [],
      rows: [unavailableRow('all implementations', `NATS at NATS_URL is not usable: ${server.reason}`)],
      notes: ['start nats-server with JetStream (`nats-server -js`) or set NATS_URL'],
    });
    return {
      suite: 'nats',
      startedAt: startedAt.toISOString(),
      durationMs: sinceMs(t0),
      machine: machineInfo(),
      peers: peers.map(peerInfo),
      scenarios,
      targets,
      notes,
    };
  }
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
        checkTarget(
          s.id,
          'cache set+get ops/s: ours >= 0.90x raw KV put/get',
          { name: OURS, value: metric(s, nameOf(oursKv), 'opsPerSec') },
          {
            name: label(rawKv),
            value: metric(s, nameOf(rawKv), 'opsPerSec'),
            reason: reasonOf(rawKv) ?? reasonOf(oursKv) ?? missing(s, nameOf(oursKv)),
          },
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
        () => pubSubThroughput(ok, skipped, nameOf(oursPs)),
      );
      scenarios.push(s);
      targets.push(
        checkTarget(
          s.id,
          'pub/sub burst msgs/s: ours >= 0.90x raw core NATS',
          { name: OURS, value: metric(s, `${nameOf(oursPs)} [burst]`, 'msgsPerSec') },
          {
            name: label(rawPs),
            value: metric(s, `${nameOf(rawPs)} [burst]`, 'msgsPerSec'),
            reason: reasonOf(rawPs) ?? reasonOf(oursPs) ?? missing(s, `${nameOf(oursPs)} [burst]`),
          },
          0.9,
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
        checkTarget(
          s.id,
          'queue end-to-end jobs/s: ours >= 0.80x raw JetStream publish+pull+ack',
          { name: OURS, value: metric(s, nameOf(oursQ), 'jobsPerSec') },
          {
            name: label(rawQ),
            value: metric(s, nameOf(rawQ), 'jobsPerSec'),
            reason: reasonOf(rawQ) ?? reasonOf(oursQ) ?? missing(s, nameOf(oursQ)),
          },
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
        lockSequential(ok, skipped, nameOf(oursLock)),
      );
      const cont = await guard('nats.lock.contended', '4b. lock contended', names, () =>
        lockContended(ok, skipped, nameOf(oursLock)),
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
          reasonOf(oursLock) ?? missing(cont, oursName),
        ),
        checkFigure(
          cont.id,
          'lock contended: no failed acquire (ours)',
          OURS,
          metric(cont, oursName, 'failures'),
          0,
          '==',
          reasonOf(oursLock) ?? missing(cont, oursName),
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

  return {
    suite: 'nats',
    startedAt: startedAt.toISOString(),
    durationMs: sinceMs(t0),
    machine: machineInfo(),
    peers: peers.map(peerInfo),
    scenarios,
    targets,
    notes,
  };
}
