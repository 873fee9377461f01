import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Browser,
  openBrowser,
  type RunningDemo,
  screenshot,
  startDemo,
  taskRows,
  until,
} from './helpers.js';
import {
  cancelRunningTask,
  createCollectionOnInstanceOne,
  deleteFieldRace,
  enqueueBatch,
  waitAllRunning,
  waitBatchDone,
} from './scenario.js';

describe('embedded mode: 3 instances in one process over the memory hub', () => {
  let demo: RunningDemo;
  let browser: Browser;

  beforeAll(async () => {
    demo = await startDemo([]);
    browser = await openBrowser();
    await browser.page.goto(demo.url);
    await waitAllRunning(browser.page, 3);
  });

  afterAll(async () => {
    await browser?.close();
    await demo?.stop();
  });

  it('a collection created on instance 1 appears on every instance', async () => {
    await createCollectionOnInstanceOne(browser.page, 'orders', 3);
  });

  it('runs each of 20 tasks exactly once across the instances, and a cancelled one stops', async () => {
    const { page } = browser;
    // A paused instance (its idle() returns false) takes none of them.
    await page.click('[data-pause="3"]');
    await page.waitForSelector('#actions :text("node-3 paused")', { timeout: 30_000 });
    const ids = await enqueueBatch(page);
    const cancelled = await cancelRunningTask(page, ids);
    const rows = await waitBatchDone(page, ids);
    for (const row of rows) {
      if (row.id === cancelled) continue;
      expect(row, `task ${row.id}`).toMatchObject({ status: 'finished', finishes: 1, attempt: 1 });
      expect(row.ranOn, `task ${row.id}`).toHaveLength(1);
    }
    const victim = rows.find((r) => r.id === cancelled)!;
    // Cancelled mid-run (the usual case) or, on a slow machine, just after it finished: never twice.
    expect(victim.finishes).toBeLessThanOrEqual(1);
    expect(victim.ranOn).toHaveLength(1);
    const instancesUsed = new Set(rows.flatMap((r) => r.ranOn));
    expect([...instancesUsed].sort()).toEqual(['node-1', 'node-2']);
    await page.click('[data-pause="3"]');
    await page.waitForSelector('[data-instance="3"][data-accepting="true"]', { timeout: 30_000 });
  });

  it('serialises two deletions of one field with the lock, tokens increasing', async () => {
    await deleteFieldRace(browser.page, 'orders', 'tags');
  });

  it('retries a failing task, dead-letters one that always fails and one that times out', async () => {
    const { page } = browser;
    await page.click('#enqueue-failing');
    const rows = await until(async () => {
      const all = await taskRows(page);
      const byLabel = (text: string) => all.find((t) => t.label.startsWith(text));
      const flaky = byLabel('flaky');
      const doomed = byLabel('doomed');
      const slow = byLabel('slow');
      const settled =
        flaky?.status === 'finished' &&
        doomed?.status === 'dead-lettered' &&
        slow?.status === 'dead-lettered';
      return settled ? { flaky, doomed, slow } : undefined;
    }, 'the failing tasks to settle');
    expect(rows.flaky).toMatchObject({ attempt: 2, finishes: 1 });
    expect(rows.doomed).toMatchObject({ attempt: 2, finishes: 0 });
    expect(rows.slow).toMatchObject({ attempt: 2, finishes: 0 });
    expect(await page.textContent('[data-count="dead-lettered"]')).toBe('2');
  });

  it('stops and restarts an instance, which reloads the schema', async () => {
    const { page } = browser;
    await page.click('[data-control="stop"][data-index="3"]');
    await until(
      async () => (await page.getAttribute('[data-instance="3"]', 'data-status')) === 'stopped',
      'node-3 stopped',
    );
    await page.click('[data-control="start"][data-index="3"]');
    await waitAllRunning(page, 3);
    await until(
      async () =>
        (await page.getAttribute('[data-instance="3"] .collections', 'data-collections'))?.includes('orders'),
      'node-3 reloaded its schema',
    );
    await screenshot(page, 'dashboard-embedded');
    expect((await taskRows(page)).length).toBeGreaterThanOrEqual(20);
  });
});
