/**
 * Lock scenarios shared by the Redis and NATS suites: acquire + release one after the other, and
 * many contenders looping on one key.
 */
import {
  type ContendedOptions,
  compareContended,
  contendedColumns,
  contendedRows,
  fmt,
  nowNs,
  type Recorder,
  type ReportRow,
  ratioColumn,
  type Scenario,
  type ThroughputOptions,
} from '../harness.js';
import { throughputScenario } from '../suite.js';

export interface LockImpl {
  name: string;
  /** Acquire `key` (waiting) as contender `caller`, call `onAcquired`, release. */
  cycle(key: string, caller: number, onAcquired?: () => void): Promise<void>;
  close(): Promise<void>;
}

export interface LockScenarioSpec {
  id: string;
  title: string;
  notes: string[];
}

/** One caller, each implementation on a key of its own. */
export function lockSequential(
  impls: LockImpl[],
  skipped: ReportRow[],
  oursName: string | undefined,
  settings: ThroughputOptions,
  spec: LockScenarioSpec,
): Promise<Scenario> {
  return throughputScenario({
    ...spec,
    cases: impls.map((impl, n) => ({ name: impl.name, op: () => impl.cycle(`seq-${n}`, 0) })),
    settings,
    oursName,
    skipped,
  });
}

/**
 * `settings.callers` contenders share one key; a failed cycle is counted (and its last error noted),
 * not thrown. `methodDetail` ends the methodology note; `notes` follow the fairness note.
 */
export async function lockContended(
  impls: LockImpl[],
  skipped: ReportRow[],
  oursName: string | undefined,
  settings: ContendedOptions,
  spec: { id: string; methodDetail?: string; notes: string[] },
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
  const results = await compareContended(cases, settings);
  const rows = contendedRows(results, oursName);
  for (const row of rows) row.metrics.failures = failures.get(row.impl) ?? 0;
  return {
    id: spec.id,
    title: `4b. lock, ${settings.callers} contenders looping acquire + release on one key`,
    columns: [
      contendedColumns.opsPerSec,
      contendedColumns.waitP50Us,
      contendedColumns.waitP99Us,
      contendedColumns.waitMaxUs,
      contendedColumns.leastServedShare,
      contendedColumns.minPerCaller,
      contendedColumns.maxPerCaller,
      { key: 'failures', label: 'failed', format: fmt.int },
      ratioColumn(),
    ],
    rows: [...rows, ...skipped],
    notes: [
      `${settings.rounds} rounds of ${settings.opsPerRound.toLocaleString('en-US')} ops shared by the contenders after ${settings.warmupOps} warm-up ops; wait = acquire call -> lock held${spec.methodDetail ? `; ${spec.methodDetail}` : ''}`,
      'least-served = min ops of one contender / mean ops per contender (1.00 = perfectly fair, 0 = starvation)',
      ...spec.notes,
      ...[...errors].map(([name, message]) => `${name}: last failure: ${message}`),
    ],
    raw: results,
    failures,
  };
}
