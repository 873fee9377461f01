import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCluster, createMemoryHub, Plugin } from '@cluster/core';
import { waitFor } from '@cluster/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import { type Database, migrate, openDatabase } from '../src/db.js';

class SchemaPlugin extends Plugin {
  readonly seen: { name: string; visible: boolean }[] = [];
  constructor(private readonly db: Database) {
    super({ name: 'schema' });
  }
  override async handleSyncMessage(message: { name: string }) {
    // What a receiver reloads must already be committed when the message arrives.
    const rows = await this.db.query('SELECT name FROM demo_collections WHERE app = ? AND name = ?', [
      't',
      message.name,
    ]);
    this.seen.push({ name: message.name, visible: rows.length === 1 });
  }
}

describe('the transaction wrapper (SQLite file shared by two connections, as two processes)', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  async function twoConnections(): Promise<[Database, Database]> {
    const dir = mkdtempSync(join(tmpdir(), 'demo-db-'));
    dirs.push(dir);
    const file = join(dir, 'db.sqlite');
    const writer = openDatabase({ sqliteFile: file });
    await migrate(writer, 't');
    return [writer, openDatabase({ sqliteFile: file })];
  }

  it('sends a sync message only after COMMIT, and never after ROLLBACK', async () => {
    const [writerDb, readerDb] = await twoConnections();
    const hub = createMemoryHub();
    const sender = new SchemaPlugin(writerDb);
    const receiver = new SchemaPlugin(readerDb);
    const a = createCluster({ name: 't', hub, plugins: [sender] });
    const b = createCluster({ name: 't', hub, plugins: [receiver] });
    await a.start();
    await b.start();
    try {
      let committedEarly: boolean | undefined;
      await writerDb.transaction(async (tx) => {
        await tx.run(
          `INSERT INTO demo_collections (app, name, fields, version, fence, updated_by) VALUES ('t', 'posts', '[]', 1, 0, 'a')`,
        );
        await sender.sendSyncMessage({ name: 'posts' }, { transaction: tx });
        // Still inside the transaction: nothing may have been delivered yet.
        committedEarly = receiver.seen.length > 0;
      });
      expect(committedEarly).toBe(false);
      await waitFor(() => receiver.seen.length === 1, { message: 'the sync message' });
      expect(receiver.seen[0]).toEqual({ name: 'posts', visible: true });

      const rolledBack = writerDb.transaction(async (tx) => {
        await tx.run(
          `INSERT INTO demo_collections (app, name, fields, version, fence, updated_by) VALUES ('t', 'drafts', '[]', 1, 0, 'a')`,
        );
        await sender.sendSyncMessage({ name: 'drafts' }, { transaction: tx });
        throw new Error('abort the transaction');
      });
      await expect(rolledBack).rejects.toThrow('abort the transaction');
      // A third message after the rollback arrives; the rolled-back one never does.
      await sender.sendSyncMessage({ name: 'posts' });
      await waitFor(() => receiver.seen.length === 2, { message: 'the message after the rollback' });
      expect(receiver.seen.map((m) => m.name)).toEqual(['posts', 'posts']);
      expect(await readerDb.query(`SELECT name FROM demo_collections WHERE name = 'drafts'`)).toEqual([]);
    } finally {
      await a.stop();
      await b.stop();
      await writerDb.close();
      await readerDb.close();
    }
  });

  it('runs the transactions of instances sharing one connection one after another', async () => {
    const db = openDatabase({ sqliteFile: ':memory:' });
    await migrate(db, 't');
    const order: string[] = [];
    const slow = db.transaction(async (tx) => {
      order.push('a:begin');
      await new Promise((resolve) => setImmediate(resolve));
      await tx.run(`UPDATE demo_schema SET version = version + 1 WHERE app = 't'`);
      order.push('a:end');
    });
    const fast = db.transaction(async (tx) => {
      order.push('b:begin');
      await tx.run(`UPDATE demo_schema SET version = version + 1 WHERE app = 't'`);
      order.push('b:end');
    });
    await Promise.all([slow, fast]);
    expect(order).toEqual(['a:begin', 'a:end', 'b:begin', 'b:end']);
    expect(await db.query(`SELECT version FROM demo_schema WHERE app = 't'`)).toEqual([{ version: 2 }]);
    await db.close();
  });
});
