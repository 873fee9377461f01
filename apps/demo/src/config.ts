import { parseArgs } from 'node:util';

export const BACKEND_KINDS = ['memory', 'redis', 'rabbitmq', 'nats'] as const;
export type BackendKind = (typeof BACKEND_KINDS)[number];
export type Part = 'cache' | 'pubsub' | 'queue' | 'lock';
export const PARTS: readonly Part[] = ['cache', 'pubsub', 'queue', 'lock'];

/** Which backends can run which part (RabbitMQ has no cache store or lock). */
export const SUPPORTED: Record<Part, readonly BackendKind[]> = {
  cache: ['memory', 'redis', 'nats'],
  pubsub: ['memory', 'redis', 'rabbitmq', 'nats'],
  queue: ['memory', 'redis', 'rabbitmq', 'nats'],
  lock: ['memory', 'redis', 'nats'],
};

export interface DemoConfig {
  mode: 'embedded' | 'distributed';
  instances: number;
  /** Dashboard port; instances use the next ones (0: every port is picked by the system). */
  port: number;
  host: string;
  appName: string;
  backends: Record<Part, BackendKind>;
  urls: { redis: string; amqp: string; nats: string };
  /** Prefix of every Redis key (and NATS / RabbitMQ resource) before the app name. */
  keyPrefix: string;
  /** PostgreSQL when set, else SQLite. */
  databaseUrl: string | undefined;
  /** ms a running task's claim lasts without a heartbeat: how fast a dead instance's task moves on. */
  visibilityTimeoutMs: number;
  /** Delete this run's rows (PostgreSQL) when the demo exits. */
  cleanupOnExit: boolean;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

const USAGE = `usage: pnpm demo [-- options]
  --distributed            one process per instance (default: all instances in one process)
  --instances N            number of instances (default 3)
  --port P                 dashboard port; instances take P+1..P+N (default 3000; 0 = any free port)
  --cache  memory|redis|nats
  --pubsub memory|redis|rabbitmq|nats
  --queue  memory|redis|rabbitmq|nats
  --lock   memory|redis|nats        (each also from DEMO_CACHE, DEMO_PUBSUB, DEMO_QUEUE, DEMO_LOCK)
  --app NAME               app name, the prefix of every key and channel (default demo)
  --host HOST              address the HTTP servers listen on (default 127.0.0.1)
environment: REDIS_URL, AMQP_URL, NATS_URL, DATABASE_URL (PostgreSQL; SQLite when unset),
  DEMO_KEY_PREFIX, DEMO_VISIBILITY_MS, DEMO_CLEANUP=1, DEMO_VERBOSE=1 (see apps/demo/README.md)`;

export function usage(): string {
  return USAGE;
}

function integer(value: string | undefined, what: string, min: number, max: number): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(
      `${what} must be an integer between ${min} and ${max}, got ${JSON.stringify(value)}`,
    );
  }
  return n;
}

function backend(part: Part, value: string | undefined, fallback: BackendKind): BackendKind {
  const chosen = (value ?? '').trim().toLowerCase() || fallback;
  if (!(BACKEND_KINDS as readonly string[]).includes(chosen)) {
    throw new ConfigError(
      `--${part} must be one of ${BACKEND_KINDS.join(', ')}, got ${JSON.stringify(value)}`,
    );
  }
  const kind = chosen as BackendKind;
  if (!SUPPORTED[part].includes(kind)) {
    throw new ConfigError(`${kind} has no ${part} adapter; use one of ${SUPPORTED[part].join(', ')}`);
  }
  return kind;
}

/** Reads flags, then environment variables, then defaults. Throws ConfigError on bad input. */
export function parseConfig(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): DemoConfig | 'help' {
  const { values } = parseArgs({
    // `pnpm demo -- --instances 5` hands the `--` through; it separates nothing here.
    args: argv.filter((arg) => arg !== '--'),
    strict: true,
    allowPositionals: false,
    options: {
      distributed: { type: 'boolean' },
      instances: { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string' },
      app: { type: 'string' },
      cache: { type: 'string' },
      pubsub: { type: 'string' },
      queue: { type: 'string' },
      lock: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  const distributed = values.distributed ?? env.DEMO_DISTRIBUTED === '1';
  // A separate process per instance needs backends every process reaches; the cache may stay
  // per-instance memory (a node-local cache is still a correct cache).
  const crossDefault: BackendKind = distributed ? 'redis' : 'memory';
  const backends: Record<Part, BackendKind> = {
    cache: backend('cache', values.cache ?? env.DEMO_CACHE, crossDefault),
    pubsub: backend('pubsub', values.pubsub ?? env.DEMO_PUBSUB, crossDefault),
    queue: backend('queue', values.queue ?? env.DEMO_QUEUE, crossDefault),
    lock: backend('lock', values.lock ?? env.DEMO_LOCK, crossDefault),
  };
  if (distributed) {
    for (const part of ['pubsub', 'queue', 'lock'] as const) {
      if (backends[part] === 'memory') {
        throw new ConfigError(
          `--distributed runs one process per instance: --${part} memory cannot reach the other processes; choose redis, nats${part === 'lock' ? '' : ' or rabbitmq'}`,
        );
      }
    }
  }
  const appName = (values.app ?? env.DEMO_APP ?? 'demo').trim();
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(appName)) {
    throw new ConfigError('--app must be 1-64 letters, digits, "-" or "_"');
  }
  const keyPrefix = (env.DEMO_KEY_PREFIX ?? 'cluster').trim();
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(keyPrefix)) {
    throw new ConfigError('DEMO_KEY_PREFIX must be 1-64 letters, digits, "-" or "_"');
  }
  return {
    mode: distributed ? 'distributed' : 'embedded',
    instances: integer(values.instances ?? env.DEMO_INSTANCES, '--instances', 1, 16) ?? 3,
    port: integer(values.port ?? env.DEMO_PORT, '--port', 0, 65_535 - 16) ?? 3000,
    host: values.host ?? env.DEMO_HOST ?? '127.0.0.1',
    appName,
    backends,
    urls: {
      redis: env.REDIS_URL || 'redis://127.0.0.1:6379',
      amqp: env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672',
      nats: env.NATS_URL || 'nats://127.0.0.1:4222',
    },
    keyPrefix,
    databaseUrl: env.DATABASE_URL || undefined,
    visibilityTimeoutMs: integer(env.DEMO_VISIBILITY_MS, 'DEMO_VISIBILITY_MS', 500, 600_000) ?? 3_000,
    cleanupOnExit: env.DEMO_CLEANUP === '1',
  };
}

/** Removes `user:password@` (and any query string, which may hold tokens) so a URL can be printed. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    const auth = parsed.username || parsed.password ? '***@' : '';
    return `${parsed.protocol}//${auth}${parsed.host}${parsed.pathname === '/' ? '' : parsed.pathname}`;
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@').replace(/\?.*$/, '');
  }
}
