/**
 * Pub/sub throughput, shared by the Redis, RabbitMQ and NATS suites: one publisher instance sends to
 * one subscriber instance, first all messages in flight [burst], then each awaited [sequential].
 */
import type { PubSubManager } from '@cluster/core';
import {
  fmt,
  interleaved,
  type LatencyStats,
  median,
  nowNs,
  Recorder,
  type ReportRow,
  ratioColumn,
  type Scenario,
} from '../harness.js';

export type Receiver = (round: number, seq: number, sentAt: number) => void;

export interface PubSubImpl {
  name: string;
  /** Where received messages go; replaced per round. */
  receiver: Receiver;
  publish(round: number, seq: number, sentAt: number): Promise<unknown>;
  close(): Promise<void>;
}

/** The payload: round, sequence number in the round, send time (nowNs). */
export interface Tick {
  r: number;
  s: number;
  t: number;
}

export interface PubSubSettings {
  /** Messages of a [burst] round, all published before any is awaited. */
  burst: number;
  /** Messages of a [sequential] round, each publish awaited before the next. */
  sequential: number;
  rounds: number;
  /** Untimed messages per implementation before the measured rounds of each mode. */
  warmup: number;
  /** The warm-up of the [sequential] mode, when it differs from `warmup`. */
  sequentialWarmup?: number;
  /** A round stops waiting for the missing messages after this long; they count as lost. */
  timeoutMs: number;
}

/** Ours as a PubSubImpl: ticks published on `publisher`, received on `subscriber` (two instances). */
export async function managerPubSub(
  publisher: PubSubManager,
  subscriber: PubSubManager,
  close: () => Promise<void>,
): Promise<PubSubImpl> {
  const impl: PubSubImpl = {
    name: '',
    receiver: () => {},
    publish: (r, s, t) => publisher.publish('tick', { r, s, t } satisfies Tick),
    close,
  };
  await subscriber.subscribe('tick', (m: Tick) => impl.receiver(m.r, m.s, m.t));
  return impl;
}

type Mode = 'burst' | 'sequential';

interface PubSubRound {
  msgsPerSec: number;
  received: number;
  lost: number;
  ms: number;
}

interface PubSubResult {
  name: string;
  mode: Mode;
  messages: number;
  msgsPerSec: number;
  rounds: PubSubRound[];
  lost: number;
  latency: LatencyStats;
}

// Numbers rounds across implementations, so a late message of an earlier round is never counted.
let pubSubRoundSeq = 0;

/** One round: publish `n` messages (all in flight, or each awaited), until the last one arrives. */
async function pubSubRound(
  impl: PubSubImpl,
  n: number,
  mode: Mode,
  latency: Recorder | undefined,
  timeoutMs: number,
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
  await Promise.race([all, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
  clearTimeout(timer);
  impl.receiver = () => {};
  const ms = ((received === n ? lastAt : nowNs()) - t0) / 1e6;
  return { msgsPerSec: received / (ms / 1000), received, lost: n - received, ms };
}

export interface PubSubScenarioSpec {
  id: string;
  /** The scenario's number in its suite, e.g. '2'. */
  number: string;
  settings: PubSubSettings;
  /** What each implementation is, after the methodology note. */
  notes: string[];
}

/** Rows are `<name> [burst]` and `<name> [sequential]`; ours/this compares msgs/s within a mode. */
export async function pubSubThroughput(
  impls: PubSubImpl[],
  skipped: ReportRow[],
  oursName: string | undefined,
  spec: PubSubScenarioSpec,
): Promise<Scenario> {
  const { settings } = spec;
  const results: PubSubResult[] = [];
  for (const mode of ['burst', 'sequential'] as const) {
    const n = mode === 'burst' ? settings.burst : settings.sequential;
    const warmup = mode === 'burst' ? settings.warmup : (settings.sequentialWarmup ?? settings.warmup);
    const state = impls.map((impl) => ({ impl, rounds: [] as PubSubRound[], latency: new Recorder() }));
    for (const s of state) await pubSubRound(s.impl, warmup, mode, undefined, settings.timeoutMs);
    await interleaved(state, settings.rounds, async (s) => {
      s.rounds.push(await pubSubRound(s.impl, n, mode, s.latency, settings.timeoutMs));
    });
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
  const warmup =
    settings.sequentialWarmup === undefined
      ? `a ${settings.warmup.toLocaleString('en-US')}-message warm-up`
      : 'a warm-up';
  return {
    id: spec.id,
    title: `${spec.number}. pub/sub throughput, one publisher instance -> one subscriber instance (${settings.burst.toLocaleString('en-US')} msgs all in flight [burst]; ${settings.sequential.toLocaleString('en-US')} msgs each awaited [sequential])`,
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
      `msgs/s = messages / (first publish call -> last message received), median of ${settings.rounds} interleaved rounds after ${warmup}; deliv = publish call -> handler, every 4th message`,
      ...spec.notes,
    ],
    raw: results,
  };
}

/** The table row of an implementation's [burst] mode (undefined when it did not load). */
export function burstRow(name: string | undefined): string | undefined {
  return name === undefined ? undefined : `${name} [burst]`;
}
