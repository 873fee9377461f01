import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createMemoryHub, type Logger } from '@cluster/core';
import type { Topology } from './backends.js';
import { cleanupServers } from './cleanup.js';
import { type DemoConfig, PARTS, redactUrl } from './config.js';
import { Dashboard, type DashboardInfo, type InstanceController, type InstanceSlot } from './dashboard.js';
import { type Database, deleteAppRows, migrate, openDatabase } from './db.js';
import { messageOf } from './events.js';
import { DemoInstance } from './instance.js';
import { redact } from './logger.js';

/** Port of instance `index` (1-based): after the dashboard's, or any free one when the base is 0. */
function instancePort(config: DemoConfig, index: number): number {
  return config.port === 0 ? 0 : config.port + index;
}

function describeBackends(config: DemoConfig): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of PARTS) {
    const kind = config.backends[part];
    const url =
      kind === 'redis'
        ? config.urls.redis
        : kind === 'rabbitmq'
          ? config.urls.amqp
          : kind === 'nats'
            ? config.urls.nats
            : '';
    out[part] =
      kind === 'memory'
        ? part === 'cache'
          ? 'memory (per instance)'
          : 'memory (shared hub)'
        : `${kind} ${redactUrl(url)}`;
  }
  return out;
}

interface Running {
  dashboardUrl: string;
  stop(): Promise<void>;
}

function printBanner(
  config: DemoConfig,
  dashboardUrl: string,
  slots: InstanceSlot[],
  database: string,
): void {
  const lines = [
    `@cluster demo: ${config.instances} instances of app "${config.appName}", ${config.mode} mode`,
    ...Object.entries(describeBackends(config)).map(([part, what]) => `  ${part.padEnd(7)} ${what}`),
    `  db      ${database}`,
    ...slots.map(
      (slot) => `  ${slot.label}  ${slot.url ?? '(not running)'}${slot.pid ? `  pid ${slot.pid}` : ''}`,
    ),
    `dashboard listening on ${dashboardUrl}`,
    'press Ctrl+C to stop',
  ];
  console.log(lines.join('\n'));
}

/** Embedded mode: N instances in this process over one memory hub, one shared database connection. */
export async function runEmbedded(config: DemoConfig, logger: Logger): Promise<Running> {
  const db = openDatabase({ databaseUrl: config.databaseUrl, sqliteFile: ':memory:' });
  await migrate(db, config.appName);
  const hub = createMemoryHub();
  const instances: DemoInstance[] = [];
  const failures = new Map<number, string>();
  for (let index = 1; index <= config.instances; index++) {
    instances.push(new DemoInstance({ index, config, db, hub, logger }));
  }
  const ports = new Map<number, number>();
  const controller: InstanceController = {
    mode: 'embedded',
    slots: () =>
      instances.map((instance) => ({
        index: instance.index,
        label: instance.label,
        status: failures.has(instance.index) ? 'failed' : instance.status,
        ...(failures.has(instance.index) && { detail: failures.get(instance.index)! }),
        pid: process.pid,
        ...((instance.status === 'running' || instance.status === 'stopping') && {
          url: `http://${config.host}:${instance.port}`,
        }),
      })),
    stop: async (index) => instances[index - 1]!.stop(),
    kill: async (index) => instances[index - 1]!.stop(),
    start: async (index) => {
      failures.delete(index);
      try {
        await instances[index - 1]!.start(ports.get(index) ?? instancePort(config, index));
      } catch (error) {
        failures.set(index, redact(messageOf(error)));
        throw error;
      }
    },
  };
  let dashboard: Dashboard | undefined;
  const stop = async () => {
    await dashboard?.close();
    for (const instance of [...instances].reverse()) await instance.stop();
    if (config.cleanupOnExit) {
      await deleteAppRows(db, config.appName).catch(() => {});
      const topology: Topology = { exchanges: [], queues: [] };
      for (const instance of instances) mergeTopology(topology, instance.topology);
      for (const line of await cleanupServers(config, topology)) console.log(line);
    }
    await db.close();
  };
  try {
    for (const instance of instances) {
      ports.set(instance.index, await instance.start(instancePort(config, instance.index)));
    }
    const info: DashboardInfo = {
      app: config.appName,
      mode: 'embedded',
      backends: describeBackends(config),
      database: db.description,
    };
    dashboard = new Dashboard(controller, info);
    const port = await dashboard.listen(config.port, config.host);
    const dashboardUrl = `http://${config.host}:${port}`;
    printBanner(config, dashboardUrl, controller.slots(), db.description);
    return { dashboardUrl, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

interface Child {
  slot: InstanceSlot;
  process: ChildProcess | undefined;
  port: number;
}

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

/**
 * Distributed mode: one child process per instance, all on the chosen servers, sharing one SQLite
 * file in a temporary directory (or PostgreSQL). The dashboard runs in this process.
 */
export async function runDistributed(config: DemoConfig): Promise<Running> {
  const dir = config.databaseUrl ? undefined : mkdtempSync(join(tmpdir(), 'cluster-demo-'));
  const sqliteFile = dir ? join(dir, 'demo.sqlite') : '';
  // Tables are created here, once, so that instances never race to create them.
  const db: Database = openDatabase({ databaseUrl: config.databaseUrl, sqliteFile });
  await migrate(db, config.appName);
  const description = db.description;
  await db.close();

  const children: Child[] = [];
  // What the children declared on RabbitMQ, reported as they stop, for DEMO_CLEANUP.
  const topology: Topology = { exchanges: [], queues: [] };
  for (let index = 1; index <= config.instances; index++) {
    children.push({
      slot: { index, label: `node-${index}`, status: 'stopped' },
      process: undefined,
      port: instancePort(config, index),
    });
  }

  const spawnChild = (child: Child): Promise<void> =>
    new Promise((resolve, reject) => {
      const { slot } = child;
      slot.status = 'starting';
      delete slot.detail;
      delete slot.url;
      const proc = fork(MAIN, process.argv.slice(2), {
        env: {
          ...process.env,
          DEMO_ROLE: 'instance',
          DEMO_INDEX: String(slot.index),
          DEMO_INSTANCE_PORT: String(child.port),
          DEMO_SQLITE_FILE: sqliteFile,
        },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      child.process = proc;
      if (proc.pid !== undefined) slot.pid = proc.pid;
      let settled = false;
      proc.on('message', (message: { type?: string; port?: number; message?: string }) => {
        if (message.type === 'ready' && typeof message.port === 'number') {
          child.port = message.port;
          slot.url = `http://${config.host}:${message.port}`;
          slot.status = 'running';
          settled = true;
          resolve();
        } else if (message.type === 'topology') {
          mergeTopology(topology, message as unknown as Topology);
        } else if (message.type === 'fatal') {
          slot.status = 'failed';
          slot.detail = String(message.message ?? 'failed to start');
        }
      });
      proc.on('exit', (code, signal) => {
        if (child.process === proc) child.process = undefined;
        delete slot.url;
        if (slot.status !== 'failed') slot.status = signal === 'SIGKILL' ? 'killed' : 'stopped';
        if (!settled) {
          settled = true;
          reject(new Error(slot.detail ?? `${slot.label} exited (${signal ?? code}) before it was ready`));
        }
      });
    });

  const stopChild = async (child: Child, signal: NodeJS.Signals, graceMs = 10_000): Promise<void> => {
    const proc = child.process;
    if (!proc || proc.exitCode !== null) return;
    if (signal === 'SIGTERM') child.slot.status = 'stopping';
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };

  const controller: InstanceController = {
    mode: 'distributed',
    slots: () => children.map((child) => ({ ...child.slot })),
    stop: (index) => stopChild(children[index - 1]!, 'SIGTERM'),
    kill: (index) => stopChild(children[index - 1]!, 'SIGKILL'),
    start: async (index) => {
      const child = children[index - 1]!;
      if (child.process) throw new Error(`${child.slot.label} is already running`);
      await spawnChild(child);
    },
  };

  let dashboard: Dashboard | undefined;
  const stop = async () => {
    await dashboard?.close();
    await Promise.all(children.map((child) => stopChild(child, 'SIGTERM')));
    if (config.cleanupOnExit) {
      if (config.databaseUrl) {
        const cleanup = openDatabase({ databaseUrl: config.databaseUrl, sqliteFile });
        await deleteAppRows(cleanup, config.appName).catch(() => {});
        await cleanup.close();
      }
      for (const line of await cleanupServers(config, topology)) console.log(line);
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  };
  try {
    // One after the other: on a small machine, parallel starts of N Node processes only compete.
    for (const child of children) await spawnChild(child);
    dashboard = new Dashboard(controller, {
      app: config.appName,
      mode: 'distributed',
      backends: describeBackends(config),
      database: description,
    });
    const port = await dashboard.listen(config.port, config.host);
    const dashboardUrl = `http://${config.host}:${port}`;
    printBanner(config, dashboardUrl, controller.slots(), description);
    return { dashboardUrl, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** The child side of distributed mode: one instance, reporting to the launcher over IPC. */
export async function runInstanceProcess(config: DemoConfig, logger: Logger): Promise<void> {
  const index = Number(process.env.DEMO_INDEX);
  const port = Number(process.env.DEMO_INSTANCE_PORT ?? 0);
  const db = openDatabase({
    databaseUrl: config.databaseUrl,
    sqliteFile: process.env.DEMO_SQLITE_FILE || ':memory:',
  });
  const instance = new DemoInstance({ index, config, db, hub: undefined, logger });
  let stopping = false;
  const shutdown = () => {
    if (stopping) return;
    stopping = true;
    void (async () => {
      await instance.stop().catch(() => {});
      await db.close().catch(() => {});
      if (process.connected) {
        await new Promise<void>((resolve) =>
          process.send!({ type: 'topology', ...instance.topology }, () => resolve()),
        );
      }
      process.exit(0);
    })();
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', () => {}); // Ctrl+C reaches the whole group; the launcher decides.
  process.on('disconnect', shutdown); // the launcher died: do not linger
  try {
    const bound = await instance.start(port);
    process.send?.({ type: 'ready', port: bound, instanceId: instance.instanceId });
  } catch (error) {
    process.send?.({ type: 'fatal', message: redact(messageOf(error)) });
    await db.close().catch(() => {});
    process.exitCode = 1;
    process.disconnect?.();
  }
}

function mergeTopology(into: Topology, from: Partial<Topology>): void {
  for (const name of from.exchanges ?? []) if (!into.exchanges.includes(name)) into.exchanges.push(name);
  for (const name of from.queues ?? []) if (!into.queues.includes(name)) into.queues.push(name);
}
