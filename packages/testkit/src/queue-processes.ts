/**
 * Competing worker processes (child_process.fork of the adapter's worker script, which calls
 * `runQueueWorker` from `@cluster/testkit/worker`) consume K tasks while the test SIGKILLs a busy
 * worker several times and respawns it. Every task completes at least once and none is lost;
 * duplicates (the price of at-least-once) are counted, traced to the killed workers, and printed
 * with the redelivery latency after each kill.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventQueue, type QueueAdapter } from '@cluster/core';
import { afterAll, describe, expect, it } from 'vitest';
import { uniqueName } from './backend.js';
import { waitFor, within } from './wait.js';

export interface QueueProcessRun {
  /** Environment for the workers (adapter module, server URL, prefix, ...); LOG and CONCURRENCY are added. */
  readonly env: Record<string, string>;
  /** The producer's adapter, on the same queue as the workers. */
  producer(): QueueAdapter;
  /** Called at the end, after every worker stopped: delete what the run created on the server. */
  cleanup?(): unknown;
}

export interface QueueProcessKillOptions {
  /** Shown in the describe() title. */
  name: string;
  /** Absolute path of the worker script. */
  workerScript: string;
  /** A fresh, isolated queue (e.g. a unique prefix) for the run. */
  run(): QueueProcessRun | Promise<QueueProcessRun>;
  tasks?: number;
  workers?: number;
  kills?: number;
  /** Handler concurrency of each worker. Default 2. */
  concurrency?: number;
  /** Reported with the figures (the adapter's claim timeout for a live but stuck worker). */
  visibilityTimeoutMs?: number;
  /** Test timeout. Default 90 s. */
  timeoutMs?: number;
  /** Skip the suite (server unavailable). */
  skip?: boolean;
}

interface LogEvent {
  e: 'start' | 'done';
  id: string;
  n: number;
  a: number;
  pid: number;
  t: number;
}

function readLog(file: string): LogEvent[] {
  const out: LogEvent[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    // A line being appended while we read may be partial: skip it, it is complete next time.
    if (!line.endsWith('}')) continue;
    try {
      out.push(JSON.parse(line) as LogEvent);
    } catch {
      // partial line
    }
  }
  return out;
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export function describeQueueProcessKills(options: QueueProcessKillOptions): void {
  const TASKS = options.tasks ?? 300;
  const WORKERS = options.workers ?? 3;
  const KILLS = options.kills ?? 4;

  describe.skipIf(options.skip === true)(`${options.name} queue across worker processes`, () => {
    const children = new Set<ChildProcess>();
    const logs: string[] = [];

    afterAll(() => {
      for (const child of children) child.kill('SIGKILL');
      for (const file of logs) rmSync(file, { force: true });
    });

    async function spawnWorker(env: Record<string, string>): Promise<ChildProcess> {
      const child = fork(options.workerScript, [], {
        env: { ...process.env, ...env },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      children.add(child);
      void exited(child).then(() => children.delete(child));
      await within(
        new Promise<void>((resolve, reject) => {
          child.once('message', () => resolve());
          child.once('exit', (code, sig) => reject(new Error(`worker exited before ready (${code ?? sig})`)));
        }),
        20_000,
        'worker start',
      );
      return child;
    }

    it(
      'completes every task at least once while busy workers are SIGKILLed and respawned',
      async () => {
        const run = await options.run();
        const logFile = join(tmpdir(), `${uniqueName('queue-procs')}.log`);
        logs.push(logFile);
        writeFileSync(logFile, '');
        const env = { ...run.env, LOG: logFile, CONCURRENCY: String(options.concurrency ?? 2) };
        const startedAt = Date.now();
        const producer = new EventQueue({ appName: 'procs', adapter: run.producer() });
        await producer.start();
        try {
          // All workers up before the first task, so they compete from the start.
          const workers: ChildProcess[] = await Promise.all(
            Array.from({ length: WORKERS }, () => spawnWorker(env)),
          );
          const respawns: Promise<void>[] = [];
          const publishing = (async () => {
            for (let n = 0; n < TASKS; n++) {
              await producer.publish('jobs', { n, ms: 5 + ((n * 7) % 26) }, { id: `task-${n}` });
            }
          })();

          const kills: { pid: number; at: number }[] = [];
          for (let k = 0; k < KILLS; k++) {
            // Kills are paced by progress (tasks started), each hitting a worker that is running a task.
            const milestone = 25 + k * 50;
            const victim = await waitFor(
              () => {
                const events = readLog(logFile);
                if (events.filter((e) => e.e === 'start').length < milestone) return undefined;
                const open = new Map<string, number>();
                for (const event of events) {
                  const key = `${event.pid}:${event.id}:${event.a}`;
                  if (event.e === 'start') open.set(key, event.pid);
                  else open.delete(key);
                }
                const busy = new Set(open.values());
                return workers.find((w) => w.pid !== undefined && busy.has(w.pid) && w.exitCode === null);
              },
              { timeout: 20_000, interval: 2, message: `a busy worker to kill (kill ${k + 1})` },
            );
            victim.kill('SIGKILL');
            kills.push({ pid: victim.pid!, at: Date.now() });
            workers.splice(workers.indexOf(victim), 1);
            // Respawned in the background: the others keep working, and may be killed meanwhile.
            respawns.push(
              exited(victim)
                .then(() => spawnWorker(env))
                .then((worker) => void workers.push(worker)),
            );
          }
          await publishing;
          await Promise.all(respawns);

          await waitFor(
            () =>
              new Set(
                readLog(logFile)
                  .filter((e) => e.e === 'done')
                  .map((e) => e.n),
              ).size === TASKS,
            { timeout: 30_000, interval: 20, message: 'every task completed' },
          );
          // Drained: nothing pending, delayed or claimed, so no further (duplicate) run can come.
          await waitFor(
            async () => {
              const stats = await producer.stats('jobs');
              return stats.pending === 0 && stats.delayed === 0 && stats.inFlight === 0;
            },
            { timeout: 15_000, interval: 50, message: 'queue drained' },
          );
          await Promise.all(
            workers.map((w) => {
              w.send('stop');
              return within(exited(w), 10_000, 'worker stop');
            }),
          );

          const events = readLog(logFile);
          const done = events.filter((e) => e.e === 'done');
          const completed = new Set(done.map((e) => e.n));
          const lost = Array.from({ length: TASKS }, (_, n) => n).filter((n) => !completed.has(n));
          expect(lost).toEqual([]);
          expect((await producer.stats('jobs')).deadLetters).toBe(0);

          const runs = new Map<number, LogEvent[]>();
          for (const event of done) runs.set(event.n, [...(runs.get(event.n) ?? []), event]);
          const duplicated = [...runs].filter(([, list]) => list.length > 1);
          const killedPids = new Set(kills.map((k) => k.pid));
          const starts = events.filter((e) => e.e === 'start');
          // A duplicate is traceable when an earlier run of that task started on a worker that was killed.
          const untraceable = duplicated.filter(
            ([n]) => !starts.some((s) => s.n === n && killedPids.has(s.pid)),
          ).length;
          const latencies: number[] = [];
          for (const kill of kills) {
            const orphaned = new Set(
              starts
                .filter(
                  (s) =>
                    s.pid === kill.pid &&
                    !done.some((d) => d.pid === kill.pid && d.id === s.id && d.a === s.a),
                )
                .map((s) => s.id),
            );
            for (const id of orphaned) {
              const next = starts.find((s) => s.id === id && s.t >= kill.at && s.pid !== kill.pid);
              if (next) latencies.push(next.t - kill.at);
            }
          }
          // Every kill hit a busy worker: some task of it was taken over by another worker.
          expect(latencies.length).toBeGreaterThan(0);
          const figure = {
            test: `${options.name} processes`,
            tasks: TASKS,
            workers: WORKERS,
            kills: kills.length,
            lost: lost.length,
            completions: done.length,
            duplicates: done.length - TASKS,
            duplicatedTasks: duplicated.length,
            untraceableDuplicates: untraceable,
            redeliveryAfterKillMs: {
              count: latencies.length,
              min: Math.min(...latencies),
              max: Math.max(...latencies),
              mean: Math.round(latencies.reduce((a, b) => a + b, 0) / latencies.length),
            },
            ...(options.visibilityTimeoutMs === undefined
              ? {}
              : { visibilityTimeoutMs: options.visibilityTimeoutMs }),
            durationMs: Date.now() - startedAt,
          };
          console.log(`queue process figures: ${JSON.stringify(figure)}`);
        } finally {
          await producer.close({ timeout: 1_000 });
          await run.cleanup?.();
        }
      },
      options.timeoutMs ?? 90_000,
    );
  });
}
