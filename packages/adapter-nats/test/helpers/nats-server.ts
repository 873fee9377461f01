/**
 * Starts a private nats-server with JetStream (binary `nats-server` on PATH) on a spare loopback
 * port with its own temporary store directory, for tests that kill and restart the server. Never
 * touches the shared server.
 */
import { binariesAvailable, startServerProcess } from '@cluster/testkit';

export interface NatsServerHandle {
  /** `nats://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** The temporary JetStream store directory. */
  dir: string;
  /** SIGKILL; resolves when the process has exited. */
  kill(): Promise<void>;
  /** Starts the server again on the same port with the same store directory. */
  restart(): Promise<void>;
  /** Graceful stop (SIGTERM), then removes the directory. */
  stop(): Promise<void>;
}

/** True when `nats-server` can be run: tests that start their own servers skip otherwise. */
export const natsServerAvailable = binariesAvailable(
  ['nats-server'],
  'tests that start their own nats-server',
);

export async function startNatsServer(
  options: { args?: readonly string[]; startTimeout?: number } = {},
): Promise<NatsServerHandle> {
  const server = await startServerProcess({
    command: 'nats-server',
    args: (port, dir) => ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir, ...(options.args ?? [])],
    // JetStream is ready once the server logs it (the port opens a little earlier).
    ready: (stderr) => /Server is ready/.test(stderr),
    startTimeout: options.startTimeout ?? 15_000,
  });
  return { url: `nats://127.0.0.1:${server.port}`, ...server };
}
