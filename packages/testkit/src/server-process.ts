/**
 * A private server process (redis-server, nats-server, ...) on a spare loopback port with its own
 * temporary directory, for tests that kill and restart a server. Never touches a shared server.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { portAccepts, sparePort } from './ports.js';

export interface ServerProcessOptions {
  /** The binary, e.g. `redis-server`. */
  command: string;
  /** Its arguments for this port and data directory. */
  args(port: number, dir: string): readonly string[];
  /**
   * Extra readiness check once the port accepts connections, given the server's recent stderr
   * (e.g. JetStream logs "Server is ready" a little after the port opens). Default: the port alone.
   */
  ready?(stderr: string): boolean;
  /** How long a start may take. Default 10,000 ms. */
  startTimeout?: number;
}

export interface ServerProcess {
  port: number;
  /** The temporary data directory, kept across restarts. */
  dir: string;
  /** SIGKILL (no shutdown save); resolves when the process has exited. */
  kill(): Promise<void>;
  /** Starts the server again on the same port and directory (killing it first if it still runs). */
  restart(): Promise<void>;
  /** Graceful stop (SIGTERM), then removes the directory. */
  stop(): Promise<void>;
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export async function startServerProcess(options: ServerProcessOptions): Promise<ServerProcess> {
  const dir = await mkdtemp(join(tmpdir(), `cluster-${options.command}-`));
  const port = await sparePort();
  const startTimeout = options.startTimeout ?? 10_000;
  const args = options.args(port, dir);
  let child: ChildProcess | undefined;
  let stderr = '';

  const launch = async (): Promise<void> => {
    stderr = '';
    const proc = spawn(options.command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    child = proc;
    proc.stderr?.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-4_000);
    });
    const failed = new Promise<never>((_, reject) => {
      proc.once('error', reject);
      proc.once('exit', (code, sig) =>
        reject(new Error(`${options.command} exited during start (code ${code}, signal ${sig}): ${stderr}`)),
      );
    });
    failed.catch(() => {});
    const deadline = Date.now() + startTimeout;
    for (;;) {
      const open = await Promise.race([portAccepts(port), failed]);
      if (open && (options.ready?.(stderr) ?? true)) return;
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(
          `${options.command} did not become ready on port ${port} within ${startTimeout} ms: ${stderr}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };

  const signalAndWait = async (signal: NodeJS.Signals): Promise<void> => {
    const proc = child;
    child = undefined;
    if (!proc) return;
    const done = exited(proc);
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    await done;
  };

  await launch();
  return {
    port,
    dir,
    kill: () => signalAndWait('SIGKILL'),
    async restart() {
      await signalAndWait('SIGKILL');
      await launch();
    },
    async stop() {
      await signalAndWait('SIGTERM');
      await rm(dir, { recursive: true, force: true });
    },
  };
}
