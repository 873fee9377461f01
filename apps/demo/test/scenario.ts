import type { Page } from 'playwright-core';
import { expect } from 'vitest';
import { collectionsByInstance, lockRows, type TaskRow, taskRows, until } from './helpers.js';

/** Every instance card shows `running`. */
export async function waitAllRunning(page: Page, count: number): Promise<void> {
  await until(async () => {
    const cards = await collectionsByInstance(page);
    const running = Object.values(cards).filter((c) => c.status === 'running');
    return running.length === count;
  }, `${count} instances running`);
}

/** Creates `name` through instance 1 and waits until every instance's schema holds it. */
export async function createCollectionOnInstanceOne(
  page: Page,
  name: string,
  instances: number,
): Promise<void> {
  await page.selectOption('#target', '1');
  await page.fill('#collection-name', name);
  await page.click('#create-collection');
  const cards = await until(async () => {
    const all = await collectionsByInstance(page);
    const values = Object.values(all);
    const ok = values.length === instances && values.every((c) => c.collections.includes(name));
    return ok ? all : undefined;
  }, `collection ${name} on every instance`);
  // Every instance reloaded from the same committed row, so they agree on the schema version.
  const versions = new Set(Object.values(cards).map((c) => c.schemaVersion));
  await until(async () => {
    const all = await collectionsByInstance(page);
    return new Set(Object.values(all).map((c) => c.schemaVersion)).size === 1;
  }, 'one schema version on every instance');
  expect(versions.size).toBeGreaterThanOrEqual(1);
}

/** Clicks "Enqueue 20 tasks" and resolves the ids of the new batch. */
export async function enqueueBatch(page: Page): Promise<string[]> {
  const before = new Set((await taskRows(page)).map((t) => t.id));
  await page.click('#enqueue-tasks');
  return until(async () => {
    const fresh = (await taskRows(page)).filter((t) => !before.has(t.id));
    return fresh.length === 20 ? fresh.map((t) => t.id) : undefined;
  }, '20 new task rows');
}

/** Clicks Cancel on a task that is running, and waits until the page shows it cancelled. */
export async function cancelRunningTask(page: Page, ids: readonly string[]): Promise<string> {
  const victim = await until(async () => {
    const rows = await taskRows(page);
    return rows.find((t) => ids.includes(t.id) && t.status === 'running')?.id;
  }, 'a running task to cancel');
  await page.click(`[data-cancel="${victim}"]`);
  await until(async () => {
    const row = (await taskRows(page)).find((t) => t.id === victim);
    return row?.status === 'cancelled' || row?.status === 'finished' ? row : undefined;
  }, `task ${victim} to stop`);
  return victim;
}

/** Waits until every task of `ids` reached a final state, and returns their rows. */
export async function waitBatchDone(
  page: Page,
  ids: readonly string[],
  timeout = 90_000,
): Promise<TaskRow[]> {
  return until(
    async () => {
      const rows = (await taskRows(page)).filter((t) => ids.includes(t.id));
      const done =
        rows.length === ids.length && rows.every((t) => t.status === 'finished' || t.status === 'cancelled');
      return done ? rows : undefined;
    },
    `all ${ids.length} tasks finished or cancelled`,
    timeout,
  );
}

/**
 * Clicks "Delete field", which sends the deletion to two instances at once, and checks what the
 * lock panel shows: two holders one after the other, tokens increasing, one removal.
 */
export async function deleteFieldRace(page: Page, collection: string, field: string) {
  const before = (await lockRows(page)).length;
  await page.selectOption('#field-collection', collection);
  await until(
    async () => (await page.$$eval('#field-name option', (o) => o.map((x: any) => x.value))).includes(field),
    'field options',
  );
  await page.selectOption('#field-name', field);
  await page.click('#delete-field');
  const locks = await until(async () => {
    const rows = await lockRows(page);
    const fresh = rows.slice(0, rows.length - before);
    return fresh.length === 2 && fresh.every((r) => r.releasedAt !== undefined) ? fresh : undefined;
  }, 'two lock holders, both released');
  const [first, second] = [...locks].sort((a, b) => a.token - b.token);
  expect(second!.token).toBeGreaterThan(first!.token);
  expect(first!.instance).not.toBe(second!.instance);
  // Serialised: the second holder got the lock only after the first released it.
  expect(second!.acquiredAt).toBeGreaterThanOrEqual(first!.releasedAt!);
  expect([first!.removed, second!.removed]).toEqual(['true', 'false']);
  const fieldsGone = await until(
    () =>
      page.$$eval(
        '.card[data-status="running"] .collections',
        (nodes, [name, f]) =>
          nodes.every((n: any) => !new RegExp(`${name}\\([^)]*\\b${f}\\b`).test(n.textContent)),
        [collection, field],
      ),
    `${collection}.${field} gone on every running instance`,
  );
  expect(fieldsGone).toBe(true);
  return { first: first!, second: second! };
}
