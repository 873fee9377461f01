import { NatsConnections } from '@cluster/adapter-nats';
import { RabbitConnection } from '@cluster/adapter-rabbitmq';
import { RedisConnections } from '@cluster/adapter-redis';
import type { Topology } from './backends.js';
import { type DemoConfig, PARTS } from './config.js';
import { messageOf } from './events.js';
import { redact } from './logger.js';

/**
 * With DEMO_CLEANUP=1 the demo deletes, on exit, what it created on the servers under its own
 * DEMO_KEY_PREFIX: Redis keys (SCAN + UNLINK, never FLUSHALL), NATS streams and KV buckets whose
 * name carries the prefix, and the RabbitMQ exchanges and queues its adapters declared. Refused
 * for the default prefix, which other software on the server may share.
 */
export async function cleanupServers(config: DemoConfig, topology: Topology): Promise<string[]> {
  const done: string[] = [];
  const uses = (kind: string) => PARTS.some((part) => config.backends[part] === kind);
  if (!uses('redis') && !uses('nats') && !uses('rabbitmq')) return done;
  if (config.keyPrefix === 'cluster') {
    return ['server cleanup skipped: set a DEMO_KEY_PREFIX of your own to let the demo delete its data'];
  }
  const prefix = config.keyPrefix;
  const attempt = async (what: string, run: () => Promise<number>) => {
    try {
      done.push(`${what}: deleted ${await run()}`);
    } catch (error) {
      done.push(`${what}: cleanup failed: ${redact(messageOf(error))}`);
    }
  };
  if (uses('redis')) {
    await attempt('redis keys', () => deleteRedisKeys(config.urls.redis, prefix));
  }
  if (uses('nats')) {
    await attempt('nats streams', async () => {
      const connections = new NatsConnections({ servers: config.urls.nats, subjectPrefix: prefix });
      try {
        const jsm = await connections.jetstreamManager();
        const names: string[] = [];
        for await (const name of jsm.streams.names()) if (name.includes(prefix)) names.push(name);
        for (const name of names) await jsm.streams.delete(name);
        return names.length;
      } finally {
        await connections.close();
      }
    });
  }
  if (uses('rabbitmq') && topology.exchanges.length + topology.queues.length > 0) {
    await attempt('rabbitmq queues and exchanges', async () => {
      const connection = new RabbitConnection({ url: config.urls.amqp, prefix });
      try {
        const channel = (await connection.channel('cleanup', false, 5_000)) as any;
        for (const queue of topology.queues) await channel.deleteQueue(queue);
        for (const exchange of topology.exchanges) await channel.deleteExchange(exchange);
        await connection.closeChannel(channel);
        return topology.queues.length + topology.exchanges.length;
      } finally {
        await connection.close();
      }
    });
  }
  return done;
}

/**
 * Deletes every Redis key under `keyPrefix` (the run's own, unique prefix): SCAN + UNLINK page by
 * page, never FLUSHALL, so a shared server keeps everyone else's data. Returns how many.
 */
export async function deleteRedisKeys(url: string, keyPrefix: string): Promise<number> {
  const connections = new RedisConnections({ url, keyPrefix });
  const client = connections.command as any;
  let deleted = 0;
  try {
    await connections.ready(client);
    let cursor = '0';
    do {
      const [next, keys] = (await client.scan(cursor, 'MATCH', `${keyPrefix}:*`, 'COUNT', 1000)) as [
        string,
        string[],
      ];
      cursor = next;
      const ours = keys.filter((key) => key.startsWith(`${keyPrefix}:`));
      if (ours.length > 0) deleted += Number(await client.unlink(...ours));
    } while (cursor !== '0');
  } finally {
    await connections.close();
  }
  return deleted;
}
