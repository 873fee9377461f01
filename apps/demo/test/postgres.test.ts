import { serverReachable } from '@cluster/testkit';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Browser, openBrowser, type RunningDemo, startDemo } from './helpers.js';
import { createCollectionOnInstanceOne, deleteFieldRace, waitAllRunning } from './scenario.js';

const DATABASE_URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';
const reachable = await serverReachable(DATABASE_URL, 5432);
if (!reachable) console.warn('skipping the PostgreSQL demo test: nothing listens at DATABASE_URL');

describe.skipIf(!reachable)('embedded mode on PostgreSQL (DATABASE_URL)', () => {
  let demo: RunningDemo;
  let browser: Browser;

  beforeAll(async () => {
    demo = await startDemo([], { DATABASE_URL, DEMO_CLEANUP: '1' });
    browser = await openBrowser();
    await browser.page.goto(demo.url);
    await waitAllRunning(browser.page, 3);
  });

  afterAll(async () => {
    await browser?.close();
    await demo?.stop();
  });

  it('keeps schemas in PostgreSQL, syncs every instance, and stores the fencing token of the deletion', async () => {
    expect(demo.output()).toContain('db      PostgreSQL');
    await createCollectionOnInstanceOne(browser.page, 'invoices', 3);
    const { first, second } = await deleteFieldRace(browser.page, 'invoices', 'body');
    const client = new pg.Client({ connectionString: DATABASE_URL });
    await client.connect();
    try {
      const { rows } = await client.query(
        'SELECT fields, fence FROM demo_collections WHERE app = $1 AND name = $2',
        [demo.app, 'invoices'],
      );
      expect(JSON.parse(rows[0].fields)).toEqual(['title', 'author', 'tags']);
      // The row keeps the token of the holder that removed the field.
      expect(rows[0].fence).toBe(first.token);
      expect(second.token).toBeGreaterThan(first.token);
      await browser.close();
      await demo.stop();
      const left = await client.query('SELECT count(*)::int AS n FROM demo_collections WHERE app = $1', [
        demo.app,
      ]);
      expect(left.rows[0].n).toBe(0);
    } finally {
      await client.end();
    }
  });
});
