import { Plugin, type SyncGap, type SyncMessageMeta } from '@cluster/core';
import type { Database, Transaction } from '../db.js';
import { type EventLog, HttpError, sleep } from '../events.js';

export interface CollectionSchema {
  name: string;
  fields: string[];
  version: number;
  /** Fencing token of the last lock holder that changed this collection's fields. */
  fence: number;
  updatedBy: string;
}

export type SchemaMessage =
  | { type: 'syncCollection'; collectionName: string; version: number }
  | { type: 'removeField'; collectionName: string; fieldName: string; version: number };

export interface HeldLock {
  key: string;
  token: number;
  since: number;
  collection: string;
  field: string;
}

export interface DeleteFieldResult {
  collection: string;
  field: string;
  instance: string;
  token: number;
  removed: boolean;
  waitedMs: number;
  acquiredAt: number;
  releasedAt: number;
}

interface CollectionRow {
  name: string;
  fields: string;
  version: number;
  fence: number;
  updated_by: string;
}

const NAME = /^[a-z][a-z0-9_-]{0,39}$/;

/**
 * Seed sections "SyncMessageManager" and "LockManager": collection schemas live in memory on every
 * instance (as a real ORM's models would), are written to the database in a transaction, and the
 * sync message that makes the other instances reload leaves only after COMMIT. Field deletion is
 * serialised across instances by `lockManager.runExclusive`, and its fencing token is stored with
 * the row so that a holder whose lease expired could never overwrite a newer change.
 */
export class DataSourcePlugin extends Plugin {
  readonly collections = new Map<string, CollectionSchema>();
  schemaVersion = 0;
  readonly heldLocks = new Map<string, HeldLock>();

  constructor(
    private readonly db: Database,
    private readonly events: EventLog,
  ) {
    super({ name: 'data-source' });
  }

  override async load(): Promise<void> {
    await this.reloadAll();
  }

  /** Reloads every schema from the database: at start, and when sync messages were missed. */
  async reloadAll(): Promise<void> {
    const rows = await this.db.query<CollectionRow>(
      'SELECT name, fields, version, fence, updated_by FROM demo_collections WHERE app = ? ORDER BY name',
      [this.app.name],
    );
    const version = await this.#readSchemaVersion();
    this.collections.clear();
    for (const row of rows) this.collections.set(row.name, toSchema(row));
    this.schemaVersion = Math.max(this.schemaVersion, version);
  }

  async #readSchemaVersion(): Promise<number> {
    const rows = await this.db.query<{ version: number }>('SELECT version FROM demo_schema WHERE app = ?', [
      this.app.name,
    ]);
    return Number(rows[0]?.version ?? 0);
  }

  /** What `repository.load(collectionName)` does in the seed: read one schema back from the database. */
  async reloadCollection(name: string): Promise<void> {
    const rows = await this.db.query<CollectionRow>(
      'SELECT name, fields, version, fence, updated_by FROM demo_collections WHERE app = ? AND name = ?',
      [this.app.name, name],
    );
    if (rows[0]) this.collections.set(name, toSchema(rows[0]));
    else this.collections.delete(name);
  }

  override async handleSyncMessage(message: SchemaMessage, meta: SyncMessageMeta): Promise<void> {
    const from = meta.publisherId;
    if (message.type === 'syncCollection') {
      this.events.push(
        'sync-received',
        `syncCollection ${message.collectionName} v${message.version} from ${from}`,
        {
          ...message,
          from,
          seq: meta.seq,
        },
      );
    } else if (message.type === 'removeField') {
      this.events.push(
        'sync-received',
        `removeField ${message.collectionName}.${message.fieldName} v${message.version} from ${from}`,
        { ...message, from, seq: meta.seq },
      );
    } else {
      return;
    }
    await this.reloadCollection(message.collectionName);
    this.schemaVersion = Math.max(this.schemaVersion, message.version);
  }

  override async onSyncGap(gap: SyncGap): Promise<void> {
    this.events.push('sync-gap', `missed sync messages from ${gap.publisherId} (${gap.reason}); reloading`, {
      ...gap,
    });
    await this.reloadAll();
  }

  /** Bumps the app's schema version inside `tx`; the new version travels with the sync message. */
  async #bumpVersion(tx: Transaction): Promise<number> {
    await tx.run('UPDATE demo_schema SET version = version + 1 WHERE app = ?', [this.app.name]);
    const rows = await tx.query<{ version: number }>('SELECT version FROM demo_schema WHERE app = ?', [
      this.app.name,
    ]);
    return Number(rows[0]?.version ?? 0);
  }

  async #announce(tx: Transaction, message: SchemaMessage, text: string): Promise<void> {
    // Published with the transaction: nothing leaves before COMMIT, nothing at all on ROLLBACK.
    await this.sendSyncMessage(message, { transaction: tx });
    tx.afterCommit(() => this.events.push('sync-sent', text, { ...message }));
  }

  async createCollection(name: string, fields: readonly string[]): Promise<CollectionSchema> {
    if (!NAME.test(name))
      throw new HttpError(400, 'a collection name is 1-40 lowercase letters, digits, - or _');
    for (const field of fields) {
      if (!NAME.test(field)) throw new HttpError(400, `bad field name ${JSON.stringify(field)}`);
    }
    const instance = this.app.instanceId;
    const schema = await this.db.transaction(async (tx) => {
      const existing = await tx.query('SELECT name FROM demo_collections WHERE app = ? AND name = ?', [
        this.app.name,
        name,
      ]);
      if (existing.length > 0) throw new HttpError(409, `collection ${name} already exists`);
      const version = await this.#bumpVersion(tx);
      await tx.run(
        'INSERT INTO demo_collections (app, name, fields, version, fence, updated_by) VALUES (?, ?, ?, ?, 0, ?)',
        [this.app.name, name, JSON.stringify(fields), version, instance],
      );
      await this.#announce(
        tx,
        { type: 'syncCollection', collectionName: name, version },
        `syncCollection ${name} v${version}`,
      );
      return { name, fields: [...fields], version, fence: 0, updatedBy: instance };
    });
    this.collections.set(name, schema);
    this.schemaVersion = Math.max(this.schemaVersion, schema.version);
    return schema;
  }

  /**
   * Removes `field` from `collection` under the collection's field lock. `holdMs` stands for a
   * slow schema migration, so that two attempts visibly queue behind each other; the lease is
   * renewed while it runs, and the wait is aborted if the lease is lost.
   */
  async deleteField(collection: string, field: string, holdMs: number): Promise<DeleteFieldResult> {
    const key = `${this.name}:fields.beforeDestroy:${collection}`;
    const requestedAt = Date.now();
    const instance = this.app.instanceId;
    this.events.push('lock-waiting', `waiting for ${key}`, { key, collection, field });
    return this.app.lockManager.runExclusive(
      key,
      async ({ token, signal }) => {
        const acquiredAt = Date.now();
        this.heldLocks.set(key, { key, token, since: acquiredAt, collection, field });
        this.events.push('lock-acquired', `acquired ${key} with fencing token ${token}`, {
          key,
          token,
          collection,
          field,
          waitedMs: acquiredAt - requestedAt,
        });
        let removed = false;
        try {
          await sleep(holdMs, signal);
          removed = await this.db.transaction(async (tx) => {
            const rows = await tx.query<CollectionRow>(
              'SELECT name, fields, version, fence, updated_by FROM demo_collections WHERE app = ? AND name = ?',
              [this.app.name, collection],
            );
            const row = rows[0];
            if (!row) throw new HttpError(404, `collection ${collection} does not exist`);
            const fields = JSON.parse(row.fields) as string[];
            // The previous holder already removed it: the lock made this attempt see its result.
            if (!fields.includes(field)) return false;
            const version = await this.#bumpVersion(tx);
            // Fencing: the row keeps the newest token that wrote it; an older token is refused.
            const changed = await tx.run(
              'UPDATE demo_collections SET fields = ?, version = ?, fence = ?, updated_by = ? WHERE app = ? AND name = ? AND fence < ?',
              [
                JSON.stringify(fields.filter((f) => f !== field)),
                version,
                token,
                instance,
                this.app.name,
                collection,
                token,
              ],
            );
            if (changed === 0)
              throw new HttpError(409, `fencing token ${token} is older than the row's; refused`);
            await this.#announce(
              tx,
              { type: 'removeField', collectionName: collection, fieldName: field, version },
              `removeField ${collection}.${field} v${version}`,
            );
            this.schemaVersion = Math.max(this.schemaVersion, version);
            return true;
          });
          await this.reloadCollection(collection);
        } finally {
          this.heldLocks.delete(key);
        }
        const releasedAt = Date.now();
        this.events.push(
          'lock-released',
          `released ${key} (token ${token}): ${removed ? `removed ${field}` : `${field} was already gone`}`,
          { key, token, collection, field, removed, acquiredAt, releasedAt },
        );
        return {
          collection,
          field,
          instance,
          token,
          removed,
          waitedMs: acquiredAt - requestedAt,
          acquiredAt,
          releasedAt,
        };
      },
      { ttl: 5_000, waitTimeout: 60_000 },
    );
  }
}

function toSchema(row: CollectionRow): CollectionSchema {
  return {
    name: row.name,
    fields: JSON.parse(row.fields) as string[],
    version: Number(row.version),
    fence: Number(row.fence),
    updatedBy: row.updated_by,
  };
}
