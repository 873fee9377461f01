/**
 * BullMQ as a queue peer, on the Redis server at `redisUrl`: the Redis suite compares with it at
 * two concurrencies, the RabbitMQ suite as the queue most Node apps run today.
 */
import { type Loaded, loadPeer } from '../harness.js';
import type { ConcurrentChannelQueue } from '../scenarios/queue.js';
import { label, waitFor } from '../suite.js';

/** ioredis connection fields from a Redis URL, for libraries that want options rather than a URL. */
function redisOptionsFromUrl(url: string): {
  host: string;
  port: number;
  db?: number;
  username?: string;
  password?: string;
  tls?: object;
} {
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

export interface BullmqOptions {
  redisUrl: string;
  /** BullMQ's key prefix: keeps the run's keys apart (and findable for the clean-up). */
  prefix: string;
  /** Jobs per Queue.addBulk call. */
  chunk: number;
  /** Follows `bullmq@<version>` in the row name. */
  labelSuffix: string;
}

export async function loadBullmq(options: BullmqOptions): Promise<Loaded<ConcurrentChannelQueue>> {
  const loaded = await loadPeer('bullmq', async () => {
    const { Queue, Worker } = await import('bullmq');
    // BullMQ's production advice: maxRetriesPerRequest null (required for workers), auto-removal of
    // finished jobs.
    const connection = { ...redisOptionsFromUrl(options.redisUrl), maxRetriesPerRequest: null };
    const { prefix, chunk } = options;
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
    const impl: ConcurrentChannelQueue = {
      name: '',
      async consume(channel, concurrency, handler) {
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
        for (let start = first; start < first + count; start += chunk) {
          const end = Math.min(first + count, start + chunk);
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
  if (loaded.available) loaded.value.name = label(loaded, options.labelSuffix);
  return loaded;
}
