/**
 * The worker side of `describeQueueProcessKills`, for a forked process (no vitest here): it consumes
 * channel `jobs` of app `procs` with the given adapter and appends one JSON line per event to the
 * file in `LOG`: `start` when a handler begins, `done` when it has finished (before the ack), so a
 * SIGKILL between the two is visible. `CONCURRENCY` comes from the environment too. It answers
 * `ready` on the IPC channel once consuming, and closes on a `stop` message.
 */
import { appendFileSync } from 'node:fs';
import { EventQueue, type QueueAdapter } from '@cluster/core';

export interface QueueWorkerTask {
  n: number;
  /** How long the handler works, in ms. */
  ms: number;
}

export async function runQueueWorker(adapter: QueueAdapter): Promise<void> {
  const { LOG, CONCURRENCY } = process.env;
  if (!LOG) throw new Error('runQueueWorker: LOG (the event log file) is not set');
  const log = (event: Record<string, unknown>) =>
    appendFileSync(LOG, `${JSON.stringify({ ...event, pid: process.pid, t: Date.now() })}\n`);
  const queue = new EventQueue({ appName: 'procs', adapter, idleInterval: 20, closeTimeout: 2_000 });
  await queue.start();
  queue.subscribe('jobs', {
    concurrency: Number(CONCURRENCY ?? 2),
    process: async (task: QueueWorkerTask, { id, attempt }) => {
      log({ e: 'start', id, n: task.n, a: attempt });
      await new Promise((resolve) => setTimeout(resolve, task.ms));
      log({ e: 'done', id, n: task.n, a: attempt });
    },
  });
  process.on('message', async (message) => {
    if (message === 'stop') {
      await queue.close({ timeout: 2_000 });
      process.exit(0);
    }
  });
  process.send?.('ready');
}
