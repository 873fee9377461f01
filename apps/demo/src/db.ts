import BetterSqlite3 from 'better-sqlite3';
import pg from 'pg';
import { redactUrl } from './config.js';

type Params = readonly (string | number | null)[];
type Row = Record<string, unknown>;

/**
 * A database transaction. `afterCommit` is what @cluster's SyncMessageManager needs: messages
 * published with `{ transaction }` leave only once the data they announce is committed.
 */
export interface Transaction {
  query<T = Row>(sql: string, params?: Params): Promise<T[]>;
  /** Resolves the number of rows changed. */
  run(sql: string, params?: Params): Promise<number>;
  afterCommit(callback: () => unknown): void;
  afterRollback(callback: () => unknown): void;
}

export interface Database {
  readonly kind: 'sqlite' | 'postgres';
  /** Printable, credential-free description. */
  readonly description: string;
  query<T = Row>(sql: string, params?: Params): Promise<T[]>;
  run(sql: string, params?: Params): Promise<number>;
  /** Runs `fn` in one transaction: COMMIT when it resolves, ROLLBACK when it throws. */
  transaction<T>(fn: (tx: Transaction) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** Callbacks registered on a transaction; run once its outcome is known. */
class Outcome {
  readonly #commit: (() => unknown)[] = [];
  readonly #rollback: (() => unknown)[] = [];
  afterCommit(callback: () => unknown): void {
    this.#commit.push(callback);
  }
  afterRollback(callback: () => unknown): void {
    this.#rollback.push(callback);
  }
  settle(committed: boolean): void {
    for (const callback of committed ? this.#commit : this.#rollback) {
      try {
        const result = callback();
        if (result instanceof Promise) result.catch(() => {});
      } catch {
        // A listener's failure must not turn a committed transaction into a failed call.
      }
    }
  }
}

/**
 * SQLite through better-sqlite3. Its calls are synchronous, but a transaction body awaits, so
 * instances sharing one connection (embedded mode) could interleave their statements inside each
 * other's transaction: transactions are queued one at a time per connection. Processes sharing the
 * file wait for each other through SQLite's own lock (WAL, busy timeout).
 */
class SqliteDatabase implements Database {
  readonly kind = 'sqlite' as const;
  readonly description: string;
  readonly #db: BetterSqlite3.Database;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(file: string) {
    this.#db = new BetterSqlite3(file);
    this.description = file === ':memory:' ? 'SQLite (in memory)' : `SQLite (${file})`;
    if (file !== ':memory:') this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('busy_timeout = 5000');
  }

  #exec<T>(sql: string, params: Params, wantRows: boolean): T[] | number {
    const statement = this.#db.prepare(sql);
    if (wantRows) return statement.all(...params) as T[];
    return statement.run(...params).changes;
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(fn, fn);
    this.#queue = next.catch(() => {});
    return next;
  }

  query<T = Row>(sql: string, params: Params = []): Promise<T[]> {
    return this.#serial(async () => this.#exec<T>(sql, params, true) as T[]);
  }

  run(sql: string, params: Params = []): Promise<number> {
    return this.#serial(async () => this.#exec(sql, params, false) as number);
  }

  transaction<T>(fn: (tx: Transaction) => Promise<T>): Promise<T> {
    return this.#serial(async () => {
      const outcome = new Outcome();
      const tx: Transaction = {
        query: async <R>(sql: string, params: Params = []) => this.#exec<R>(sql, params, true) as R[],
        run: async (sql, params = []) => this.#exec(sql, params, false) as number,
        afterCommit: (cb) => outcome.afterCommit(cb),
        afterRollback: (cb) => outcome.afterRollback(cb),
      };
      // IMMEDIATE takes the write lock now, so two processes never both read then both write.
      this.#db.exec('BEGIN IMMEDIATE');
      let result: T;
      try {
        result = await fn(tx);
        this.#db.exec('COMMIT');
      } catch (error) {
        if (this.#db.inTransaction) this.#db.exec('ROLLBACK');
        outcome.settle(false);
        throw error;
      }
      outcome.settle(true);
      return result;
    });
  }

  async close(): Promise<void> {
    await this.#queue;
    this.#db.close();
  }
}

/** Placeholders are written `?` everywhere; PostgreSQL wants `$1, $2, ...`. */
function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

class PostgresDatabase implements Database {
  readonly kind = 'postgres' as const;
  readonly description: string;
  readonly #pool: pg.Pool;

  constructor(url: string) {
    this.description = `PostgreSQL (${redactUrl(url)})`;
    this.#pool = new pg.Pool({ connectionString: url, max: 4, connectionTimeoutMillis: 3_000 });
    // An idle client's error (server restart) must not crash the process; the next query reconnects.
    this.#pool.on('error', () => {});
  }

  async query<T = Row>(sql: string, params: Params = []): Promise<T[]> {
    return (await this.#pool.query(numbered(sql), [...params])).rows as T[];
  }

  async run(sql: string, params: Params = []): Promise<number> {
    return (await this.#pool.query(numbered(sql), [...params])).rowCount ?? 0;
  }

  async transaction<T>(fn: (tx: Transaction) => Promise<T>): Promise<T> {
    const client = await this.#pool.connect();
    const outcome = new Outcome();
    const tx: Transaction = {
      query: async <R>(sql: string, params: Params = []) =>
        (await client.query(numbered(sql), [...params])).rows as R[],
      run: async (sql, params = []) => (await client.query(numbered(sql), [...params])).rowCount ?? 0,
      afterCommit: (cb) => outcome.afterCommit(cb),
      afterRollback: (cb) => outcome.afterRollback(cb),
    };
    try {
      await client.query('BEGIN');
      let result: T;
      try {
        result = await fn(tx);
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {});
        outcome.settle(false);
        throw error;
      }
      outcome.settle(true);
      return result;
    } finally {
      client.release();
    }
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }
}

export function openDatabase(options: { databaseUrl?: string | undefined; sqliteFile: string }): Database {
  return options.databaseUrl
    ? new PostgresDatabase(options.databaseUrl)
    : new SqliteDatabase(options.sqliteFile);
}

const TABLES = [
  `CREATE TABLE IF NOT EXISTS demo_collections (
     app TEXT NOT NULL, name TEXT NOT NULL, fields TEXT NOT NULL, version INTEGER NOT NULL,
     fence INTEGER NOT NULL DEFAULT 0, updated_by TEXT NOT NULL, PRIMARY KEY (app, name))`,
  `CREATE TABLE IF NOT EXISTS demo_schema (app TEXT PRIMARY KEY, version INTEGER NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS demo_token_policies (
     app TEXT NOT NULL, id TEXT NOT NULL, policy TEXT NOT NULL, PRIMARY KEY (app, id))`,
  `CREATE TABLE IF NOT EXISTS demo_cancelled_tasks (app TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (app, id))`,
];

export const DEFAULT_TOKEN_POLICY = { expiresIn: '7d', renewWindowMinutes: 15, maxSessionsPerUser: 5 };

/** Creates the tables and this app's rows. Run once, by the launcher, before any instance starts. */
export async function migrate(db: Database, app: string): Promise<void> {
  for (const sql of TABLES) await db.run(sql);
  await db.transaction(async (tx) => {
    await tx.run('INSERT INTO demo_schema (app, version) VALUES (?, 0) ON CONFLICT (app) DO NOTHING', [app]);
    await tx.run(
      `INSERT INTO demo_token_policies (app, id, policy) VALUES (?, 'default', ?) ON CONFLICT (app, id) DO NOTHING`,
      [app, JSON.stringify(DEFAULT_TOKEN_POLICY)],
    );
  });
}

/** Deletes every row of `app` (PostgreSQL is shared with other runs; SQLite files are temporary). */
export async function deleteAppRows(db: Database, app: string): Promise<void> {
  await db.transaction(async (tx) => {
    for (const table of ['demo_collections', 'demo_schema', 'demo_token_policies', 'demo_cancelled_tasks']) {
      await tx.run(`DELETE FROM ${table} WHERE app = ?`, [app]);
    }
  });
}
