/**
 * The RabbitMQ suite: @cluster/core on @cluster/adapter-rabbitmq side by side with raw amqplib
 * (quorum queue, confirm channel, prefetch 100, manual acks; a fanout exchange for pub/sub) and
 * BullMQ at concurrency 50 (on Redis), in one process against one broker (AMQP_URL, default
 * amqp://guest:guest@127.0.0.1:5672) and one Redis (REDIS_URL). Every exchange and queue this run
 * declares carries a unique run id and is deleted at the end; BullMQ's queues are obliterated (its
 * keys are under a run-id prefix; nothing ever runs FLUSHALL).
 */
import process from 'node:process';
import type { Channel, ChannelModel, ConfirmChannel } from 'amqplib';
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
import { loadBullmq as loadBullmqQueue } from './peers/bullmq.js';
import { burstRow, managerPubSub, type PubSubImpl, pubSubThroughput, type Tick } from './scenarios/pubsub.js';
import {
  type ChannelQueue,
  type ConcurrentChannelQueue,
  channelLane,
  eventQueueChannels,
  type JobHandler,
  publishInChunks,
  queueE2eColumns,
  queueE2eRows,
  queuePickup,
  runQueueRounds,
} from './scenarios/queue.js';
import {
  closeAll,
  guard,
  label,
  metric,
  missing,
  nameOf,
  newRunId,
  REDIS_URL,
  reasonOf,
  redact,
  split,
  startClock,
  suiteReport,
  unreachableReport,
  waitFor,
} from './suite.js';

// ---------------------------------------------------------------------------------------------
// Settings (tuned for about a minute and a half on 2 cores)
// ---------------------------------------------------------------------------------------------

const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
/** Part of every exchange and queue name of this run. */
const RUN_ID = newRunId();

const PUBSUB = {
  burst: 20_000,
  sequential: 3_000,
  rounds: 3,
  warmup: 5_000,
  sequentialWarmup: 500,
  timeoutMs: 20_000,
};
const QUEUE = { jobs: 10_000, chunk: 1_000, rounds: 3, warmup: 1_000, pickups: 200, pickupWarmup: 20 };
const RAW_PREFETCH = 100;
const OURS = '@cluster/adapter-rabbitmq';

/** A channel's write buffer: once a write returned false, the next writes wait for its 'drain'. */
class WriteGate {
  /** Pending while the buffer is full: await it (when set) before the next write. */
  blocked: Promise<void> | undefined;
  readonly #channel: Channel;

  constructor(channel: Channel) {
    this.#channel = channel;
  }

  /** Takes the return value of one write. */
  wrote(ok: boolean): void {
    if (ok || this.blocked) return;
    this.blocked = new Promise<void>((resolve) => this.#channel.once('drain', () => resolve())).then(() => {
      this.blocked = undefined;
    });
  }

  /** One write on a confirm channel, resolved at the broker's confirm. */
  confirmed(write: (onConfirm: (error: unknown) => void) => boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.wrote(write((error) => (error ? reject(error) : resolve())));
    });
  }
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
    return managerPubSub(publisher.pubSubManager, subscriber.pubSubManager, async () => {
      for (const a of adapters) remember(a);
      await Promise.all([publisher.stop(), subscriber.stop()]);
    });
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
    const gate = new WriteGate(pub);
    const impl: PubSubImpl = {
      name: '',
      receiver: () => {},
      async publish(r, s, t) {
        if (gate.blocked) await gate.blocked;
        const body = Buffer.from(JSON.stringify({ r, s, t } satisfies Tick));
        if (confirm)
          await gate.confirmed((onConfirm) =>
            (pub as ConfirmChannel).publish(exchange, '', body, {}, onConfirm),
          );
        else gate.wrote(pub.publish(exchange, '', body));
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

function rabbitPubSub(impls: PubSubImpl[], skipped: ReportRow[], oursName?: string): Promise<Scenario> {
  return pubSubThroughput(impls, skipped, oursName, {
    id: 'rabbitmq.pubsub',
    number: '1',
    settings: PUBSUB,
    notes: [
      "ours: two createCluster instances of one app, each with its own createRabbitPubSub (own connection); core's serializer plus the publisher-id envelope; every publish awaits the broker's confirm",
      'raw: two amqplib connections, a fanout exchange, an exclusive auto-delete queue consumed with noAck, JSON of the same payload; with a confirm channel (each publish awaits its confirm, as ours) and without confirms (publish() returns at once, drain respected)',
    ],
  });
}

// ---------------------------------------------------------------------------------------------
// 2. queue end-to-end and pickup latency
// ---------------------------------------------------------------------------------------------

/** Each implementation consumes at the concurrency it was loaded with. */
interface QueueImpl extends ChannelQueue {
  consume(channel: string, handler: JobHandler): Promise<void>;
}

function atConcurrency(impl: ConcurrentChannelQueue, concurrency: number): QueueImpl {
  return { ...impl, consume: (channel, handler) => impl.consume(channel, concurrency, handler) };
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
    const queues = {
      producer: producer.eventQueue,
      consumer: consumer.eventQueue,
      statsOf: consumer.eventQueue,
    };
    const ours = eventQueueChannels(queues, QUEUE.chunk, async () => {
      for (const a of adapters) remember(a);
      await Promise.all([consumer.stop(), producer.stop()]);
    });
    return atConcurrency(ours, concurrency);
  });
  if (loaded.available) loaded.value.name = `ours: EventQueue + createRabbitQueue [c=${concurrency}]`;
  return loaded;
}

/** Raw amqplib: a quorum queue, a confirm channel for publishing, `prefetch` (100) and manual acks. */
async function loadRawQueue(prefetch = RAW_PREFETCH): Promise<Loaded<QueueImpl>> {
  const loaded = await loadPeer('amqplib', async () => {
    const [pubConn, subConn] = await Promise.all([rawConnection(), rawConnection()]);
    const pub = await pubConn.createConfirmChannel();
    pub.on('error', () => {});
    const sub = await subConn.createChannel();
    sub.on('error', () => {});
    await sub.prefetch(prefetch);
    const asserted = new Set<string>();
    const queueOf = async (channel: string) => {
      const name = `${RUN_ID}.raw${prefetch}.${channel}`;
      if (!asserted.has(name)) {
        declared.queues.add(name);
        await pub.assertQueue(name, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
        asserted.add(name);
      }
      return name;
    };
    const gate = new WriteGate(pub);
    const send = async (queue: string, i: number) => {
      if (gate.blocked) await gate.blocked;
      const body = Buffer.from(JSON.stringify({ i }));
      await gate.confirmed((onConfirm) => pub.sendToQueue(queue, body, { persistent: true }, onConfirm));
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
        await publishInChunks(first, count, QUEUE.chunk, (i) => send(queue, i));
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
    loaded.value.name = label(loaded, `raw quorum queue, confirms + prefetch ${prefetch}, manual ack`);
  return loaded;
}

async function loadBullmq(concurrency: number): Promise<Loaded<QueueImpl>> {
  const loaded = await loadBullmqQueue({
    redisUrl: REDIS_URL,
    prefix: `${RUN_ID}-bull`,
    chunk: QUEUE.chunk,
    labelSuffix: `Queue.addBulk + Worker [c=${concurrency}] (Redis)`,
  });
  return loaded.available ? { ...loaded, value: atConcurrency(loaded.value, concurrency) } : loaded;
}

function lanesOn(channel: string, impls: QueueImpl[]) {
  return impls.map((impl) => channelLane(impl, channel, (handler) => impl.consume(channel, handler)));
}

async function queueEndToEnd(
  impls: QueueImpl[],
  skipped: ReportRow[],
  oursName: string | undefined,
  log: (line: string) => void,
): Promise<Scenario> {
  const measured = await runQueueRounds(
    lanesOn('e2e', impls),
    { jobs: QUEUE.jobs, rounds: QUEUE.rounds, warmup: QUEUE.warmup, timeoutMs: 20_000 },
    log,
  );
  return {
    id: 'rabbitmq.queue.e2e',
    title: `2a. queue end to end, ${QUEUE.jobs.toLocaleString('en-US')} no-op jobs per round`,
    columns: queueE2eColumns(true),
    rows: [...queueE2eRows(measured, oursName, { countRounds: true }), ...skipped],
    notes: [
      `jobs/s = jobs / (first publish call -> last handler started), consumer idle and ready at t0; median of ${QUEUE.rounds} interleaved rounds after a ${QUEUE.warmup}-job warm-up; drained (untimed) between rounds`,
      `publishing: ${QUEUE.chunk} concurrent publishes at a time, each awaiting its confirm (ours: EventQueue.publish; raw: sendToQueue on a confirm channel); BullMQ: Queue.addBulk of ${QUEUE.chunk}`,
      'ours: producer and consumer createCluster instances, each with its own createRabbitQueue (own connection); quorum work queue, manual acks after the handler, prefetch = concurrency, claim sweep, retries/DLQ topology declared',
      'producer and consumer share this one Node thread: jobs/s is bounded by client CPU per job as much as by the broker',
      'BullMQ runs on Redis (REDIS_URL), not RabbitMQ: { maxRetriesPerRequest: null }, removeOnComplete, own key prefix, obliterated at the end',
    ],
    raw: measured.map((r) => ({
      name: r.name,
      jobsPerSec: r.jobsPerSec,
      // The drain after each round is untimed here, so its time is not in this suite's JSON.
      rounds: r.rounds.map((x) => ({
        ms: x.ms,
        publishMs: x.publishMs,
        cpuUsPerJob: x.cpuUsPerJob,
        missing: x.missing,
      })),
    })),
  };
}

function rabbitPickup(impls: QueueImpl[], skipped: ReportRow[], oursName?: string): Promise<Scenario> {
  return queuePickup(lanesOn('pickup', impls), skipped, oursName, {
    id: 'rabbitmq.queue.pickup',
    title: `2b. queue single-job pickup latency (publish one job -> its handler starts; consumer idle), ${QUEUE.pickups} samples`,
    pickups: QUEUE.pickups,
    warmup: QUEUE.pickupWarmup,
    // Timed until the handler starts (publish resolved or not): the pickup, not the confirm.
    untilPublished: false,
  });
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
  const started = startClock();
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
  if (!server.available)
    return unreachableReport('rabbitmq', started, server, notes, {
      title: 'RabbitMQ suite (UNAVAILABLE)',
      reason: `RabbitMQ at AMQP_URL is not reachable: ${server.reason}`,
      hint: 'start RabbitMQ (e.g. `docker compose up -d rabbitmq`) or set AMQP_URL',
    });
  const peers: Loaded<unknown>[] = [server];
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
        () => rabbitPubSub(ok, skipped, nameOf(loadedPs)),
      );
      scenarios.push(s);
      const burst = (l: Loaded<PubSubImpl>) => burstRow(nameOf(l));
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
      // The ceiling of the c=50 target: prefetch = concurrency, as the issue asks of ours.
      await loadRawQueue(50),
      await loadBullmq(50),
    ];
    const [ours50, ours100, rawQ, raw50, bull] = qLoaded as [
      Loaded<QueueImpl>,
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
      const raw50Rate = metric(e2e, nameOf(raw50), 'jobsPerSec');
      const bullRate = metric(e2e, nameOf(bull), 'jobsPerSec');
      if (raw50Rate !== null && bullRate !== null) {
        notes.push(
          `raw amqplib at prefetch 50 (the same prefetch as ours at c=50): ${Math.round(raw50Rate)} jobs/s = ${(raw50Rate / bullRate).toFixed(2)}x BullMQ at c=50`,
        );
      }
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
        () => rabbitPickup(ok, skipped, nameOf(oursP)),
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

  return suiteReport('rabbitmq', started, {
    peers: [oursPs, ...peers].map(peerInfo),
    scenarios,
    targets,
    notes,
  });
}
