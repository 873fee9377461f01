import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type Cluster, createCluster, type Logger, type MemoryHub } from '@cluster/core';
import { createInstanceBackends, type InstanceBackends, type Topology } from './backends.js';
import type { DemoConfig } from './config.js';
import type { Database } from './db.js';
import { type DemoEvent, EventLog, HttpError, messageOf, sleep } from './events.js';
import { closeServer, listen, numberField, readJson, sendError, sendJson, stringField } from './http.js';
import { AsyncTaskPlugin, type RunningTask } from './plugins/async-tasks.js';
import { AuthPlugin } from './plugins/auth.js';
import { type CollectionSchema, DataSourcePlugin, type HeldLock } from './plugins/data-source.js';

export type InstanceStatus = 'starting' | 'running' | 'stopping' | 'stopped';

/** What one instance reports to the dashboard, read by polling `GET /api/state?since=<seq>`. */
export interface InstanceState {
  index: number;
  instanceId: string;
  bootId: string;
  pid: number;
  status: InstanceStatus;
  startedAt: number;
  schemaVersion: number;
  collections: CollectionSchema[];
  cache: { hits: number; misses: number; store: string };
  running: RunningTask[];
  /** False while the dashboard paused this instance's task consumer. */
  acceptingTasks: boolean;
  locks: HeldLock[];
  deadLetters: { id: string; attempts: number; error: string; failedAt: number; label?: string }[];
  lastSeq: number;
  events: DemoEvent[];
}

export interface InstanceOptions {
  index: number;
  config: DemoConfig;
  db: Database;
  /** Embedded mode: the memory hub every instance of the process shares. */
  hub: MemoryHub | undefined;
  logger: Logger;
}

/**
 * One instance of the demo app: a Cluster with the three plugins, and a small HTTP API the
 * dashboard drives. Can be stopped and started again (the dashboard's stop/restart buttons).
 */
export class DemoInstance {
  readonly index: number;
  readonly label: string;
  status: InstanceStatus = 'stopped';
  port = 0;
  #bootId = '';
  #startedAt = 0;
  #events = new EventLog();
  #readSeq = 0;
  #app: Cluster | undefined;
  #backends: InstanceBackends | undefined;
  readonly #topology: Topology = { exchanges: [], queues: [] };
  #server: Server | undefined;
  #auth: AuthPlugin | undefined;
  #dataSource: DataSourcePlugin | undefined;
  #tasks: AsyncTaskPlugin | undefined;
  readonly #options: InstanceOptions;

  constructor(options: InstanceOptions) {
    this.#options = options;
    this.index = options.index;
    this.label = `node-${options.index}`;
  }

  /** Every RabbitMQ exchange and queue this instance's adapters declared, over all its boots. */
  get topology(): Topology {
    return this.#topology;
  }

  get instanceId(): string {
    return this.#app?.instanceId ?? this.label;
  }

  /** Starts the app, then the HTTP API on `port` (0: any free port). Resolves the port. */
  async start(port: number): Promise<number> {
    if (this.status !== 'stopped') throw new Error(`${this.label} is ${this.status}`);
    this.status = 'starting';
    const { config, db, hub, logger } = this.#options;
    // A restarted instance is a new node: a fresh event log, and a boot id in its instance id so
    // the others' sync sequence tracking sees a new publisher rather than a rewound one.
    this.#bootId = randomBytes(3).toString('hex');
    this.#events = new EventLog();
    this.#readSeq = 0;
    const instanceLogger = logger.child({ instance: this.label });
    try {
      const backends = createInstanceBackends(config, { hub, logger: instanceLogger });
      this.#backends = backends;
      this.#auth = new AuthPlugin(db, this.#events);
      this.#dataSource = new DataSourcePlugin(db, this.#events);
      this.#tasks = new AsyncTaskPlugin(db, this.#events);
      this.#app = createCluster({
        name: config.appName,
        instanceId: `${this.label}.${this.#bootId}`,
        logger: instanceLogger,
        ...(hub && { hub }),
        ...backends.options,
        plugins: [this.#auth, this.#dataSource, this.#tasks],
      });
      await this.#app.start();
      this.#server = createServer((req, res) => {
        this.#handle(req, res).catch((error) => sendError(res, error));
      });
      this.port = await listen(this.#server, port, config.host);
      this.#startedAt = Date.now();
      this.status = 'running';
      this.#events.push('instance', `${this.label} started (pid ${process.pid}, port ${this.port})`);
      return this.port;
    } catch (error) {
      await this.#teardown().catch(() => {});
      throw new Error(`${this.label} could not start: ${messageOf(error)}`, { cause: error });
    }
  }

  /** Graceful stop: running tasks get the queue's close timeout, then go back for redelivery. */
  async stop(): Promise<void> {
    if (this.status !== 'running') return;
    this.status = 'stopping';
    await this.#teardown();
  }

  async #teardown(): Promise<void> {
    // The app stops first (running tasks drain) while the API still answers, so the dashboard
    // sees the tasks that finished during the drain; then it gets a moment to read the last events.
    await this.#app?.stop();
    this.#app = undefined;
    if (this.#backends) {
      const { exchanges, queues } = this.#backends.topology();
      for (const name of exchanges)
        if (!this.#topology.exchanges.includes(name)) this.#topology.exchanges.push(name);
      for (const name of queues) if (!this.#topology.queues.includes(name)) this.#topology.queues.push(name);
      await this.#backends.close().catch(() => {});
      this.#backends = undefined;
    }
    const server = this.#server;
    this.#server = undefined;
    if (server) {
      this.#events.push('instance', `${this.label} stopped`);
      const deadline = Date.now() + 1_500;
      while (this.#readSeq < this.#events.lastSeq && Date.now() < deadline) await sleep(50);
      await closeServer(server);
    }
    this.status = 'stopped';
  }

  /** Events after `since`; remembers how far a reader got, so stop() can wait for the last ones. */
  #readEvents(since: number) {
    const events = this.#events.since(since);
    this.#readSeq = Math.max(this.#readSeq, events.at(-1)?.seq ?? since);
    return events;
  }

  async state(since: number): Promise<InstanceState> {
    const dataSource = this.#dataSource;
    const tasks = this.#tasks;
    let deadLetters: InstanceState['deadLetters'] = [];
    if (tasks && this.status === 'running') {
      try {
        deadLetters = (await tasks.deadLetters()).map((letter) => ({
          id: letter.id,
          attempts: letter.attempts,
          error: letter.error,
          failedAt: letter.failedAt,
          ...(typeof (letter.payload as { label?: unknown })?.label === 'string' && {
            label: (letter.payload as { label: string }).label,
          }),
        }));
      } catch {
        // A backend hiccup must not blank the whole state; the next poll tries again.
      }
    }
    return {
      index: this.index,
      instanceId: this.instanceId,
      bootId: this.#bootId,
      pid: process.pid,
      status: this.status,
      startedAt: this.#startedAt,
      schemaVersion: dataSource?.schemaVersion ?? 0,
      collections: dataSource ? [...dataSource.collections.values()] : [],
      cache: {
        hits: this.#auth?.hits ?? 0,
        misses: this.#auth?.misses ?? 0,
        store: this.#auth?.cacheStore ?? '',
      },
      running: tasks ? [...tasks.running.values()].map((task) => ({ ...task })) : [],
      acceptingTasks: tasks?.accepting ?? true,
      locks: dataSource ? [...dataSource.heldLocks.values()] : [],
      deadLetters,
      lastSeq: this.#events.lastSeq,
      events: this.#readEvents(since),
    };
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = url.pathname;
    if (req.method === 'GET' && path === '/api/state') {
      const since = Number(url.searchParams.get('since') ?? 0);
      sendJson(res, 200, await this.state(Number.isFinite(since) ? since : 0));
      return;
    }
    if (this.status !== 'running' || !this.#auth || !this.#dataSource || !this.#tasks) {
      throw new HttpError(503, `${this.label} is ${this.status}`);
    }
    // Every action checks the token policy first: the auth plugin's cached read.
    const policy = await this.#auth.tokenPolicy();
    const body = req.method === 'POST' ? await readJson(req) : {};
    const instance = this.instanceId;
    if (req.method === 'GET' && path === '/api/policy') {
      sendJson(res, 200, { instance, policy });
    } else if (req.method === 'POST' && path === '/api/collections') {
      const name = stringField(body, 'name');
      const fields = Array.isArray(body.fields)
        ? body.fields.map(String)
        : ['title', 'body', 'author', 'tags'];
      sendJson(res, 201, { instance, collection: await this.#dataSource.createCollection(name, fields) });
    } else if (req.method === 'POST' && path === '/api/fields/delete') {
      const result = await this.#dataSource.deleteField(
        stringField(body, 'collection'),
        stringField(body, 'field'),
        numberField(body, 'holdMs', 1_500, 0, 20_000),
      );
      sendJson(res, 200, result);
    } else if (req.method === 'POST' && path === '/api/tasks') {
      const ids = await this.#tasks.enqueue({
        count: numberField(body, 'count', 20, 1, 200),
        steps: numberField(body, 'steps', 10, 1, 100),
        stepMs: numberField(body, 'stepMs', 300, 1, 10_000),
        timeout: numberField(body, 'timeout', 30_000, 100, 600_000),
        maxRetries: numberField(body, 'maxRetries', 2, 0, 10),
        failUntilAttempt: numberField(body, 'failUntilAttempt', 0, 0, 100),
        ...(typeof body.label === 'string' && { label: body.label }),
      });
      sendJson(res, 202, { instance, ids });
    } else if (req.method === 'POST' && path === '/api/tasks/pause') {
      this.#tasks.accepting = body.paused !== true;
      // The queue polls idle() every 250 ms (core's idleInterval): answer once it has seen the change.
      await sleep(600);
      sendJson(res, 200, { instance, accepting: this.#tasks.accepting });
    } else if (req.method === 'POST' && path === '/api/tasks/cancel') {
      const id = stringField(body, 'id');
      await this.#tasks.cancel(id);
      sendJson(res, 202, { instance, id });
    } else {
      throw new HttpError(404, `no route ${req.method} ${path}`);
    }
  }
}
