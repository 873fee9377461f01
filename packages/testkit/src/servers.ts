import { connect } from 'node:net';

/** True when a TCP connection to the URL's host and port opens within `timeoutMs`. */
export function serverReachable(url: string, defaultPort: number, timeoutMs = 1_000): Promise<boolean> {
  let host = '127.0.0.1';
  let port = defaultPort;
  try {
    const parsed = new URL(url);
    host = parsed.hostname.replace(/^\[|\]$/g, '') || host;
    port = parsed.port ? Number(parsed.port) : defaultPort;
  } catch {
    return Promise.resolve(false);
  }
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

export interface ServerSpec {
  /** Shown in messages, e.g. 'Redis'. */
  name: string;
  /** Environment variable that overrides the URL, e.g. 'REDIS_URL'. */
  env: string;
  defaultUrl: string;
  defaultPort: number;
  /** The docker compose service that runs it for developers. */
  composeService: string;
}

export const REDIS: ServerSpec = {
  name: 'Redis',
  env: 'REDIS_URL',
  defaultUrl: 'redis://127.0.0.1:6379',
  defaultPort: 6379,
  composeService: 'redis',
};
export const RABBITMQ: ServerSpec = {
  name: 'RabbitMQ',
  env: 'AMQP_URL',
  defaultUrl: 'amqp://guest:guest@127.0.0.1:5672',
  defaultPort: 5672,
  composeService: 'rabbitmq',
};
export const NATS: ServerSpec = {
  name: 'NATS',
  env: 'NATS_URL',
  defaultUrl: 'nats://127.0.0.1:4222',
  defaultPort: 4222,
  composeService: 'nats',
};

/** The server's URL from the environment or its default. */
export function serverUrl(spec: ServerSpec): string {
  return process.env[spec.env] || spec.defaultUrl;
}

/** Removes `user:password@` from a URL so it can be printed. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}

/**
 * Decides whether a server-backed suite runs. Reachable: true. Unreachable outside CI: false, with a
 * message naming the server and how to start it (the suite is skipped). Unreachable with CI=true:
 * throws, so the run fails instead of silently testing nothing.
 */
export async function requireServer(spec: ServerSpec): Promise<boolean> {
  const url = serverUrl(spec);
  if (await serverReachable(url, spec.defaultPort)) return true;
  const message =
    `${spec.name} is not reachable at ${redactUrl(url)} (set ${spec.env}); ` +
    `start it with \`docker compose up -d ${spec.composeService}\``;
  if (process.env.CI === 'true' || process.env.CI === '1') throw new Error(`${message}. CI requires it.`);
  console.warn(`skipping ${spec.name} suites: ${message}`);
  return false;
}
