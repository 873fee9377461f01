import { NATS, RABBITMQ, REDIS, requireServer, type ServerSpec, serverUrl } from '@cluster/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Browser,
  deleteRedisKeys,
  natsStreamsWith,
  openBrowser,
  type RunningDemo,
  screenshot,
  startDemo,
  taskRows,
  uniqueApp,
  until,
} from './helpers.js';
import {
  createCollectionOnInstanceOne,
  deleteFieldRace,
  enqueueBatch,
  waitAllRunning,
  waitBatchDone,
} from './scenario.js';

interface Setup {
  name: string;
  slug: string;
  args: string[];
  servers: ServerSpec[];
  /** Adapter packages and the factories the demo needs from them. */
  adapters: [pkg: string, factories: string[]][];
  /** Checks that the demo deleted what it created on the servers (it runs with DEMO_CLEANUP=1). */
  checkCleanedUp(keyPrefix: string, output: string): Promise<void>;
}

const SETUPS: Setup[] = [
  {
    name: 'Redis',
    slug: 'redis',
    args: ['--cache', 'redis', '--pubsub', 'redis', '--queue', 'redis', '--lock', 'redis'],
    servers: [REDIS],
    adapters: [],
    checkCleanedUp: async (keyPrefix) => {
      // Anything left here is a leak (deleted anyway, so the server stays clean).
      expect(await deleteRedisKeys(serverUrl(REDIS), keyPrefix)).toBe(0);
    },
  },
  {
    name: 'NATS + RabbitMQ',
    slug: 'nats-rabbitmq',
    args: ['--cache', 'nats', '--pubsub', 'nats', '--queue', 'rabbitmq', '--lock', 'nats'],
    servers: [NATS, RABBITMQ],
    adapters: [
      ['@cluster/adapter-nats', ['createNatsPubSub', 'createNatsLock', 'createNatsCacheStore']],
      ['@cluster/adapter-rabbitmq', ['createRabbitQueue']],
    ],
    checkCleanedUp: async (keyPrefix, output) => {
      expect(output).toMatch(/rabbitmq queues and exchanges: deleted [1-9]/);
      expect(output).toMatch(/nats streams: deleted [1-9]/);
      expect(await natsStreamsWith(keyPrefix)).toEqual([]);
    },
  },
];

/** Why a setup cannot run here, or undefined when it can. */
async function unavailable(setup: Setup): Promise<string | undefined> {
  for (const [pkg, factories] of setup.adapters) {
    let mod: Record<string, unknown>;
    try {
      mod = (await import(pkg)) as Record<string, unknown>;
    } catch {
      return `${pkg} is not built`;
    }
    const missing = factories.filter((name) => typeof mod[name] !== 'function');
    if (missing.length > 0) return `${pkg} does not export ${missing.join(', ')} yet`;
  }
  for (const server of setup.servers)
    if (!(await requireServer(server))) return `${server.name} is not reachable`;
  return undefined;
}

for (const setup of SETUPS) {
  const why = await unavailable(setup);
  if (why) console.warn(`skipping distributed mode over ${setup.name}: ${why}`);

  describe.skipIf(why !== undefined)(`distributed mode over ${setup.name}: one process per instance`, () => {
    const keyPrefix = uniqueApp();
    let demo: RunningDemo;
    let browser: Browser;

    beforeAll(async () => {
      demo = await startDemo(['--distributed', ...setup.args], {
        DEMO_KEY_PREFIX: keyPrefix,
        // A killed instance's task moves on after this long without a heartbeat.
        DEMO_VISIBILITY_MS: '2000',
        // The demo deletes what it created on the servers (under this run's prefix) when it exits.
        DEMO_CLEANUP: '1',
      });
      browser = await openBrowser();
      await browser.page.goto(demo.url);
      await waitAllRunning(browser.page, 3);
    });

    afterAll(async () => {
      await browser?.close();
      await demo?.stop();
      if (demo) {
        expect(demo.output()).not.toMatch(/cleanup failed/);
        await setup.checkCleanedUp(keyPrefix, demo.output());
      }
    });

    it('a collection created on instance 1 appears on every instance', async () => {
      await createCollectionOnInstanceOne(browser.page, 'orders', 3);
    });

    it('an instance killed mid-task: its task completes elsewhere, every task runs to the end once', async () => {
      const { page } = browser;
      const ids = await enqueueBatch(page);
      // Kill node-2 while it is visibly in the middle of a task.
      await until(async () => {
        const rows = await taskRows(page);
        return rows.some(
          (t) => ids.includes(t.id) && t.status === 'running' && t.instance === 'node-2' && t.progress > 0,
        );
      }, 'node-2 running a task');
      await page.click('[data-control="kill"][data-index="2"]');
      await until(
        async () => (await page.getAttribute('[data-instance="2"]', 'data-status')) === 'killed',
        'node-2 killed',
      );
      const rows = await waitBatchDone(page, ids, 120_000);
      for (const row of rows) {
        expect(row, `task ${row.id}`).toMatchObject({ status: 'finished', finishes: 1 });
      }
      const moved = rows.filter((t) => t.ranOn[0] === 'node-2' && t.ranOn.length > 1);
      expect(moved.length, 'tasks node-2 was running when it died').toBeGreaterThan(0);
      for (const task of moved) expect(task.ranOn.at(-1)).not.toBe('node-2');
    });

    it('serialises two deletions of one field across processes, tokens increasing', async () => {
      await deleteFieldRace(browser.page, 'orders', 'tags');
    });

    it('restarts the killed instance, which reloads the schema', async () => {
      const { page } = browser;
      await page.click('[data-control="start"][data-index="2"]');
      await waitAllRunning(page, 3);
      await until(
        async () =>
          (await page.getAttribute('[data-instance="2"] .collections', 'data-collections'))?.includes(
            'orders',
          ),
        'node-2 reloaded its schema',
      );
      await screenshot(page, `dashboard-distributed-${setup.slug}`);
    });
  });
}
