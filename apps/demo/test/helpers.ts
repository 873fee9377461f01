import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { uniqueName, waitFor } from '@cluster/testkit';
import { type BrowserContext, chromium, type Page } from 'playwright-core';

export const DEMO_DIR = fileURLToPath(new URL('..', import.meta.url));
export const MAIN = join(DEMO_DIR, 'dist', 'main.js');
export const RESULTS_DIR = join(DEMO_DIR, 'test-results');
export const CHROMIUM = '/usr/bin/chromium';

export interface RunningDemo {
  url: string;
  app: string;
  proc: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

/** A unique app name (and prefix) per run, so parallel runs on shared servers never meet. */
export function uniqueApp(): string {
  return uniqueName('demo').replace(/[^A-Za-z0-9_-]/g, '-');
}

/** Starts `node dist/main.js` as a user would, and resolves once the dashboard listens. */
export async function startDemo(args: string[], env: Record<string, string> = {}): Promise<RunningDemo> {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run pnpm --filter @cluster/demo build first`);
  const app = env.DEMO_APP ?? uniqueApp();
  const proc = spawn(process.execPath, [MAIN, '--port', '0', ...args], {
    cwd: DEMO_DIR,
    env: { ...process.env, DEMO_APP: app, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  proc.stdout!.on('data', (chunk) => (output += chunk));
  proc.stderr!.on('data', (chunk) => (output += chunk));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(timer);
  };
  try {
    const url = await waitFor(
      () => {
        if (proc.exitCode !== null) throw new Error(`the demo exited (${proc.exitCode}): ${output}`);
        return /dashboard listening on (http:\/\/\S+)/.exec(output)?.[1];
      },
      { timeout: 60_000, interval: 50, message: 'the demo dashboard to listen' },
    );
    return { url, app, proc, output: () => output, stop };
  } catch (error) {
    await stop();
    throw new Error(`${(error as Error).message}\n--- demo output ---\n${output}`);
  }
}

/** Waits for Debian's Chromium (apt may still be installing it when the tests start). */
export async function requireChromium(): Promise<void> {
  await waitFor(() => existsSync(CHROMIUM), {
    timeout: 80_000,
    interval: 1_000,
    message: `${CHROMIUM} to exist (apt-get install chromium)`,
  });
}

export interface Browser {
  context: BrowserContext;
  page: Page;
  close(): Promise<void>;
}

export async function openBrowser(): Promise<Browser> {
  await requireChromium();
  const userDataDir = mkdtempSync(join(tmpdir(), 'demo-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 1400 },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-quic',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    context,
    page,
    close: async () => {
      await context.close().catch(() => {});
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const path = join(RESULTS_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

export interface TaskRow {
  id: string;
  label: string;
  status: string;
  instance: string;
  attempt: number;
  finishes: number;
  progress: number;
  ranOn: string[];
}

/** The task table as the page shows it. */
export function taskRows(page: Page): Promise<TaskRow[]> {
  return page.$$eval('#tasks tbody tr', (rows) =>
    rows.map((row) => {
      const d = (row as any).dataset;
      return {
        id: d.taskId ?? '',
        label: d.label ?? '',
        status: d.status ?? '',
        instance: d.instance ?? '',
        attempt: Number(d.attempt),
        finishes: Number(d.finishes),
        progress: Number(d.progress),
        ranOn: (d.ranOn ?? '').split(',').filter(Boolean),
      };
    }),
  );
}

export interface LockRow {
  token: number;
  instance: string;
  acquiredAt: number;
  releasedAt: number | undefined;
  removed: string;
}

export function lockRows(page: Page): Promise<LockRow[]> {
  return page.$$eval('#lock-history tbody tr', (rows) =>
    rows.map((row) => {
      const d = (row as any).dataset;
      return {
        token: Number(d.lockToken),
        instance: d.instance ?? '',
        acquiredAt: Number(d.acquiredAt),
        releasedAt: d.releasedAt ? Number(d.releasedAt) : undefined,
        removed: d.removed ?? '',
      };
    }),
  );
}

/** Collections each instance card shows, by instance index. */
export function collectionsByInstance(
  page: Page,
): Promise<Record<string, { status: string; collections: string[]; schemaVersion: string }>> {
  return page.$$eval('[data-instance]', (cards) =>
    Object.fromEntries(
      cards
        .filter((card: any) => card.classList.contains('card'))
        .map((card) => {
          const d = (card as any).dataset;
          const list = (card as any).querySelector('.collections')?.dataset.collections ?? '';
          return [
            d.instance ?? '',
            {
              status: d.status ?? '',
              collections: list.split(',').filter(Boolean),
              schemaVersion: d.schemaVersion ?? '',
            },
          ];
        }),
    ),
  );
}

/** Polls `check` against the page until it returns a truthy value (deadline, not a sleep). */
export function until<T>(
  check: () => Promise<T> | T,
  message: string,
  timeout = 60_000,
): Promise<NonNullable<T>> {
  return waitFor(check, { timeout, interval: 100, message });
}

export { deleteRedisKeys } from '../src/cleanup.js';

/** Names of the NATS streams (KV buckets included) whose name contains `marker`. */
export async function natsStreamsWith(marker: string): Promise<string[]> {
  const { NatsConnections } = await import('@cluster/adapter-nats');
  const connections = new NatsConnections({ servers: process.env.NATS_URL || 'nats://127.0.0.1:4222' });
  try {
    const jsm = await connections.jetstreamManager();
    const names: string[] = [];
    for await (const name of jsm.streams.names()) if (name.includes(marker)) names.push(name);
    return names;
  } finally {
    await connections.close();
  }
}
