/**
 * The RabbitMQ suite: @cluster/core on @cluster/adapter-rabbitmq side by side with raw amqplib
 * (quorum queue, confirm channel, prefetch 100, manual acks; a fanout exchange for pub/sub) and
 * BullMQ at concurrency 50 (on Redis), in one process against one broker (AMQP_URL, default
 * amqp://guest:guest@127.0.0.1:5672) and one Redis (REDIS_URL). Every exchange and queue this run
 * declares carries a unique run id and is deleted at the end; BullMQ's queues are obliterated (its
 * keys are under a run-id prefix; nothing ever runs FLUSHALL).
 */
import { randomBytes } from 'node:crypto';
import process from 'node:process';
import type { Channel, ChannelModel, ConfirmChannel } from 'amqplib';
import {
  checkFigure,
  checkTarget,
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
} from './harness.js';

// ---------------------------------------------------------------------------------------------
// Settings (tuned for about a minute and a half on 2 cores)
// ---------------------------------------------------------------------------------------------

const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
/** Part of every exchange and queue name of this run. */
const RUN_ID = `bench${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;

const PUBSUB = { burst: 20_000, sequential: 3_000, rounds: 3, warmup: 5_000, timeoutMs: 20_000 };
const QUEUE = { jobs: 10_000, chunk: 1_000, rounds: 3, warmup: 1_000, pickups: 200, pickupWarmup: 20 };
const RAW_PREFETCH = 100;
const OURS = '@cluster/adapter-rabbitmq';

/** Resolves at the channel's next 'drain' (its write buffer emptied after publish() returned false). */
function drainOf(channel: Channel): Promise<void> {
  return new Promise((resolve) => channel.once('drain', () => resolve()));
}

function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
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

function missing(s: Scenario | undefined, impl: string | undefined): string | undefined {
  if (s === undefined) return 'scenario not run';
  const row = s.rows.find((r) => r.impl === impl);
  if (row && !row.available) return `${row.impl}: ${row.reason ?? 'unavailable'}`;
  const failed = s.rows.find((r) => r.status === 'failed');
  return failed ? `scenario failed: ${failed.reason}` : undefined;
}

function nameOf(loaded: Loaded<{ name: string }>): string | undefined {
  return loaded.available ? loaded.value.name : undefined;
}

function reasonOf(loaded: Loaded<unknown>): string | undefined {
  return loaded.available ? undefined : `${loaded.name} unavailable: ${loaded.reason}`;
}

function split<T extends { name: string }>(loaded: Loaded<T>[]): { ok: T[]; skipped: ReportRow[] } {
  const ok: T[] = [];
  const skipped: ReportRow[] = [];
  for (const l of loaded) {
    if (l.available) ok.push(l.value);
    else skipped.push(unavailableRow(label(l), l.reason));
  }
  return { ok, skipped };
}

async function closeAll(items: { close(): Promise<void> }[]): Promise<void> {
  await Promise.all(items.map((i) => i.close().catch(() => {})));
}

/** Everything this run declared, deleted at the end. */
const declared = { queues: new Set<string>(), exchanges: new Set<string>() };

async function rawConnection(): Promise<ChannelModel> {
  const amqp = (await import('amqplib')).default;
  const connection = await amqp.connect(AMQP_URL, { noDelay: true });
  connection.on('error', () => {});
  return connection;
}

/** The adapter topology(): every queue and exchange it declared, for the clean-up. */
function remember(adapter: {
  topology(): { exchanges: readonly string[]; queues: readonly string[] };
}): void {
  const { exchanges, queues } = adapter.topology();
  for (const e of exchanges) declared.exchanges.add(e);
  for (const q of queues) declared.queues.add(q);
}

// ---------------------------------------------------------------------------------------------
// 1. pub/sub throughput
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
    const { createCluster } = await import('@cluster/core');
    const { createRabbitPubSub } = await import('@cluster/adapter-rabbitmq');
    const adapters = [0, 1].map(() => createRabbitPubSub({ url: AMQP_URL, prefix: RUN_ID }));
    const make = (instanceId: string, i: number) =>
      createCluster({ name: 'bench-ps', instanceId, pubSub: { adapter: adapters[i]! } });
    const publisher = make('publisher', 0);
    const subscriber = make('subscriber', 1);
    await Promise.all([publisher.start(), subscriber.start()]);
    const impl: PubSubImpl = {
      name: '',
      receiver: () => {},
      publish: (r, s, t) => publisher.pubSubManager.publish('tick', { r, s, t } satisfies Tick),
      close: async () => {
        for (const a of adapters) remember(a);
        await Promise.all([publisher.stop(), subscriber.stop()]);
      },
    };
    await subscriber.pubSubManager.subscribe('tick', (m: Tick) => impl.receiver(m.r, m.s, m.t));
    return impl;
  });
  if (loaded.available) loaded.value.name = 'ours: PubSubManager + createRabbitPubSub (confirmed)';
  return loaded;
}

/** Raw amqplib fanout: one exchange, an exclusive auto-delete queue consumed without acks. */
async function loadRawPubSub(confirm: boolean): Promise<Loaded<PubSubImpl>> {
  const loaded = await loadPeer('amqplib', async () => {
    const [pubConn, subConn] = await Promise.all([rawConnection(), rawConnection()]);
    const exchange = `${RUN_ID}.raw-fanout${confirm ? '-confirm' : ''}`;
    declared.exchanges.add(exchange);
    const pub: Channel | ConfirmChannel = confirm
      ? await pubConn.createConfirmChannel()
      : await pubConn.createChannel();
    pub.on('error', () => {});
    await pub.assertExchange(exchange, 'fanout', { durable: false });
    const sub = await subConn.createChannel();
    sub.on('error', () => {});
    const { queue } = await sub.assertQueue('', { exclusive: true, autoDelete: true });
    await sub.bindQueue(queue, exchange, '');
    let drain: Promise<void> | undefined;
    const impl: PubSubImpl = {
      name: '',
      receiver: () => {},
      async publish(r, s, t) {
        if (drain) await drain;
        const body = Buffer.from(JSON.stringify({ r, s, t } satisfies Tick));
        if (confirm) {
          await new Promise<void>((resolve, reject) => {
            const ok = (pub as ConfirmChannel).publish(exchange, '', body, {}, (error: unknown) =>
              error ? reject(error) : resolve(),
            );
            if (!ok)
              drain ??= drainOf(pub).then(() => {
                drain = undefined;
              });
          });
        } else if (!pub.publish(exchange, '', body)) {
          drain ??= drainOf(pub).then(() => {
            drain = undefined;
          });
        }
      },
      close: async () => {
        await pubConn.close().catch(() => {});
        await subConn.close().catch(() => {});
      },
    };
    await sub.consume(
      queue,
      (m) => {
        if (m === null) return;
        const tick = JSON.parse(m.content.toString()) as Tick;
        impl.receiver(tick.r, tick.s, tick.t);
      },
      { noAck: true },
    );
    return impl;
  });
  if (loaded.available)
    loaded.value.name = label(loaded, confirm ? 'raw fanout, confirm channel' : 'raw fanout, no confirms');
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
    for (const s of state) await pubSubRound(s.impl, mode === 'burst' ? PUBSUB.warmup : 500, mode, undefined);
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
    id: 'rabbitmq.pubsub',
    title: `1. pub/sub throughput, one publisher instance -> one subscriber instance (${PUBSUB.burst.toLocaleString('en-US')} msgs all in flight [burst]; ${PUBSUB.sequential.toLocaleString('en-US')} msgs each awaited [sequential])`,
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
      `msgs/s = messages / (first publish call -> last message received), median of ${PUBSUB.rounds} interleaved rounds after a warm-up; deliv = publish call -> handler, every 4th message`,
      "ours: two createCluster instances of one app, each with its own createRabbitPubSub (own connection); core's serializer plus the publisher-id envelope; every publish awaits the broker's confirm",
      'raw: two amqplib connections, a fanout exchange, an exclusive auto-delete queue consumed with noAck, JSON of the same payload; with a confirm channel (each publish awaits its confirm, as ours) and without confirms (publish() returns at once, drain respected)',
    ],
    raw: results,
  };
}

// ---------------------------------------------------------------------------------------------
// 2. queue end-to-end and pickup latency
// ---------------------------------------------------------------------------------------------

type JobHandler = (i: number) => void;

interface QueueImpl {
  name: string;
  consume(channel: string, handler: JobHandler): Promise<void>;
  publishMany(channel: string, first: number, count: number): Promise<void>;
  publishOne(channel: string, i: number): Promise<unknown>;
  drained(channel: string, timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
}

async function loadOursQueue(concurrency: number): Promise<Loaded<QueueImpl>> {
  const loaded = await loadPeer(OURS, async () => {
    const { createCluster } = await import('@cluster/core');
    const { createRabbitQueue } = await import('@cluster/adapter-rabbitmq');
    const adapters = [0, 1].map(() => createRabbitQueue({ url: AMQP_URL, prefix: RUN_ID }));
    const make = (instanceId: string, i: number) =>
      // One app per concurrency: two of them on one channel would compete for each other's jobs.
      createCluster({ name: `bench-q-c${concurrency}`, instanceId, queue: { adapter: adapters[i]! } });
    const producer = make('producer', 0);
    const consumer = make('consumer', 1);
    await Promise.all([producer.start(), consumer.start()]);
    const impl: QueueImpl = {
      name: '',
      async consume(channel, handler) {
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
            const s = await consumer.eventQueue.stats(channel);
            return s.pending + s.inFlight + s.delayed === 0;
          },
          timeoutMs,
          20,
        ),
      close: async () => {
        for (const a of adapters) remember(a);
        await Promise.all([consumer.stop(), producer.stop()]);
      },
    };
    return impl;
  });
  if (loaded.available) loaded.value.name = `ours: EventQueue + createRabbitQueue [c=${concurrency}]`;
  return loaded;
}

/** Raw amqplib: a quorum queue, a confirm channel for publishing, prefetch 100 and manual acks. */
async function loadRawQueue(): Promise<Loaded<QueueImpl>> {
  const loaded = await loadPeer('amqplib', async () => {
    const [pubConn, subConn] = await Promise.all([rawConnection(), rawConnection()]);
    const pub = await pubConn.createConfirmChannel();
    pub.on('error', () => {});
    const sub = await subConn.createChannel();
    sub.on('error', () => {});
    await sub.prefetch(RAW_PREFETCH);
    const asserted = new Set<string>();
    const queueOf = async (channel: string) => {
      const name = `${RUN_ID}.raw.${channel}`;
      if (!asserted.has(name)) {
        declared.queues.add(name);
        await pub.assertQueue(name, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
        asserted.add(name);
      }
      return name;
    };
    let drain: Promise<void> | undefined;
    const send = async (queue: string, i: number) => {
      if (drain) await drain;
      await new Promise<void>((resolve, reject) => {
        const ok = pub.sendToQueue(
          queue,
          Buffer.from(JSON.stringify({ i })),
          { persistent: true },
          (error: unknown) => (error ? reject(error) : resolve()),
        );
        if (!ok)
          drain ??= drainOf(pub).then(() => {
            drain = undefined;
          });
      });
    };
    const impl: QueueImpl = {
      name: '',
      async consume(channel, handler) {
        const queue = await queueOf(channel);
        let ready!: () => void;
        const first = new Promise<void>((resolve) => {
          ready = resolve;
        });
        await sub.consume(
          queue,
          (m) => {
            if (m === null) return;
            const { i } = JSON.parse(m.content.toString()) as { i: number };
            if (i < 0) ready();
            else handler(i);
            sub.ack(m);
          },
          { noAck: false },
        );
        await send(queue, -1);
        await first;
      },
      async publishMany(channel, first, count) {
        const queue = await queueOf(channel);
        for (let start = first; start < first + count; start += QUEUE.chunk) {
          const end = Math.min(first + count, start + QUEUE.chunk);
          const sent: Promise<unknown>[] = [];
          for (let i = start; i < end; i++) sent.push(send(queue, i));
          await Promise.all(sent);
        }
      },
      publishOne: async (channel, i) => send(await queueOf(channel), i),
      drained: async (channel, timeoutMs) => {
        const queue = await queueOf(channel);
        return waitFor(async () => (await pub.checkQueue(queue)).messageCount === 0, timeoutMs, 20);
      },
      close: async () => {
        await pubConn.close().catch(() => {});
        await subConn.close().catch(() => {});
      },
    };
    return impl;
  });
  if (loaded.available)
    loaded.value.name = label(loaded, `raw quorum queue, confirms + prefetch ${RAW_PREFETCH}, manual ack`);
  return loaded;
}

function redisOptionsFromUrl(url: string) {
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

async function loadBullmq(concurrency: number): Promise<Loaded<QueueImpl>> {
  const loaded = await loadPeer('bullmq', async () => {
    const { Queue, Worker } = await import('bullmq');
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
      async consume(channel, handler) {
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
  if (loaded.available)
    loaded.value.name = label(loaded, `Queue.addBulk + Worker [c=${concurrency}] (Redis)`);
  return loaded;
}

interface QueueRound {
  ms: number;
  publishMs: number;
  cpuUsPerJob: number;
  missing: number;
}

async function queueRound(
  impl: QueueImpl,
  channel: string,
  handlerRef: { fn: JobHandler },
  first: number,
  jobs: number,
): Promise<QueueRound> {
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
  await Promise.race([all, new Promise<void>((resolve) => (timer = setTimeout(resolve, 20_000)))]);
  clearTimeout(timer);
  const ms = ((seen === jobs ? lastAt : nowNs()) - t0) / 1e6;
  const cpu = process.cpuUsage(cpu0);
  await impl.drained(channel, 10_000);
  return { ms, publishMs, cpuUsPerJob: (cpu.user + cpu.system) / jobs, missing: jobs - seen };
}

async function queueEndToEnd(
  impls: QueueImpl[],
  skipped: ReportRow[],
  oursName: string | undefined,
  log: (line: string) => void,
): Promise<Scenario> {
  const channel = 'e2e';
  const state = [];
  for (const impl of impls) {
    const handlerRef: { fn: JobHandler } = { fn: () => {} };
    await impl.consume(channel, (i) => handlerRef.fn(i));
    state.push({ impl, handlerRef, next: 0, rounds: [] as QueueRound[] });
  }
  for (const s of state) {
    await queueRound(s.impl, channel, s.handlerRef, s.next, QUEUE.warmup);
    s.next += QUEUE.warmup;
  }
  for (let round = 0; round < QUEUE.rounds; round++) {
    for (let k = 0; k < state.length; k++) {
      const s = state[(round + k) % state.length]!;
      (globalThis as { gc?: () => void }).gc?.();
      const r = await queueRound(s.impl, channel, s.handlerRef, s.next, QUEUE.jobs);
      s.next += QUEUE.jobs;
      s.rounds.push(r);
      log(`    ${s.impl.name}: ${Math.round(QUEUE.jobs / (r.ms / 1000))} jobs/s (${r.ms.toFixed(0)} ms)`);
    }
  }
  const results = state.map((s) => ({
    name: s.impl.name,
    jobsPerSec: median(s.rounds.map((r) => (QUEUE.jobs - r.missing) / (r.ms / 1000))),
    rounds: s.rounds,
  }));
  const ours = results.find((r) => r.name === oursName);
  const rows: ReportRow[] = results.map((r) => ({
    impl: r.name,
    available: true,
    metrics: {
      jobsPerSec: r.jobsPerSec,
      roundMs: median(r.rounds.map((x) => x.ms)),
      publishMs: median(r.rounds.map((x) => x.publishMs)),
      cpuUsPerJob: median(r.rounds.map((x) => x.cpuUsPerJob)),
      missing: r.rounds.reduce((a, x) => a + x.missing, 0),
      rounds: r.rounds.length,
      oursOverThis: ours ? ours.jobsPerSec / r.jobsPerSec : null,
    },
  }));
  return {
    id: 'rabbitmq.queue.e2e',
    title: `2a. queue end to end, ${QUEUE.jobs.toLocaleString('en-US')} no-op jobs per round`,
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
      `jobs/s = jobs / (first publish call -> last handler started), consumer idle and ready at t0; median of ${QUEUE.rounds} interleaved rounds after a ${QUEUE.warmup}-job warm-up; drained (untimed) between rounds`,
      `publishing: ${QUEUE.chunk} concurrent publishes at a time, each awaiting its confirm (ours: EventQueue.publish; raw: sendToQueue on a confirm channel); BullMQ: Queue.addBulk of ${QUEUE.chunk}`,
      'ours: producer and consumer createCluster instances, each with its own createRabbitQueue (own connection); quorum work queue, manual acks after the handler, prefetch = concurrency, claim sweep, retries/DLQ topology declared',
      'producer and consumer share this one Node thread: jobs/s is bounded by client CPU per job as much as by the broker',
      'BullMQ runs on Redis (REDIS_URL), not RabbitMQ: { maxRetriesPerRequest: null }, removeOnComplete, own key prefix, obliterated at the end',
    ],
    raw: results,
  };
}

async function queuePickup(impls: QueueImpl[], skipped: ReportRow[], oursName?: string): Promise<Scenario> {
  const state = [];
  for (const impl of impls) {
    const waiting = new Map<number, () => void>();
    await impl.consume('pickup', (i) => waiting.get(i)?.());
    state.push({ impl, waiting, recorder: new Recorder() });
  }
  const total = QUEUE.pickupWarmup + QUEUE.pickups;
  for (let n = 0; n < total; n++) {
    for (let k = 0; k < state.length; k++) {
      const s = state[(n + k) % state.length]!;
      const started = new Promise<void>((resolve) => s.waiting.set(n, resolve));
      const t0 = nowNs();
      // Timed until the handler starts (publish resolved or not): the pickup, not the confirm.
      const published = s.impl.publishOne('pickup', n);
      await started;
      if (n >= QUEUE.pickupWarmup) s.recorder.record(nowNs() - t0);
      await published;
      s.waiting.delete(n);
      await sleep(5);
    }
  }
  const stats = state.map((s) => ({ name: s.impl.name, latency: s.recorder.stats() }));
  const ours = stats.find((r) => r.name === oursName);
  return {
    id: 'rabbitmq.queue.pickup',
    title: `2b. queue single-job pickup latency (publish one job -> its handler starts; consumer idle), ${QUEUE.pickups} samples`,
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
// Suite
// ---------------------------------------------------------------------------------------------

async function cleanUp(): Promise<{ queues: number; exchanges: number }> {
  const connection = await rawConnection();
  try {
    const channel = await connection.createChannel();
    channel.on('error', () => {});
    for (const q of declared.queues) await channel.deleteQueue(q);
    for (const e of declared.exchanges) await channel.deleteExchange(e);
    await channel.close();
    return { queues: declared.queues.size, exchanges: declared.exchanges.size };
  } finally {
    await connection.close().catch(() => {});
  }
}

export async function runRabbitmqSuite(log: (line: string) => void = () => {}): Promise<SuiteReport> {
  const startedAt = new Date();
  const t0 = nowNs();
  const scenarios: Scenario[] = [];
  const targets: TargetCheck[] = [];
  const notes: string[] = [
    'ratios are ours/peer on throughput (msgs/s, jobs/s): above 1.00x ours is faster; pickup compares p50 latency',
    `broker ${redact(AMQP_URL)}, run id ${RUN_ID} (every exchange and queue of the run contains it)`,
    'the machine is shared with other work running at the same time (other test suites): figures vary between runs',
  ];
  log(`connecting to ${redact(AMQP_URL)}...`);
  const server = await loadPeer('amqplib', async () => {
    const connection = await rawConnection();
    const props = (connection as unknown as { connection: { serverProperties?: { version?: string } } })
      .connection.serverProperties;
    await connection.close();
    return { version: props?.version ?? '?' };
  });
  const peers: Loaded<unknown>[] = [server];
  if (!server.available) {
    scenarios.push({
      id: 'rabbitmq',
      title: 'RabbitMQ suite (UNAVAILABLE)',
      columns: [],
      rows: [
        unavailableRow('all implementations', `RabbitMQ at AMQP_URL is not reachable: ${server.reason}`),
      ],
      notes: ['start RabbitMQ (e.g. `docker compose up -d rabbitmq`) or set AMQP_URL'],
    });
    return {
      suite: 'rabbitmq',
      startedAt: startedAt.toISOString(),
      durationMs: sinceMs(t0),
      machine: machineInfo(),
      peers: peers.map(peerInfo),
      scenarios,
      targets,
      notes,
    };
  }
  notes.push(`rabbitmq-server ${server.value.version}`);

  let oursPs: Loaded<unknown> = server;
  try {
    // 1. pub/sub -----------------------------------------------------------------------------------
    log('1/3 pub/sub throughput...');
    const psLoaded = [await loadOursPubSub(), await loadRawPubSub(true), await loadRawPubSub(false)];
    const [loadedPs, rawPsConfirm, rawPsPlain] = psLoaded as [
      Loaded<PubSubImpl>,
      Loaded<PubSubImpl>,
      Loaded<PubSubImpl>,
    ];
    oursPs = loadedPs;
    {
      const { ok, skipped } = split(psLoaded);
      const s = await guard(
        'rabbitmq.pubsub',
        '1. pub/sub throughput',
        ok.map((i) => i.name),
        () => pubSubThroughput(ok, skipped, nameOf(loadedPs)),
      );
      scenarios.push(s);
      const burst = (l: Loaded<PubSubImpl>) => (nameOf(l) ? `${nameOf(l)} [burst]` : undefined);
      for (const [peer, peerName] of [
        [rawPsConfirm, 'raw amqplib fanout (confirm channel)'],
        [rawPsPlain, 'raw amqplib fanout (no confirms)'],
      ] as const) {
        targets.push(
          checkTarget(
            s.id,
            `pub/sub msgs/s (${PUBSUB.burst.toLocaleString('en-US')} in flight): ours >= 0.90x ${peerName}`,
            { name: OURS, value: metric(s, burst(loadedPs), 'msgsPerSec') },
            {
              name: peerName,
              value: metric(s, burst(peer), 'msgsPerSec'),
              reason: reasonOf(loadedPs) ?? reasonOf(peer) ?? missing(s, burst(loadedPs)),
            },
            0.9,
          ),
        );
      }
      await closeAll(ok);
    }

    // 2. queue --------------------------------------------------------------------------------------
    log('2/3 queue end to end...');
    const qLoaded = [
      await loadOursQueue(50),
      await loadOursQueue(100),
      await loadRawQueue(),
      await loadBullmq(50),
    ];
    const [ours50, ours100, rawQ, bull] = qLoaded as [
      Loaded<QueueImpl>,
      Loaded<QueueImpl>,
      Loaded<QueueImpl>,
      Loaded<QueueImpl>,
    ];
    peers.push(bull);
    {
      const { ok, skipped } = split(qLoaded);
      const e2e = await guard(
        'rabbitmq.queue.e2e',
        '2a. queue end to end',
        ok.map((i) => i.name),
        () => queueEndToEnd(ok, skipped, nameOf(ours100), log),
      );
      scenarios.push(e2e);
      targets.push(
        checkTarget(
          e2e.id,
          `queue jobs/s: ours (c=100, so prefetch 100) >= 0.80x raw amqplib (confirms, prefetch ${RAW_PREFETCH})`,
          { name: OURS, value: metric(e2e, nameOf(ours100), 'jobsPerSec') },
          {
            name: 'raw amqplib',
            value: metric(e2e, nameOf(rawQ), 'jobsPerSec'),
            reason: reasonOf(ours100) ?? reasonOf(rawQ) ?? missing(e2e, nameOf(ours100)),
          },
          0.8,
        ),
        checkTarget(
          e2e.id,
          'queue jobs/s at concurrency 50: ours >= 2.00x BullMQ',
          { name: OURS, value: metric(e2e, nameOf(ours50), 'jobsPerSec') },
          {
            name: 'bullmq',
            value: metric(e2e, nameOf(bull), 'jobsPerSec'),
            reason: reasonOf(ours50) ?? reasonOf(bull) ?? missing(e2e, nameOf(ours50)),
          },
          2.0,
        ),
      );
      await closeAll(ok);
    }

    log('3/3 queue pickup latency...');
    const pLoaded = [await loadOursQueue(1), await loadRawQueue(), await loadBullmq(1)];
    const [oursP] = pLoaded as [Loaded<QueueImpl>, Loaded<QueueImpl>, Loaded<QueueImpl>];
    {
      const { ok, skipped } = split(pLoaded);
      const pickup = await guard(
        'rabbitmq.queue.pickup',
        '2b. queue pickup latency',
        ok.map((i) => i.name),
        () => queuePickup(ok, skipped, nameOf(oursP)),
      );
      scenarios.push(pickup);
      const p50 = metric(pickup, nameOf(oursP), 'p50Us');
      targets.push(
        checkFigure(
          pickup.id,
          'queue single-job pickup p50 <= 0.45 ms',
          OURS,
          p50 === null ? null : p50 / 1e3,
          0.45,
          '<=',
          reasonOf(oursP) ?? missing(pickup, nameOf(oursP)),
        ),
      );
      await closeAll(ok);
    }
  } finally {
    // Also after a failed scenario: nothing of the run is left on the broker.
    log('cleaning up this run’s queues and exchanges...');
    try {
      const { queues, exchanges } = await cleanUp();
      notes.push(`clean-up: ${queues} queues and ${exchanges} exchanges of this run deleted`);
    } catch (error) {
      notes.push(`clean-up FAILED: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  return {
    suite: 'rabbitmq',
    startedAt: startedAt.toISOString(),
    durationMs: sinceMs(t0),
    machine: machineInfo(),
    peers: [oursPs, ...peers].map(peerInfo),
    scenarios,
    targets,
    notes,
  };
}
