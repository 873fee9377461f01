/**
 * What every suite does around its scenarios: naming peers, keeping unavailable or failed ones in
 * the report with their reason, reading figures back for the targets, and assembling the report.
 */
import { randomBytes } from 'node:crypto';
import process from 'node:process';
import {
  type Column,
  compareThroughput,
  type Loaded,
  type Metric,
  machineInfo,
  nowNs,
  type PeerInfo,
  peerInfo,
  type ReportRow,
  type Scenario,
  type SuiteReport,
  sinceMs,
  type TargetCheck,
  type ThroughputCase,
  type ThroughputOptions,
  throughputColumns,
  throughputRows,
} from './harness.js';

/** The Redis server: the Redis suite's, and the one the others' Redis peers (BullMQ, a reference lock) use. */
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/**
 * BENCH_ONLY=cache,lock runs only those sections of a suite (for iterating on one part); the
 * targets of the skipped ones are left out of the report. Unset: every section.
 */
export function sectionWanted(section: string): boolean {
  const only = process.env.BENCH_ONLY;
  if (only === undefined || only.trim() === '') return true;
  return only.split(',').some((s) => s.trim() === section);
}

/** Unique to this run, letters and digits only: part of every name a suite creates, for its clean-up. */
export function newRunId(): string {
  return `bench${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves when `check()` is true, polling every `everyMs`; false after `timeoutMs`. */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 10) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > end) return false;
    await sleep(everyMs);
  }
}

/** A server URL fit for printing: credentials masked. */
export function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}

/** `name@version suffix`, as the peer is shown in the tables. */
export function label(loaded: Loaded<unknown>, suffix = ''): string {
  return `${loaded.name}${loaded.version ? `@${loaded.version}` : ''} ${suffix}`.trim();
}

export function unavailableRow(impl: string, reason: string, status?: 'failed'): ReportRow {
  return { impl, available: false, reason, metrics: {}, ...(status && { status }) };
}

/** Splits loaded peers into the ones to run and a row for each one that could not load. */
export function split<T>(all: Loaded<T>[]): { ok: T[]; skipped: ReportRow[] } {
  const ok: T[] = [];
  const skipped: ReportRow[] = [];
  for (const l of all) {
    if (l.available) ok.push(l.value);
    else skipped.push(unavailableRow(label(l), l.reason));
  }
  return { ok, skipped };
}

export function nameOf<T extends { name: string }>(loaded: Loaded<T>): string | undefined {
  return loaded.available ? loaded.value.name : undefined;
}

/** Why a target has no figure when `loaded` could not load; undefined when it did. */
export function reasonOf(loaded: Loaded<unknown>): string | undefined {
  return loaded.available ? undefined : `${loaded.name} unavailable: ${loaded.reason}`;
}

/** Closes everything, each close independent of the others' failures. */
export async function closeAll(items: { close(): Promise<void> }[]): Promise<void> {
  await Promise.all(items.map((i) => i.close().catch(() => {})));
}

/** A scenario that throws is reported as failed (with the error) instead of ending the run. */
export async function guard(
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

/** One numeric figure of one row that ran; null when there is none. */
export function metric(s: Scenario | undefined, impl: string | undefined, key: string): number | null {
  const v = s?.rows.find((r) => r.impl === impl && r.available)?.metrics[key];
  return typeof v === 'number' ? v : null;
}

/** Why a figure is missing: the row's reason, or the scenario's failure. */
export function missing(s: Scenario | undefined, impl: string | undefined): string | undefined {
  if (s === undefined) return 'scenario not run';
  const row = s.rows.find((r) => r.impl === impl);
  if (row && !row.available) return `${row.impl}: ${row.reason ?? 'unavailable'}`;
  const failed = s.rows.find((r) => r.status === 'failed');
  return failed ? `scenario failed: ${failed.reason}` : undefined;
}

// ---------------------------------------------------------------------------------------------
// Key-value implementations
// ---------------------------------------------------------------------------------------------

export interface KvImpl<V> {
  name: string;
  set(key: string, value: V): Promise<unknown>;
  get(key: string): Promise<V | undefined>;
  close(): Promise<void>;
}

/** A peer that loads but cannot round-trip a value is unavailable, not a source of numbers. */
export async function smokeKv<V extends { id: number; tags: string[] }>(
  kv: Pick<KvImpl<V>, 'set' | 'get'>,
  value: V,
): Promise<void> {
  await kv.set('smoke', value);
  const got = await kv.get('smoke');
  if (got?.id !== value.id || got.tags.length !== value.tags.length)
    throw new Error(`set/get round trip failed: read back ${JSON.stringify(got)}`);
}

// ---------------------------------------------------------------------------------------------
// Sequential throughput scenarios
// ---------------------------------------------------------------------------------------------

/** The methodology note of a compareThroughput scenario; `detail` says how the caller drives it. */
export function sequentialMethod(settings: Required<ThroughputOptions>, detail?: string): string {
  return [
    `${settings.rounds} rounds of up to ${settings.opsPerRound.toLocaleString('en-US')} ops or ${settings.maxRoundMs} ms after up to ${settings.warmupOps.toLocaleString('en-US')} warm-up ops`,
    ...(detail ? [detail] : []),
    'rounds interleaved',
    'ops/s = median round',
    `latency on every ${settings.sampleEvery}th op`,
  ].join('; ');
}

export interface ThroughputScenarioSpec {
  id: string;
  title: string;
  cases: ThroughputCase[];
  settings: ThroughputOptions;
  oursName: string | undefined;
  skipped: ReportRow[];
  notes: string[];
  /** Columns after the throughput ones, filled per row by `extraMetrics`. */
  extraColumns?: Column[];
  extraMetrics?: (impl: string) => Record<string, Metric>;
}

/** Runs the cases side by side (compareThroughput) and reports them in the throughput table. */
export async function throughputScenario(spec: ThroughputScenarioSpec): Promise<Scenario> {
  const results = await compareThroughput(spec.cases, spec.settings);
  const rows = throughputRows(results, spec.oursName);
  if (spec.extraMetrics) for (const row of rows) Object.assign(row.metrics, spec.extraMetrics(row.impl));
  return {
    id: spec.id,
    title: spec.title,
    columns: [...throughputColumns, ...(spec.extraColumns ?? [])],
    rows: [...rows, ...spec.skipped],
    notes: spec.notes,
    raw: results,
  };
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/** The report of a suite whose server is not there: one scenario saying why, and how to start one. */
export function unreachableReport(
  suite: string,
  started: { at: Date; ns: number },
  server: Loaded<unknown>,
  notes: string[],
  why: { title: string; reason: string; hint: string },
): SuiteReport {
  const scenario: Scenario = {
    id: suite,
    title: why.title,
    columns: [],
    rows: [unavailableRow('all implementations', why.reason)],
    notes: [why.hint],
  };
  return suiteReport(suite, started, {
    peers: [peerInfo(server)],
    scenarios: [scenario],
    targets: [],
    notes,
  });
}

export function suiteReport(
  suite: string,
  started: { at: Date; ns: number },
  parts: { peers: PeerInfo[]; scenarios: Scenario[]; targets: TargetCheck[]; notes: string[] },
): SuiteReport {
  return {
    suite,
    startedAt: started.at.toISOString(),
    durationMs: sinceMs(started.ns),
    machine: machineInfo(),
    ...parts,
  };
}

/** When the suite started, for suiteReport. */
export function startClock(): { at: Date; ns: number } {
  return { at: new Date(), ns: nowNs() };
}
