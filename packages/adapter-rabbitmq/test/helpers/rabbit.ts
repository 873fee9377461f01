/** Shared bits of the tests: the broker URL, and deleting exactly what a test's adapters declared. */
import { RABBITMQ, serverUrl } from '@cluster/testkit';
import amqp from 'amqplib';

export const AMQP_URL = serverUrl(RABBITMQ);

/** Anything that reports what it declared on the broker. */
export interface Declaring {
  topology(): { readonly exchanges: readonly string[]; readonly queues: readonly string[] };
}

/** Remembers adapters so that everything they declared can be deleted after the test. */
export class TopologyTracker {
  readonly #adapters = new Set<Declaring>();
  readonly #queues = new Set<string>();
  readonly #exchanges = new Set<string>();

  track<T extends Declaring>(adapter: T): T {
    this.#adapters.add(adapter);
    return adapter;
  }

  queue(name: string): void {
    this.#queues.add(name);
  }

  exchange(name: string): void {
    this.#exchanges.add(name);
  }

  /** Deletes every queue and exchange the tracked adapters declared; returns how many names. */
  async cleanup(url = AMQP_URL): Promise<number> {
    for (const adapter of this.#adapters) {
      const { exchanges, queues } = adapter.topology();
      for (const name of exchanges) this.#exchanges.add(name);
      for (const name of queues) this.#queues.add(name);
    }
    this.#adapters.clear();
    const names = [...this.#queues, ...this.#exchanges];
    if (names.length === 0) return 0;
    await deleteTopology([...this.#queues], [...this.#exchanges], url);
    this.#queues.clear();
    this.#exchanges.clear();
    return names.length;
  }
}

export async function deleteTopology(queues: string[], exchanges: string[], url = AMQP_URL): Promise<void> {
  const connection = await amqp.connect(url);
  connection.on('error', () => {});
  try {
    const channel = await connection.createChannel();
    channel.on('error', () => {});
    for (const queue of queues) await channel.deleteQueue(queue);
    for (const exchange of exchanges) await channel.deleteExchange(exchange);
    await channel.close();
  } finally {
    await connection.close().catch(() => {});
  }
}

/** True when a queue exists (a passive declare on a throwaway channel, since a 404 closes it). */
export async function queueExists(name: string, url = AMQP_URL): Promise<boolean> {
  const connection = await amqp.connect(url);
  connection.on('error', () => {});
  try {
    const channel = await connection.createChannel();
    channel.on('error', () => {});
    try {
      await channel.checkQueue(name);
      await channel.close();
      return true;
    } catch {
      return false;
    }
  } finally {
    await connection.close().catch(() => {});
  }
}
