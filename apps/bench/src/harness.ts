/**
 * A small, backend-agnostic benchmark harness: interleaved timing rounds, latency sampling,
 * contended loops, stats, peer loading, a text table and a JSON report. The memory suite uses it
 * now; the Redis/RabbitMQ/NATS suites reuse it unchanged.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

// ---------------------------------------------------------------------------------------------
// Clock and stats
// ---------------------------------------------------------------------------------------------

/** Monotonic nanoseconds as a number (safe for any duration a bench takes). */
export function nowNs(): number {
  return Number(process.hrtime.bigint());
}

/** Elapsed ms since `startNs` (from nowNs). */
export function sinceMs(startNs: number): number {
  return (nowNs() - startNs) / 1e6;
}

/** Runs a full GC between rounds when node runs with --expose-gc; a no-op otherwise. */
export function collectGarbage(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

/**
 * Runs `rounds` rounds in which every item runs once, in a rotating order (A B C, B C A, ...) and
 * after a full GC, so JIT, GC and thermal drift hit the implementations alike.
 */
export async function interleaved<T>(
  items: readonly T[],
  rounds: number,
  run: (item: T) => Promise<void>,
): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < items.length; k++) {
      const item = items[(round + k) % items.length]!;
      collectGarbage();
      await run(item);
    }
  }
}

export interface LatencyStats {
  /** How many operations were timed one by one. */
  samples: number;
  p50Us: number;
  p99Us: number;
  meanUs: number;
  maxUs: number;
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] ?? Number.NaN;
}

/** The middle value; for an even count the mean of the two middle ones (not the lower: with two rounds that was the min). */
export function median(values: readonly number[]): number {
  const sorted = Float64Array.from(values).sort();
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  return n % 2 === 1 ? sorted[(n - 1) / 2]! : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2;
}

/** Collects latency samples in nanoseconds. */
export class Recorder {
  #samples: number[] = [];

  record(ns: number): void {
    this.#samples.push(ns);
  }

  get size(): number {
    return this.#samples.length;
  }

  clear(): void {
    this.#samples = [];
  }

  stats(): LatencyStats {
    const sorted = Float64Array.from(this.#samples).sort();
    let sum = 0;
    for (const v of sorted) sum += v;
    return {
      samples: sorted.length,
      p50Us: percentile(sorted, 50) / 1e3,
      p99Us: percentile(sorted, 99) / 1e3,
      meanUs: sorted.length === 0 ? Number.NaN : sum / sorted.length / 1e3,
      maxUs: sorted.length === 0 ? Number.NaN : (sorted[sorted.length - 1] ?? Number.NaN) / 1e3,
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Sequential throughput: one caller, ops awaited one after the other
// ---------------------------------------------------------------------------------------------

/** One implementation under test. `op(i)` runs operation number i (use it to pick a key). */
export interface ThroughputCase {
  name: string;
  op(i: number): Promise<unknown>;
}

export interface ThroughputOptions {
  /** Ops run (untimed) before the measured rounds, per case. */
  warmupOps: number;
  /** Measured rounds per case; cases are interleaved round by round, in a rotating order. */
  rounds: number;
  opsPerRound: number;
  /** Every n-th op is timed on its own for the latency figures. */
  sampleEvery: number;
  /** A round (and the warm-up) stops early past this many ms; its ops/s still count. */
  maxRoundMs?: number;
}

export interface ThroughputResult {
  name: string;
  /** Median over rounds of ops / round time. */
  opsPerSec: number;
  /** Ops/s of every round, in order. */
  roundOpsPerSec: number[];
  totalOps: number;
  latency: LatencyStats;
}

async function runOps(
  c: ThroughputCase,
  start: number,
  count: number,
  sampleEvery: number,
  recorder: Recorder | undefined,
  maxMs: number,
): Promise<{ ops: number; ns: number }> {
  const t0 = nowNs();
  const deadline = t0 + maxMs * 1e6;
  let done = 0;
  for (; done < count; done++) {
    if (done % sampleEvery === 0) {
      // Every n-th op is timed alone, which also checks the round's deadline.
      const s = nowNs();
      if (s > deadline) break;
      await c.op(start + done);
      recorder?.record(nowNs() - s);
    } else {
      await c.op(start + done);
    }
  }
  return { ops: done, ns: nowNs() - t0 };
}

/**
 * Measures several implementations side by side in one process. Every case is warmed up first,
 * then the measured rounds alternate between cases (A B C, B C A, ...) so JIT, GC and thermal
 * drift hit them alike.
 */
export async function compareThroughput(
  cases: readonly ThroughputCase[],
  options: ThroughputOptions,
): Promise<ThroughputResult[]> {
  const maxMs = options.maxRoundMs ?? Number.POSITIVE_INFINITY;
  const state = cases.map((c) => ({
    c,
    next: 0,
    rounds: [] as number[],
    total: 0,
    recorder: new Recorder(),
  }));
  for (const s of state) {
    const w = await runOps(s.c, s.next, options.warmupOps, options.sampleEvery, undefined, maxMs);
    s.next += w.ops;
  }
  await interleaved(state, options.rounds, async (s) => {
    const r = await runOps(s.c, s.next, options.opsPerRound, options.sampleEvery, s.recorder, maxMs);
    s.next += r.ops;
    s.total += r.ops;
    s.rounds.push(r.ops / (r.ns / 1e9));
  });
  return state.map((s) => ({
    name: s.c.name,
    opsPerSec: median(s.rounds),
    roundOpsPerSec: s.rounds,
    totalOps: s.total,
    latency: s.recorder.stats(),
  }));
}

// ---------------------------------------------------------------------------------------------
// Contended loops: N callers share a budget of ops on one resource
// ---------------------------------------------------------------------------------------------

export interface ContendedCase {
  name: string;
  /**
   * One operation by `caller`. `calledAt` is nowNs() taken just before; report the wait you care
   * about (e.g. until the critical section is entered) with `wait.record(nowNs() - calledAt)`.
   */
  op(caller: number, calledAt: number, wait: Recorder): Promise<unknown>;
}

export interface ContendedOptions {
  callers: number;
  /** Ops shared by all callers in one round: each caller loops until the budget is spent. */
  opsPerRound: number;
  warmupOps: number;
  rounds: number;
}

export interface ContendedResult {
  name: string;
  callers: number;
  totalOps: number;
  /** Median over rounds of ops / round time. */
  opsPerSec: number;
  roundOpsPerSec: number[];
  /** Waits as reported by the case (e.g. time to enter the critical section). */
  wait: LatencyStats;
  /** Ops each caller completed over the measured rounds. */
  perCaller: number[];
  /** min(per caller) / mean(per caller): 1 is perfectly fair, 0 means someone starved. */
  leastServedShare: number;
}

async function contendedRound(
  c: ContendedCase,
  callers: number,
  budget: number,
  counts: number[],
  wait: Recorder,
): Promise<{ ops: number; ns: number }> {
  let remaining = budget;
  const t0 = nowNs();
  const loop = async (caller: number) => {
    while (remaining > 0) {
      remaining--;
      await c.op(caller, nowNs(), wait);
      counts[caller] = (counts[caller] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: callers }, (_, caller) => loop(caller)));
  return { ops: budget, ns: nowNs() - t0 };
}

export async function compareContended(
  cases: readonly ContendedCase[],
  options: ContendedOptions,
): Promise<ContendedResult[]> {
  const state = cases.map((c) => ({
    c,
    rounds: [] as number[],
    total: 0,
    counts: new Array<number>(options.callers).fill(0),
    wait: new Recorder(),
  }));
  for (const s of state) {
    await contendedRound(
      s.c,
      options.callers,
      options.warmupOps,
      new Array<number>(options.callers).fill(0),
      new Recorder(),
    );
  }
  await interleaved(state, options.rounds, async (s) => {
    const r = await contendedRound(s.c, options.callers, options.opsPerRound, s.counts, s.wait);
    s.total += r.ops;
    s.rounds.push(r.ops / (r.ns / 1e9));
  });
  return state.map((s) => {
    const mean = s.counts.reduce((a, b) => a + b, 0) / s.counts.length;
    return {
      name: s.c.name,
      callers: options.callers,
      totalOps: s.total,
      opsPerSec: median(s.rounds),
      roundOpsPerSec: s.rounds,
      wait: s.wait.stats(),
      perCaller: s.counts,
      leastServedShare: mean === 0 ? 0 : Math.min(...s.counts) / mean,
    };
  });
}

// ---------------------------------------------------------------------------------------------
// Peers: optional implementations that may fail to install or load
// ---------------------------------------------------------------------------------------------

export type Loaded<T> =
  | { available: true; name: string; version: string | undefined; value: T }
  | { available: false; name: string; version: string | undefined; reason: string };

/** Reads the installed version of `pkg` as seen from this file (undefined if not resolvable). */
export function installedVersion(pkg: string): string | undefined {
  const require = createRequire(import.meta.url);
  const fs = require('node:fs') as typeof import('node:fs');
  // An ESM-only package has no `require` entry to resolve: read its package.json from node_modules.
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    const file = path.join(dir, 'node_modules', pkg, 'package.json');
    if (fs.existsSync(file)) {
      try {
        return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version?: string }).version;
      } catch {
        break;
      }
    }
    if (path.dirname(dir) === dir) break;
  }
  try {
    let dir = path.dirname(require.resolve(pkg));
    for (;;) {
      const file = path.join(dir, 'package.json');
      if (fs.existsSync(file)) {
        const json = JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: string; version?: string };
        if (json.name === pkg) return json.version;
      }
      const up = path.dirname(dir);
      if (up === dir) return undefined;
      dir = up;
    }
  } catch {
    return undefined;
  }
}

/** Runs `load` (typically a dynamic import plus setup); a throw makes the peer unavailable, with its reason. */
export async function loadPeer<T>(name: string, load: () => Promise<T>): Promise<Loaded<T>> {
  const version = installedVersion(name);
  try {
    return { available: true, name, version, value: await load() };
  } catch (error) {
    const reason =
      error instanceof Error
        ? `${(error as { code?: string }).code ?? error.name}: ${error.message}`
        : String(error);
    return { available: false, name, version, reason: reason.split('\n')[0] ?? reason };
  }
}

// ---------------------------------------------------------------------------------------------
// Report: scenarios, targets, table, JSON
// ---------------------------------------------------------------------------------------------

export type Metric = number | string | boolean | null;

export interface ReportRow {
  impl: string;
  available: boolean;
  /** Why the implementation did not run, when it did not. */
  reason?: string;
  /** With available: false, whether it could not load (default) or the scenario threw. */
  status?: 'unavailable' | 'failed';
  metrics: Record<string, Metric>;
}

export interface Column {
  /** Key in ReportRow.metrics. */
  key: string;
  label: string;
  format?: (value: Metric) => string;
}

export interface Scenario {
  id: string;
  title: string;
  columns: Column[];
  rows: ReportRow[];
  notes: string[];
  /** Raw per-implementation results, kept whole in the JSON. */
  raw?: unknown;
}

export interface TargetCheck {
  scenario: string;
  description: string;
  ours: string;
  peer: string;
  /** ours/peer of the compared metric (or the checked figure itself); null when it was not measured. */
  ratio: number | null;
  /** The wanted value: a minimum for '>=' (the default), a maximum for '<=', an exact value for '=='. */
  target: number;
  comparison?: '>=' | '<=' | '==';
  /** 'x' (the default) prints the figure as a ratio; '' as a plain number. */
  unit?: 'x' | '';
  met: boolean | null;
  reason?: string;
}

export interface MachineInfo {
  node: string;
  v8: string;
  platform: string;
  arch: string;
  cpus: number;
  cpuModel: string;
  totalMemGiB: number;
  gcExposed: boolean;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    node: process.version,
    v8: process.versions.v8,
    platform: `${os.type()} ${os.release()}`,
    arch: process.arch,
    cpus: typeof os.availableParallelism === 'function' ? os.availableParallelism() : cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    totalMemGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    gcExposed: typeof (globalThis as { gc?: unknown }).gc === 'function',
  };
}

export interface PeerInfo {
  name: string;
  version: string | undefined;
  available: boolean;
  reason?: string;
}

export interface SuiteReport {
  suite: string;
  startedAt: string;
  durationMs: number;
  machine: MachineInfo;
  peers: PeerInfo[];
  scenarios: Scenario[];
  targets: TargetCheck[];
  notes: string[];
}

export function peerInfo(loaded: Loaded<unknown>): PeerInfo {
  return loaded.available
    ? { name: loaded.name, version: loaded.version, available: true }
    : { name: loaded.name, version: loaded.version, available: false, reason: loaded.reason };
}

/** Builds a target check on `ours / peer` (both "higher is better"); null figures give met: null. */
export function checkTarget(
  scenario: string,
  description: string,
  ours: { name: string; value: number | null | undefined },
  peer: { name: string; value: number | null | undefined; reason?: string | undefined },
  target: number,
): TargetCheck {
  const usable = (v: number | null | undefined): v is number =>
    typeof v === 'number' && Number.isFinite(v) && v > 0;
  if (!usable(ours.value) || !usable(peer.value)) {
    return {
      scenario,
      description,
      ours: ours.name,
      peer: peer.name,
      ratio: null,
      target,
      met: null,
      reason: peer.reason ?? 'no figure to compare',
    };
  }
  const ratio = ours.value / peer.value;
  return { scenario, description, ours: ours.name, peer: peer.name, ratio, target, met: ratio >= target };
}

/**
 * Builds a target check on one figure (not a ratio), e.g. "p99 wait <= 50 ms" or "least-served >= 0.5";
 * a missing figure gives met: null with `reason`.
 */
export function checkFigure(
  scenario: string,
  description: string,
  ours: string,
  value: number | null | undefined,
  target: number,
  comparison: '>=' | '<=' | '==',
  reason = 'not measured',
): TargetCheck {
  const base = { scenario, description, ours, peer: '-', target, comparison, unit: '' as const };
  if (typeof value !== 'number' || !Number.isFinite(value))
    return { ...base, ratio: null, met: null, reason };
  const met =
    comparison === '>=' ? value >= target : comparison === '<=' ? value <= target : value === target;
  return { ...base, ratio: value, met };
}

// Formatting

export const fmt = {
  int(v: Metric): string {
    return typeof v === 'number' && Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : dash(v);
  },
  ops(v: Metric): string {
    return typeof v === 'number' && Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : dash(v);
  },
  us(v: Metric): string {
    if (typeof v !== 'number' || !Number.isFinite(v)) return dash(v);
    return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  },
  ms(v: Metric): string {
    return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(1) : dash(v);
  },
  ratio(v: Metric): string {
    return typeof v === 'number' && Number.isFinite(v) ? `${v.toFixed(2)}x` : dash(v);
  },
  share(v: Metric): string {
    return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(2) : dash(v);
  },
  text(v: Metric): string {
    return v === null ? '-' : String(v);
  },
};

function dash(v: Metric): string {
  return v === null || v === undefined || (typeof v === 'number' && !Number.isFinite(v)) ? '-' : String(v);
}

/** A plain monospace table: first column left-aligned, the others right-aligned. */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function formatScenario(s: Scenario): string {
  const headers = ['implementation', ...s.columns.map((c) => c.label)];
  const ran = s.rows.filter((r) => r.available);
  const rows = ran.map((r) => [
    r.impl,
    ...s.columns.map((c) => (c.format ?? fmt.text)(r.metrics[c.key] ?? null)),
  ]);
  const out = [`## ${s.title}`];
  if (ran.length > 0) out.push(formatTable(headers, rows));
  // Unavailable rows go below the table, so a long reason does not stretch its columns.
  for (const r of s.rows)
    if (!r.available)
      out.push(
        `  ! ${r.impl}: ${r.status === 'failed' ? 'FAILED' : 'UNAVAILABLE'} (${r.reason ?? 'unknown reason'})`,
      );
  for (const note of s.notes) out.push(`  * ${note}`);
  return out.join('\n');
}

export function formatTargets(targets: readonly TargetCheck[]): string {
  const rows = targets.map((t) => [
    t.description,
    t.ratio === null ? '-' : t.unit === '' ? t.ratio.toFixed(2) : fmt.ratio(t.ratio),
    `${t.comparison ?? '>='} ${t.target.toFixed(2)}${t.unit ?? 'x'}`,
    t.met === null ? `N/A (${t.reason ?? 'not measured'})` : t.met ? 'ok' : 'MISSED',
  ]);
  return ['## Targets', formatTable(['target', 'ratio', 'wanted', 'result'], rows)].join('\n');
}

export function formatReport(report: SuiteReport): string {
  const m = report.machine;
  const out = [
    `# @cluster/bench: ${report.suite}`,
    `node ${m.node} (v8 ${m.v8}), ${m.platform} ${m.arch}, ${m.cpus} cpus (${m.cpuModel}), ${m.totalMemGiB} GiB, gc ${m.gcExposed ? 'exposed' : 'NOT exposed (run with --expose-gc)'}`,
    `peers: ${report.peers.map((p) => `${p.name}@${p.version ?? '?'}${p.available ? '' : ` UNAVAILABLE (${p.reason})`}`).join(', ')}`,
    '',
  ];
  for (const s of report.scenarios) out.push(formatScenario(s), '');
  out.push(formatTargets(report.targets), '');
  for (const note of report.notes) out.push(`* ${note}`);
  out.push(`total ${(report.durationMs / 1000).toFixed(1)} s`);
  return out.join('\n');
}

/** Writes the report as pretty JSON (creating the directory); returns the path. */
export async function writeJson(file: string, report: SuiteReport): Promise<string> {
  await mkdir(path.dirname(file), { recursive: true });
  const replacer = (_key: string, value: unknown) =>
    typeof value === 'number' && !Number.isFinite(value) ? null : value;
  await writeFile(file, `${JSON.stringify(report, replacer, 2)}\n`);
  return file;
}

// Rows and columns of a throughput table, shared by every suite.
export function ratioColumn(): Column {
  return { key: 'oursOverThis', label: 'ours/this', format: fmt.ratio };
}

export function throughputRows(results: ThroughputResult[], oursName: string | undefined): ReportRow[] {
  const ours = results.find((r) => r.name === oursName);
  return results.map((r) => ({
    impl: r.name,
    available: true,
    metrics: {
      opsPerSec: r.opsPerSec,
      p50Us: r.latency.p50Us,
      p99Us: r.latency.p99Us,
      meanUs: r.latency.meanUs,
      samples: r.latency.samples,
      totalOps: r.totalOps,
      oursOverThis: ours ? ours.opsPerSec / r.opsPerSec : null,
    },
  }));
}

export const throughputColumns: Column[] = [
  { key: 'opsPerSec', label: 'ops/s', format: fmt.ops },
  { key: 'p50Us', label: 'p50 µs', format: fmt.us },
  { key: 'p99Us', label: 'p99 µs', format: fmt.us },
  { key: 'totalOps', label: 'ops', format: fmt.int },
  ratioColumn(),
];

export function contendedRows(results: ContendedResult[], oursName: string | undefined): ReportRow[] {
  const ours = results.find((r) => r.name === oursName);
  return results.map((r) => ({
    impl: r.name,
    available: true,
    metrics: {
      opsPerSec: r.opsPerSec,
      waitP50Us: r.wait.p50Us,
      waitP99Us: r.wait.p99Us,
      waitMaxUs: r.wait.maxUs,
      leastServedShare: r.leastServedShare,
      minPerCaller: Math.min(...r.perCaller),
      maxPerCaller: Math.max(...r.perCaller),
      totalOps: r.totalOps,
      oursOverThis: ours ? ours.opsPerSec / r.opsPerSec : null,
    },
  }));
}

/** The columns of contendedRows' metrics, for each table to pick from. */
export const contendedColumns = {
  opsPerSec: { key: 'opsPerSec', label: 'ops/s', format: fmt.ops },
  waitP50Us: { key: 'waitP50Us', label: 'wait p50 µs', format: fmt.us },
  waitP99Us: { key: 'waitP99Us', label: 'wait p99 µs', format: fmt.us },
  waitMaxUs: { key: 'waitMaxUs', label: 'wait max µs', format: fmt.us },
  leastServedShare: { key: 'leastServedShare', label: 'least-served', format: fmt.share },
  minPerCaller: { key: 'minPerCaller', label: 'min ops', format: fmt.int },
  maxPerCaller: { key: 'maxPerCaller', label: 'max ops', format: fmt.int },
  totalOps: { key: 'totalOps', label: 'ops', format: fmt.int },
} satisfies Record<string, Column>;
