/**
 * Starts a private nats-server with JetStream (binary `nats-server` on PATH) on a spare loopback
 * port with its own temporary store directory, for tests that kill and restart the server. Never
 * touches the shared server.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { binariesAvailable, portAccepts, sparePort } from '@cluster/testkit';

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

function exited(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export async function startNatsServer(
  options: { args?: readonly string[]; startTimeout?: number } = {},
): Promise<NatsServerHandle> {
  const dir = await mkdtemp(join(tmpdir(), 'cluster-nats-'));
  const port = await sparePort();
  const startTimeout = options.startTimeout ?? 15_000;
  const args = ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir, ...(options.args ?? [])];
  let child: ChildProcess | undefined;
  let stderr = '';

  const launch = async (): Promise<void> => {
    stderr = '';
    const proc = spawn('nats-server', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    child = proc;
    proc.stderr?.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-4_000);
    });
    const failed = new Promise<never>((_, reject) => {
      proc.once('error', reject);
      proc.once('exit', (code, sig) =>
        reject(new Error(`nats-server exited during start (code ${code}, signal ${sig}): ${stderr}`)),
      );
    });
    failed.catch(() => {});
    const deadline = Date.now() + startTimeout;
    for (;;) {
      // JetStream is ready once the server logs it (the port opens a little earlier).
      const ok = await Promise.race([portAccepts(port), failed]);
      if (ok && /Server is ready/.test(stderr)) return;
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(
          `nats-server did not become ready on port ${port} within ${startTimeout} ms: ${stderr}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  };

  await launch();
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    dir,
    async kill() {
      const proc = child;
      proc?.kill('SIGKILL');
      await exited(proc);
    },
    async restart() {
      await exited(child);
      await launch();
    },
    async stop() {
      const proc = child;
      proc?.kill('SIGTERM');
      await exited(proc);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export { sparePort };
