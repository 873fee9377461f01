/**
 * Queue scenarios shared by the Redis, RabbitMQ and NATS suites: end-to-end rounds (every job of a
 * round published at once to an idle, ready consumer, timed until the last handler started) and
 * single-job pickup latency.
 */
import process from 'node:process';
import type { EventQueue } from '@cluster/core';
import {
  type Column,
  fmt,
  interleaved,
  median,
  nowNs,
  Recorder,
  type ReportRow,
  ratioColumn,
  type Scenario,
  sinceMs,
} from '../harness.js';
import { sleep, waitFor } from '../suite.js';

export type JobHandler = (i: number) => void;

/** A queue library addressed by channel name, as the Redis and RabbitMQ suites drive theirs. */
export interface ChannelQueue {
  name: string;
  /** Enqueues jobs first..first+count-1, as fast as the library allows. */
  publishMany(channel: string, first: number, count: number): Promise<void>;
  publishOne(channel: string, i: number): Promise<unknown>;
  /** Resolves once nothing is waiting or running on `channel` (false after the timeout). */
  drained(channel: string, timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
}

/** A ChannelQueue whose consumers take their concurrency when they start, as BullMQ's Workers do. */
export interface ConcurrentChannelQueue extends ChannelQueue {
  /** Starts a consumer of `channel`; ready once a first job went through it. */
  consume(channel: string, concurrency: number, handler: JobHandler): Promise<void>;
}

/** Publishes jobs first..first+count-1 for libraries without a bulk call: `chunk` calls in flight at a time. */
export async function publishInChunks(
  first: number,
  count: number,
  chunk: number,
  publish: (i: number) => Promise<unknown>,
): Promise<void> {
  for (let start = first; start < first + count; start += chunk) {
    const end = Math.min(first + count, start + chunk);
    const sent: Promise<unknown>[] = [];
    for (let i = start; i < end; i++) sent.push(publish(i));
    await Promise.all(sent);
  }
}

/**
 * Ours as a ConcurrentChannelQueue: jobs published on `producer` and consumed on `consumer` (two
 * instances, as two processes would be), `chunk` publish calls in flight at a time; drained once
 * `statsOf` sees nothing pending, in flight or delayed.
 */
export function eventQueueChannels(
  queues: { producer: EventQueue; consumer: EventQueue; statsOf: EventQueue },
  chunk: number,
  close: () => Promise<void>,
): ConcurrentChannelQueue {
  const { producer, consumer, statsOf } = queues;
  return {
    name: '',
    async consume(channel, concurrency, handler) {
      let ready!: () => void;
      const first = new Promise<void>((resolve) => {
        ready = resolve;
      });
      consumer.subscribe(channel, {
        concurrency,
        process: (payload: { i: number }) => {
          if (payload.i < 0) ready();
          else handler(payload.i);
        },
      });
      // subscribe() starts consuming in the background: wait until a first job went through.
      await producer.publish(channel, { i: -1 });
      await first;
    },
    publishMany: (channel, first, count) =>
      publishInChunks(first, count, chunk, (i) => producer.publish(channel, { i })),
    publishOne: (channel, i) => producer.publish(channel, { i }),
    drained: (channel, timeoutMs) =>
      waitFor(
        async () => {
          const s = await statsOf.stats(channel);
          return s.pending + s.inFlight + s.delayed === 0;
        },
        timeoutMs,
        20,
      ),
    close,
  };
}

/** One implementation consuming one queue, as the end-to-end rounds drive it. */
export interface QueueLane {
  name: string;
  /** Starts the consumer; `handler(i)` runs when job i starts. Ready when resolved. */
  consume(handler: JobHandler): Promise<void>;
  publishMany(first: number, count: number): Promise<void>;
  /** Runs untimed after every round, so the next one starts on an idle queue. */
  settle(): Promise<unknown>;
}

export interface PickupLane {
  name: string;
  consume(handler: JobHandler): Promise<void>;
  publishOne(i: number): Promise<unknown>;
}

/** A lane on `channel` of a channel-addressed queue, settled by waiting until it is drained. */
export function channelLane(
  impl: ChannelQueue,
  channel: string,
  consume: (handler: JobHandler) => Promise<void>,
): QueueLane & PickupLane {
  return {
    name: impl.name,
    consume,
    publishMany: (first, count) => impl.publishMany(channel, first, count),
    publishOne: (i) => impl.publishOne(channel, i),
    settle: () => impl.drained(channel, 10_000),
  };
}

export interface QueueRound {
  ms: number;
  publishMs: number;
  cpuUsPerJob: number;
  settleMs: number;
  missing: number;
}

/** One round: every job published at t0 (consumer idle and ready), until the last one started. */
async function queueRound(
  lane: QueueLane,
  handlerRef: { fn: JobHandler },
  first: number,
  jobs: number,
  timeoutMs: number,
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
  await lane.publishMany(first, jobs);
  const publishMs = sinceMs(t0);
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([all, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
  clearTimeout(timer);
  const ms = ((seen === jobs ? lastAt : nowNs()) - t0) / 1e6;
  const cpu = process.cpuUsage(cpu0);
  const s0 = nowNs();
  await lane.settle();
  return {
    ms,
    publishMs,
    cpuUsPerJob: (cpu.user + cpu.system) / jobs,
    settleMs: sinceMs(s0),
    missing: jobs - seen,
  };
}

export interface QueueRoundsOptions {
  jobs: number;
  rounds: number;
  /** Jobs through each lane, untimed, before the measured rounds. */
  warmup: number;
  /** A round stops waiting for the jobs not started after this long; they count as missing. */
  timeoutMs: number;
  /** Starts each progress line, e.g. 'c=50 '. */
  logPrefix?: string;
}

export interface QueueLaneResult {
  name: string;
  /** Median over rounds of started jobs / round time. */
  jobsPerSec: number;
  roundJobsPerSec: number[];
  rounds: QueueRound[];
}

/** Starts every lane's consumer, warms each up, then runs the measured rounds interleaved. */
export async function runQueueRounds(
  lanes: QueueLane[],
  options: QueueRoundsOptions,
  log: (line: string) => void,
): Promise<QueueLaneResult[]> {
  const state = [];
  for (const lane of lanes) {
    const handlerRef: { fn: JobHandler } = { fn: () => {} };
    await lane.consume((i) => handlerRef.fn(i));
    state.push({ lane, handlerRef, next: 0, rounds: [] as QueueRound[] });
  }
  for (const s of state) {
    await queueRound(s.lane, s.handlerRef, s.next, options.warmup, options.timeoutMs);
    s.next += options.warmup;
  }
  await interleaved(state, options.rounds, async (s) => {
    const r = await queueRound(s.lane, s.handlerRef, s.next, options.jobs, options.timeoutMs);
    s.next += options.jobs;
    s.rounds.push(r);
    log(
      `    ${options.logPrefix ?? ''}${s.lane.name}: ${Math.round(options.jobs / (r.ms / 1000))} jobs/s (${r.ms.toFixed(0)} ms)`,
    );
  });
  return state.map((s) => {
    const perRound = s.rounds.map((r) => (options.jobs - r.missing) / (r.ms / 1000));
    return { name: s.lane.name, jobsPerSec: median(perRound), roundJobsPerSec: perRound, rounds: s.rounds };
  });
}

/** Jobs not started in time, over all measured rounds. */
export function missingJobs(r: QueueLaneResult): number {
  return r.rounds.reduce((a, x) => a + x.missing, 0);
}

export interface QueueRowsOptions {
  /** The row's name, when it is more than the lane's (e.g. with its concurrency). */
  rowName?: (name: string) => string;
  /** Whether the table has a rounds column. */
  countRounds: boolean;
}

/** One row per lane; ours/this compares jobs/s with ours among the same `results`. */
export function queueE2eRows(
  results: QueueLaneResult[],
  oursName: string | undefined,
  options: QueueRowsOptions,
): ReportRow[] {
  const ours = results.find((r) => r.name === oursName);
  return results.map((r) => ({
    impl: options.rowName ? options.rowName(r.name) : r.name,
    available: true,
    metrics: {
      jobsPerSec: r.jobsPerSec,
      roundMs: median(r.rounds.map((x) => x.ms)),
      publishMs: median(r.rounds.map((x) => x.publishMs)),
      cpuUsPerJob: median(r.rounds.map((x) => x.cpuUsPerJob)),
      missing: missingJobs(r),
      ...(options.countRounds && { rounds: r.rounds.length }),
      oursOverThis: ours ? ours.jobsPerSec / r.jobsPerSec : null,
    },
  }));
}

export function queueE2eColumns(countRounds: boolean): Column[] {
  return [
    { key: 'jobsPerSec', label: 'jobs/s', format: fmt.ops },
    { key: 'roundMs', label: 'round ms', format: fmt.ms },
    { key: 'publishMs', label: 'published ms', format: fmt.ms },
    { key: 'cpuUsPerJob', label: 'cpu µs/job', format: fmt.us },
    { key: 'missing', label: 'missing', format: fmt.int },
    ...(countRounds ? [{ key: 'rounds', label: 'rounds', format: fmt.int }] : []),
    ratioColumn(),
  ];
}

export interface PickupSpec {
  id: string;
  title: string;
  pickups: number;
  warmup: number;
  /**
   * true: a sample ends once the handler started and the publish call resolved; false: once the
   * handler started (the pickup alone, not a slower publish confirm).
   */
  untilPublished: boolean;
}

/** Implementations alternate sample by sample; each consumer is idle when its job is published. */
export async function queuePickup(
  lanes: PickupLane[],
  skipped: ReportRow[],
  oursName: string | undefined,
  spec: PickupSpec,
): Promise<Scenario> {
  const state = [];
  for (const lane of lanes) {
    const waiting = new Map<number, () => void>();
    await lane.consume((i) => waiting.get(i)?.());
    state.push({ lane, waiting, recorder: new Recorder() });
  }
  const total = spec.warmup + spec.pickups;
  for (let n = 0; n < total; n++) {
    for (let k = 0; k < state.length; k++) {
      const s = state[(n + k) % state.length]!;
      const started = new Promise<void>((resolve) => s.waiting.set(n, resolve));
      const t0 = nowNs();
      const published = s.lane.publishOne(n);
      await (spec.untilPublished ? Promise.all([published, started]) : started);
      if (n >= spec.warmup) s.recorder.record(nowNs() - t0);
      await published;
      s.waiting.delete(n);
      // Let the consumer settle the job and go back to waiting, so every pickup starts idle.
      await sleep(5);
    }
  }
  const stats = state.map((s) => ({ name: s.lane.name, latency: s.recorder.stats() }));
  const ours = stats.find((r) => r.name === oursName);
  return {
    id: spec.id,
    title: spec.title,
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
      `implementations alternate sample by sample, ${spec.warmup} warm-up samples each, 5 ms pause after each; this/ours p50 above 1.00x means ours picks up faster`,
    ],
    raw: stats,
  };
}
