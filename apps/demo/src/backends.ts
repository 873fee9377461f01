import { connect } from 'node:net';
import { createNatsAdapters } from '@cluster/adapter-nats';
import { createRabbitAdapters } from '@cluster/adapter-rabbitmq';
import { createRedisAdapters } from '@cluster/adapter-redis';
import {
  type CacheStore,
  type ClusterOptions,
  createMemoryQueue,
  type LockAdapter,
  type Logger,
  type MemoryHub,
  type PubSubAdapter,
  type QueueAdapter,
} from '@cluster/core';
import { type BackendKind, type DemoConfig, PARTS, redactUrl } from './config.js';

/** A chosen server that does not answer: printed as one line, without credentials. */
export class BackendUnreachableError extends Error {
  override name = 'BackendUnreachableError';
}

const SERVERS: Record<Exclude<BackendKind, 'memory'>, { name: string; env: string; service: string }> = {
  redis: { name: 'Redis', env: 'REDIS_URL', service: 'redis' },
  rabbitmq: { name: 'RabbitMQ', env: 'AMQP_URL', service: 'rabbitmq' },
  nats: { name: 'NATS', env: 'NATS_URL', service: 'nats' },
};

const DEFAULT_PORTS: Record<Exclude<BackendKind, 'memory'>, number> = {
  redis: 6379,
  rabbitmq: 5672,
  nats: 4222,
};

export function serverUrl(config: DemoConfig, kind: Exclude<BackendKind, 'memory'>): string {
  return kind === 'redis' ? config.urls.redis : kind === 'rabbitmq' ? config.urls.amqp : config.urls.nats;
}

function probe(url: string, defaultPort: number, timeoutMs: number): Promise<string | undefined> {
  let host = '127.0.0.1';
  let port = defaultPort;
  try {
    const parsed = new URL(url);
    host = parsed.hostname.replace(/^\[|\]$/g, '') || host;
    port = parsed.port ? Number(parsed.port) : defaultPort;
  } catch {
    return Promise.resolve('the URL cannot be parsed');
  }
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (why: string | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => done(`no answer within ${timeoutMs} ms`), timeoutMs);
    socket.once('connect', () => done(undefined));
    socket.once('error', (error: NodeJS.ErrnoException) =>
      done(error.code === 'ECONNREFUSED' ? 'connection refused' : (error.code ?? 'connection failed')),
    );
  });
}

/** The servers the chosen backends need. */
export function serversInUse(config: DemoConfig): Exclude<BackendKind, 'memory'>[] {
  const kinds = new Set<Exclude<BackendKind, 'memory'>>();
  for (const part of PARTS) {
    const kind = config.backends[part];
    if (kind !== 'memory') kinds.add(kind);
  }
  return [...kinds];
}

/**
 * Checks that every chosen server accepts a TCP connection before anything starts, so a missing
 * server is one clear line instead of an adapter's retry loop or a stack trace.
 */
export async function checkServers(config: DemoConfig, timeoutMs = 2_000): Promise<void> {
  for (const kind of serversInUse(config)) {
    const url = serverUrl(config, kind);
    const why = await probe(url, DEFAULT_PORTS[kind], timeoutMs);
    if (why !== undefined) {
      const server = SERVERS[kind];
      const users = PARTS.filter((part) => config.backends[part] === kind).join(', ');
      throw new BackendUnreachableError(
        `${server.name} (chosen for ${users}) is not reachable at ${redactUrl(url)}: ${why}. ` +
          `Start it (docker compose up -d ${server.service}) or set ${server.env}.`,
      );
    }
  }
}

export interface Topology {
  exchanges: string[];
  queues: string[];
}

export interface InstanceBackends {
  options: Pick<ClusterOptions, 'cache' | 'pubSub' | 'queue' | 'lock'>;
  /** The RabbitMQ exchanges and queues this instance's adapters declared (for cleanup). */
  topology(): Topology;
  /** Closes the adapter bundles' connections; after `app.stop()`, which closes the parts. Idempotent. */
  close(): Promise<void>;
}

/**
 * The adapters of ONE instance: every instance gets its own adapter objects (its own
 * connections), exactly as separate processes would, even when they share a process.
 */
export function createInstanceBackends(
  config: DemoConfig,
  context: { hub: MemoryHub | undefined; logger: Logger },
): InstanceBackends {
  const { backends } = config;
  const logger = context.logger;
  const uses = (kind: BackendKind) => PARTS.some((part) => backends[part] === kind);
  // One bundle per server, so the parts on one server share its connections.
  const redis = uses('redis')
    ? createRedisAdapters({
        url: config.urls.redis,
        keyPrefix: config.keyPrefix,
        logger,
        queue: { visibilityTimeout: config.visibilityTimeoutMs },
      })
    : undefined;
  const nats = uses('nats')
    ? createNatsAdapters({
        servers: config.urls.nats,
        subjectPrefix: config.keyPrefix,
        logger,
        queue: { visibilityTimeout: config.visibilityTimeoutMs },
      })
    : undefined;
  const rabbit = uses('rabbitmq')
    ? createRabbitAdapters({
        url: config.urls.amqp,
        prefix: config.keyPrefix,
        logger,
        queue: { visibilityTimeout: config.visibilityTimeoutMs },
      })
    : undefined;

  let cacheStore: CacheStore | undefined;
  if (backends.cache === 'redis') cacheStore = redis!.cacheStore;
  if (backends.cache === 'nats') cacheStore = nats!.cacheStore;

  let pubSub: PubSubAdapter | undefined;
  if (backends.pubsub === 'redis') pubSub = redis!.pubSub;
  if (backends.pubsub === 'nats') pubSub = nats!.pubSub;
  if (backends.pubsub === 'rabbitmq') pubSub = rabbit!.pubSub;

  let queue: QueueAdapter;
  if (backends.queue === 'redis') queue = redis!.queue;
  else if (backends.queue === 'nats') queue = nats!.queue;
  else if (backends.queue === 'rabbitmq') queue = rabbit!.queue;
  else queue = createMemoryQueue({ hub: context.hub, visibilityTimeout: config.visibilityTimeoutMs });

  let lock: LockAdapter | undefined;
  if (backends.lock === 'redis') lock = redis!.lock;
  if (backends.lock === 'nats') lock = nats!.lock;

  return {
    options: {
      cache: cacheStore
        ? // A shared store lets one instance fill the policy while the others wait for its value.
          { defaultStore: 'shared', stores: { shared: cacheStore }, singleFlight: 'cluster' }
        : {},
      pubSub: pubSub ? { adapter: pubSub } : {},
      queue: { adapter: queue, backoff: { baseMs: 300, maxMs: 2_000 }, closeTimeout: 2_000 },
      lock: lock ? { defaultAdapter: 'shared', adapters: { shared: lock } } : {},
    },
    topology: () => {
      const out: Topology = { exchanges: [], queues: [] };
      if (!rabbit) return out;
      const parts = [
        ...(backends.pubsub === 'rabbitmq' ? [rabbit.pubSub] : []),
        ...(backends.queue === 'rabbitmq' ? [rabbit.queue] : []),
      ];
      for (const part of parts) {
        const { exchanges, queues } = part.topology();
        out.exchanges.push(...exchanges);
        out.queues.push(...queues);
      }
      return out;
    },
    close: async () => {
      await Promise.all([redis?.close(), nats?.close(), rabbit?.close()]);
    },
  };
}
