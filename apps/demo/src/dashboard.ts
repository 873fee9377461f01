import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DemoEvent } from './events.js';
import { HttpError, messageOf } from './events.js';
import { closeServer, listen, readJson, sendError, sendJson, stringField } from './http.js';
import type { InstanceState } from './instance.js';

/** One instance as the process that runs the dashboard sees it. */
export interface InstanceSlot {
  index: number;
  label: string;
  /** `running` once its API answers; `failed` carries the reason in `detail`. */
  status: 'starting' | 'running' | 'stopping' | 'stopped' | 'killed' | 'failed';
  detail?: string;
  pid?: number;
  url?: string;
}

/** Starts and stops instances: in this process (embedded) or as child processes (distributed). */
export interface InstanceController {
  readonly mode: 'embedded' | 'distributed';
  slots(): InstanceSlot[];
  stop(index: number): Promise<void>;
  /** Distributed: SIGKILL, so the instance gets no chance to hand its tasks back. Embedded: same as stop. */
  kill(index: number): Promise<void>;
  start(index: number): Promise<void>;
}

export interface DashboardInfo {
  app: string;
  mode: 'embedded' | 'distributed';
  backends: Record<string, string>;
  database: string;
}

type TaskStatus = 'queued' | 'running' | 'retrying' | 'finished' | 'cancelled' | 'dead-lettered';

interface TaskView {
  id: string;
  label: string;
  status: TaskStatus;
  instance: string;
  attempt: number;
  progress: number;
  /** How many times an instance finished it: exactly 1 is the point of a queue. */
  finishes: number;
  /** Every instance that ran an attempt, in order. */
  ranOn: string[];
  error?: string;
  updatedAt: number;
}

interface LockView {
  key: string;
  token: number;
  instance: string;
  collection: string;
  field: string;
  acquiredAt: number;
  releasedAt?: number;
  removed?: boolean;
}

interface FeedItem {
  at: number;
  instance: string;
  kind: string;
  text: string;
}

interface InstanceView {
  index: number;
  label: string;
  status: string;
  detail?: string;
  pid?: number;
  url?: string;
  instanceId?: string;
  schemaVersion?: number;
  collections?: { name: string; fields: string[]; version: number }[];
  cache?: { hits: number; misses: number; store: string };
  running?: number;
  acceptingTasks?: boolean;
  lastSeenAt?: number;
}

interface Polled {
  bootId: string;
  lastSeq: number;
  state: InstanceState | undefined;
  lastSeenAt: number;
}

const PUBLIC_DIR = fileURLToPath(new URL('../public/', import.meta.url));
const STATIC: Record<string, string> = {
  '/': 'index.html',
  '/index.html': 'index.html',
  '/dashboard.js': 'dashboard.js',
  '/dashboard.css': 'dashboard.css',
};
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};
const FEED_KINDS = new Set(['sync-sent', 'sync-received', 'sync-gap', 'pubsub-sent', 'pubsub-received']);

/**
 * The dashboard: polls every instance's state, folds their events into one view of the cluster,
 * and streams that view to browsers over SSE. Actions are forwarded to an instance's API.
 */
export class Dashboard {
  readonly #controller: InstanceController;
  readonly #info: DashboardInfo;
  readonly #polled = new Map<number, Polled>();
  readonly #tasks = new Map<string, TaskView>();
  readonly #lockHistory: LockView[] = [];
  readonly #feed: FeedItem[] = [];
  readonly #actions: { at: number; text: string; ok: boolean }[] = [];
  readonly #clients = new Set<ServerResponse>();
  readonly #server: Server;
  #timer: NodeJS.Timeout | undefined;
  #polling = false;
  #lastSnapshot = '';
  #closed = false;

  constructor(controller: InstanceController, info: DashboardInfo) {
    this.#controller = controller;
    this.#info = info;
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((error) => sendError(res, error));
    });
  }

  async listen(port: number, host: string): Promise<number> {
    const bound = await listen(this.#server, port, host);
    this.#tick();
    return bound;
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    for (const client of this.#clients) client.end();
    await closeServer(this.#server);
  }

  /** Polls again 250 ms after the previous poll finished: never piles up on a slow instance. */
  #tick(): void {
    if (this.#closed) return;
    this.#timer = setTimeout(async () => {
      await this.poll();
      this.#tick();
    }, 250);
  }

  async poll(): Promise<void> {
    if (this.#polling) return;
    this.#polling = true;
    try {
      await Promise.all(this.#controller.slots().map((slot) => this.#pollOne(slot)));
      const snapshot = JSON.stringify(this.snapshot());
      if (snapshot !== this.#lastSnapshot) {
        this.#lastSnapshot = snapshot;
        for (const client of this.#clients) client.write(`data: ${snapshot}\n\n`);
      }
    } finally {
      this.#polling = false;
    }
  }

  async #pollOne(slot: InstanceSlot): Promise<void> {
    let polled = this.#polled.get(slot.index);
    if (!slot.url || (slot.status !== 'running' && slot.status !== 'stopping')) {
      if (polled) polled.state = undefined;
      return;
    }
    try {
      const since = polled?.lastSeq ?? 0;
      const response = await fetch(`${slot.url}/api/state?since=${since}`, {
        signal: AbortSignal.timeout(2_000),
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const state = (await response.json()) as InstanceState;
      if (!polled || polled.bootId !== state.bootId) {
        // A restarted instance numbers its events from 1 again; read them from the start.
        polled = { bootId: state.bootId, lastSeq: 0, state: undefined, lastSeenAt: 0 };
        this.#polled.set(slot.index, polled);
        if (since !== 0) return;
      }
      for (const event of state.events) if (event.seq > polled.lastSeq) this.#fold(state.instanceId, event);
      polled.lastSeq = Math.max(polled.lastSeq, state.lastSeq);
      polled.state = state;
      polled.lastSeenAt = Date.now();
      for (const task of state.running) {
        const view = this.#tasks.get(task.id);
        if (view && view.status === 'running' && view.attempt === task.attempt) view.progress = task.progress;
      }
      for (const letter of state.deadLetters) {
        const view = this.#task(letter.id, letter.label ?? '', letter.failedAt);
        if (view.status !== 'finished' && view.status !== 'cancelled') {
          view.status = 'dead-lettered';
          view.error = letter.error;
        }
      }
    } catch {
      if (polled) polled.state = undefined;
    }
  }

  #task(id: string, label: string, at: number): TaskView {
    let view = this.#tasks.get(id);
    if (!view) {
      view = {
        id,
        label,
        status: 'queued',
        instance: '',
        attempt: 0,
        progress: 0,
        finishes: 0,
        ranOn: [],
        updatedAt: at,
      };
      this.#tasks.set(id, view);
      // Bounded: the oldest tasks are forgotten (Map keeps insertion order).
      if (this.#tasks.size > 2_000) this.#tasks.delete(this.#tasks.keys().next().value!);
    }
    if (label && !view.label) view.label = label;
    return view;
  }

  /** Folds one instance event into the cluster view. */
  #fold(instance: string, event: DemoEvent): void {
    const data = event.data as Record<string, any>;
    const label = instance.split('.')[0] ?? instance;
    if (FEED_KINDS.has(event.kind)) {
      this.#feed.push({ at: event.at, instance: label, kind: event.kind, text: event.text });
      if (this.#feed.length > 200) this.#feed.splice(0, this.#feed.length - 200);
    }
    if (event.kind.startsWith('task-')) {
      const view = this.#task(String(data.id), String(data.label ?? ''), event.at);
      const attempt = Number(data.attempt ?? 0);
      if (event.kind === 'task-queued') return;
      // Events of an older attempt (a killed instance's last words) never overwrite a newer one.
      if (attempt < view.attempt) return;
      view.attempt = attempt;
      view.instance = label;
      view.updatedAt = event.at;
      if (event.kind === 'task-started') {
        view.status = 'running';
        view.progress = 0;
        view.ranOn.push(label);
      } else if (event.kind === 'task-finished') {
        view.status = 'finished';
        view.progress = 1;
        view.finishes += 1;
      } else if (event.kind === 'task-cancelled') {
        view.status = 'cancelled';
        view.progress = Number(data.progress ?? view.progress);
      } else if (event.kind === 'task-failed') {
        view.status = data.willRetry ? 'retrying' : 'dead-lettered';
        view.error = String(data.error ?? '');
      }
    }
    if (event.kind === 'lock-acquired') {
      this.#lockHistory.push({
        key: String(data.key),
        token: Number(data.token),
        instance: label,
        collection: String(data.collection),
        field: String(data.field),
        acquiredAt: event.at,
      });
    } else if (event.kind === 'lock-released') {
      const held = this.#lockHistory.find((l) => l.key === data.key && l.token === Number(data.token));
      if (held) {
        held.releasedAt = event.at;
        held.removed = Boolean(data.removed);
      }
    }
    if (this.#lockHistory.length > 50) this.#lockHistory.splice(0, this.#lockHistory.length - 50);
  }

  snapshot() {
    const instances: InstanceView[] = this.#controller.slots().map((slot) => {
      const polled = this.#polled.get(slot.index);
      const state = polled?.state;
      const view: InstanceView = {
        index: slot.index,
        label: slot.label,
        // Running by the controller but not answering: show it, it is what a user must see.
        status: slot.status === 'running' && !state ? 'unreachable' : slot.status,
        ...(slot.detail !== undefined && { detail: slot.detail }),
        ...(slot.pid !== undefined && { pid: slot.pid }),
        ...(slot.url !== undefined && { url: slot.url }),
      };
      if (state) {
        view.instanceId = state.instanceId;
        view.schemaVersion = state.schemaVersion;
        view.collections = state.collections.map((c) => ({
          name: c.name,
          fields: c.fields,
          version: c.version,
        }));
        view.cache = state.cache;
        view.running = state.running.length;
        view.acceptingTasks = state.acceptingTasks;
        view.lastSeenAt = polled?.lastSeenAt ?? 0;
      }
      return view;
    });
    const tasks = [...this.#tasks.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const counts = {
      queued: 0,
      running: 0,
      retrying: 0,
      finished: 0,
      cancelled: 0,
      deadLettered: 0,
      retried: 0,
    };
    for (const task of tasks) {
      if (task.status === 'dead-lettered') counts.deadLettered += 1;
      else counts[task.status] += 1;
      if (task.attempt > 1) counts.retried += 1;
    }
    const held = [];
    for (const polled of this.#polled.values()) {
      for (const lock of polled.state?.locks ?? []) {
        held.push({ ...lock, instance: polled.state!.instanceId.split('.')[0] });
      }
    }
    return {
      info: this.#info,
      instances,
      tasks: tasks.slice(-200),
      counts,
      locks: { held, history: this.#lockHistory },
      feed: this.#feed.slice(-100),
      actions: this.#actions.slice(-20),
    };
  }

  #log(text: string, ok: boolean): void {
    this.#actions.push({ at: Date.now(), text, ok });
    if (this.#actions.length > 100) this.#actions.splice(0, this.#actions.length - 100);
  }

  /** The instance to send an action to: the one asked for if it runs, else the first that runs. */
  #target(requested: unknown): InstanceSlot {
    const slots = this.#controller.slots().filter((s) => s.status === 'running' && s.url);
    const wanted = slots.find((s) => s.index === Number(requested));
    const slot = wanted ?? slots[0];
    if (!slot) throw new HttpError(503, 'no instance is running');
    return slot;
  }

  async #forward(slot: InstanceSlot, path: string, body: unknown): Promise<any> {
    const response = await fetch(`${slot.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(90_000),
    });
    const result = (await response.json().catch(() => ({}))) as Record<string, unknown>;
    if (!response.ok)
      throw new HttpError(response.status, `${slot.label}: ${String(result.error ?? response.statusText)}`);
    return result;
  }

  async #action(body: Record<string, unknown>, name: string): Promise<unknown> {
    switch (name) {
      case 'collection': {
        const slot = this.#target(body.instance);
        const result = await this.#forward(slot, '/api/collections', {
          name: stringField(body, 'name'),
          fields: body.fields,
        });
        this.#log(
          `${slot.label} created collection ${result.collection.name} (schema v${result.collection.version})`,
          true,
        );
        return result;
      }
      case 'tasks': {
        const slot = this.#target(body.instance);
        const result = await this.#forward(slot, '/api/tasks', { ...body, instance: undefined });
        this.#log(`${slot.label} queued ${result.ids.length} tasks`, true);
        return result;
      }
      case 'failing-tasks': {
        const slot = this.#target(body.instance);
        // One that fails its first attempt (retried, then finishes), one that always fails
        // (dead-lettered after its retries), one that exceeds its timeout every time.
        const flaky = await this.#forward(slot, '/api/tasks', {
          count: 1,
          steps: 6,
          stepMs: 200,
          maxRetries: 2,
          failUntilAttempt: 1,
          label: 'flaky: fails once',
        });
        const doomed = await this.#forward(slot, '/api/tasks', {
          count: 1,
          steps: 6,
          stepMs: 200,
          maxRetries: 1,
          failUntilAttempt: 99,
          label: 'doomed: always fails',
        });
        const slow = await this.#forward(slot, '/api/tasks', {
          count: 1,
          steps: 10,
          stepMs: 300,
          timeout: 1_000,
          maxRetries: 1,
          label: 'slow: times out',
        });
        const ids = [...flaky.ids, ...doomed.ids, ...slow.ids];
        this.#log(`${slot.label} queued failing tasks ${ids.join(', ')}`, true);
        return { ids };
      }
      case 'pause-tasks': {
        const slot = this.#target(body.instance);
        if (slot.index !== Number(body.instance))
          throw new HttpError(409, `node-${body.instance} is not running`);
        const result = await this.#forward(slot, '/api/tasks/pause', { paused: body.paused === true });
        this.#log(
          `${slot.label} ${result.accepting ? 'takes tasks again' : 'paused: idle() is false, it takes no task'}`,
          true,
        );
        return result;
      }
      case 'cancel': {
        const slot = this.#target(body.instance);
        const id = stringField(body, 'id');
        const result = await this.#forward(slot, '/api/tasks/cancel', { id });
        this.#log(`${slot.label} broadcast cancel ${id}`, true);
        return result;
      }
      case 'delete-field': {
        // Two instances try at once: the lock makes the second wait, then find the field gone.
        const running = this.#controller.slots().filter((s) => s.status === 'running' && s.url);
        const contenders = running.slice(0, Math.min(2, running.length));
        if (contenders.length === 0) throw new HttpError(503, 'no instance is running');
        const request = {
          collection: stringField(body, 'collection'),
          field: stringField(body, 'field'),
          holdMs: typeof body.holdMs === 'number' ? body.holdMs : 1_500,
        };
        const results = await Promise.all(
          contenders.map((slot) => this.#forward(slot, '/api/fields/delete', request)),
        );
        for (const r of results) {
          this.#log(
            `${r.instance.split('.')[0]} token ${r.token}: ${r.removed ? `removed ${r.field}` : `${r.field} already gone`} (waited ${r.waitedMs} ms)`,
            true,
          );
        }
        return { results };
      }
      default:
        throw new HttpError(404, `no action ${name}`);
    }
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = url.pathname;
    const file = STATIC[path];
    if (req.method === 'GET' && file) {
      const body = await readFile(PUBLIC_DIR + file);
      res.writeHead(200, {
        'content-type': TYPES[extname(file)] ?? 'text/plain',
        'cache-control': 'no-store',
      });
      res.end(body);
      return;
    }
    if (req.method === 'GET' && path === '/events') {
      res.writeHead(200, {
        'content-type': 'text/event-stream',
        'cache-control': 'no-store',
        connection: 'keep-alive',
      });
      res.write(`retry: 1000\ndata: ${JSON.stringify(this.snapshot())}\n\n`);
      this.#clients.add(res);
      req.on('close', () => this.#clients.delete(res));
      return;
    }
    if (req.method === 'GET' && path === '/api/state') {
      sendJson(res, 200, this.snapshot());
      return;
    }
    const action = /^\/api\/actions\/([a-z-]+)$/.exec(path);
    if (req.method === 'POST' && action) {
      const body = await readJson(req);
      try {
        sendJson(res, 200, await this.#action(body, action[1]!));
      } catch (error) {
        this.#log(`${action[1]} failed: ${messageOf(error)}`, false);
        throw error;
      }
      void this.poll();
      return;
    }
    const control = /^\/api\/instances\/(\d+)\/(stop|kill|start)$/.exec(path);
    if (req.method === 'POST' && control) {
      const index = Number(control[1]);
      const verb = control[2] as 'stop' | 'kill' | 'start';
      if (!this.#controller.slots().some((s) => s.index === index))
        throw new HttpError(404, `no instance ${index}`);
      try {
        // Read the instance's last events first: after a SIGKILL nothing more can be read from it.
        const slot = this.#controller.slots().find((s) => s.index === index);
        if (verb === 'kill' && slot) await this.#pollOne(slot);
        await this.#controller[verb](index);
        this.#log(`node-${index}: ${verb}${verb === 'start' ? 'ed' : verb === 'stop' ? 'ped' : 'ed'}`, true);
      } catch (error) {
        this.#log(`node-${index}: ${verb} failed: ${messageOf(error)}`, false);
        throw error;
      }
      sendJson(res, 200, { ok: true });
      void this.poll();
      return;
    }
    throw new HttpError(404, `no route ${req.method} ${path}`);
  }
}
