import { randomBytes } from 'node:crypto';
import { ClusterError, type EventQueueTaskContext, Plugin, type PubSubMessageMeta } from '@cluster/core';
import type { Database } from '../db.js';
import { type EventLog, messageOf, sleep } from '../events.js';

export interface TaskPayload {
  label: string;
  steps: number;
  stepMs: number;
  maxRetries: number;
  /** Attempts up to and including this one fail halfway (0: never fails). Shows retries and dead letters. */
  failUntilAttempt: number;
}

export interface RunningTask {
  id: string;
  label: string;
  attempt: number;
  progress: number;
  startedAt: number;
}

export interface EnqueueOptions {
  count: number;
  steps?: number;
  stepMs?: number;
  /** Per-attempt timeout in ms. */
  timeout?: number;
  maxRetries?: number;
  failUntilAttempt?: number;
  label?: string;
}

const LABELS = ['resize images', 'export orders', 'rebuild index', 'send digest', 'sync crm', 'render pdf'];

/**
 * Seed sections "EventQueue" and "PubSubManager": long tasks go to `app.eventQueue` with a
 * per-attempt timeout and retries, and exactly one instance runs each; cancelling a task is
 * broadcast over `app.pubSubManager` so whichever instance runs it stops. A cancellation is also
 * written to the database, so an instance that picks the task up later skips it.
 */
export class AsyncTaskPlugin extends Plugin {
  readonly running = new Map<string, RunningTask>();
  /** The dashboard's "Pause tasks": while false, `idle()` tells the queue to hand this instance nothing. */
  accepting = true;
  readonly #cancels = new Map<string, AbortController>();

  constructor(
    private readonly db: Database,
    private readonly events: EventLog,
    private readonly concurrency = 2,
  ) {
    super({ name: 'async-tasks' });
  }

  get taskChannel(): string {
    return `${this.name}.task`;
  }

  get cancelChannel(): string {
    return `${this.name}.task.cancel`;
  }

  override async load(): Promise<void> {
    await this.app.pubSubManager.subscribe(
      this.cancelChannel,
      async ({ id }: { id: string }, meta: PubSubMessageMeta) => {
        const here = this.running.has(id);
        this.events.push(
          'pubsub-received',
          `cancel ${id} from ${meta.publisherId}${here ? ' (running here: stopping)' : ''}`,
          {
            channel: this.cancelChannel,
            id,
            from: meta.publisherId,
          },
        );
        this.stopLocalTask(id);
      },
    );
    this.app.eventQueue.subscribe<TaskPayload>(this.taskChannel, {
      concurrency: this.concurrency,
      idle: () => this.accepting,
      process: (payload, context) => this.#run(payload, context),
    });
  }

  /** Publishes `count` tasks; resolves their ids. */
  async enqueue(options: EnqueueOptions): Promise<string[]> {
    const count = Math.max(1, Math.min(200, Math.floor(options.count)));
    // Ids sort in publishing order (a time prefix), and two instances never pick the same one.
    const batch = `${Date.now().toString(36).slice(-6)}${randomBytes(1).toString('hex')}`;
    const ids: string[] = [];
    for (let n = 1; n <= count; n++) {
      const id = `${batch}-${String(n).padStart(2, '0')}`;
      const payload: TaskPayload = {
        label: options.label ?? LABELS[(n - 1) % LABELS.length]!,
        steps: options.steps ?? 10,
        stepMs: options.stepMs ?? 300,
        maxRetries: options.maxRetries ?? 2,
        failUntilAttempt: options.failUntilAttempt ?? 0,
      };
      await this.app.eventQueue.publish(this.taskChannel, payload, {
        id,
        timeout: options.timeout ?? 30_000,
        maxRetries: payload.maxRetries,
      });
      ids.push(id);
      this.events.push('task-queued', `queued ${id} (${payload.label})`, {
        id,
        label: payload.label,
        maxRetries: payload.maxRetries,
      });
    }
    return ids;
  }

  /** The seed's cancellation: stop it here if it runs here, and tell the other instances. */
  async cancel(id: string): Promise<void> {
    await this.db.run(
      'INSERT INTO demo_cancelled_tasks (app, id) VALUES (?, ?) ON CONFLICT (app, id) DO NOTHING',
      [this.app.name, id],
    );
    this.stopLocalTask(id);
    await this.app.pubSubManager.publish(this.cancelChannel, { id }, { skipSelf: true });
    this.events.push('pubsub-sent', `cancel ${id}`, { channel: this.cancelChannel, id });
  }

  stopLocalTask(id: string): boolean {
    const controller = this.#cancels.get(id);
    if (!controller) return false;
    controller.abort(new ClusterError('ABORTED', `task ${id} was cancelled`));
    return true;
  }

  async #isCancelled(id: string): Promise<boolean> {
    const rows = await this.db.query('SELECT id FROM demo_cancelled_tasks WHERE app = ? AND id = ?', [
      this.app.name,
      id,
    ]);
    return rows.length > 0;
  }

  async #run(payload: TaskPayload, { signal, id, attempt }: EventQueueTaskContext): Promise<void> {
    const base = { id, attempt, label: payload.label };
    if (await this.#isCancelled(id)) {
      this.events.push('task-cancelled', `${id} was cancelled before it started`, { ...base, progress: 0 });
      return;
    }
    const cancel = new AbortController();
    this.#cancels.set(id, cancel);
    const task: RunningTask = { id, label: payload.label, attempt, progress: 0, startedAt: Date.now() };
    this.running.set(id, task);
    this.events.push('task-started', `started ${id} (attempt ${attempt})`, base);
    // One signal for both reasons to stop: the queue's (timeout, lost claim, shutdown) and a cancel.
    const stop = AbortSignal.any([signal, cancel.signal]);
    try {
      for (let step = 1; step <= payload.steps; step++) {
        await sleep(payload.stepMs, stop);
        task.progress = step / payload.steps;
        if (attempt <= payload.failUntilAttempt && step === Math.ceil(payload.steps / 2)) {
          throw new Error(`simulated failure on attempt ${attempt}`);
        }
      }
      this.events.push('task-finished', `finished ${id} (attempt ${attempt})`, { ...base, progress: 1 });
    } catch (error) {
      if (cancel.signal.aborted) {
        // Settled as done: a cancelled task must not be retried.
        this.events.push(
          'task-cancelled',
          `stopped ${id} at ${Math.round(task.progress * 100)}% (cancelled)`,
          {
            ...base,
            progress: task.progress,
          },
        );
        return;
      }
      const reason = signal.aborted ? signal.reason : error;
      if (ClusterError.is(reason, 'CLOSED') || ClusterError.is(reason, 'ABORTED')) {
        // Not a failed attempt: this instance is stopping or lost the claim; the queue redelivers it.
        this.events.push(
          'task-failed',
          `${id} interrupted here (${messageOf(reason)}); redelivered elsewhere`,
          {
            ...base,
            error: messageOf(reason),
            willRetry: true,
            interrupted: true,
            progress: task.progress,
          },
        );
        throw error;
      }
      const why = ClusterError.is(reason, 'TASK_TIMEOUT') ? 'timed out' : messageOf(reason);
      const willRetry = attempt <= payload.maxRetries;
      this.events.push(
        'task-failed',
        `${id} attempt ${attempt} failed: ${why}${willRetry ? '; will retry' : '; dead-lettered'}`,
        { ...base, error: why, willRetry, progress: task.progress },
      );
      throw error;
    } finally {
      this.running.delete(id);
      this.#cancels.delete(id);
    }
  }

  deadLetters() {
    return this.app.eventQueue.deadLetters.list(this.taskChannel, { limit: 100 });
  }
}
