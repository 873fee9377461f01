import { type Cache, Plugin } from '@cluster/core';
import type { Database } from '../db.js';
import type { EventLog } from '../events.js';

export interface TokenPolicy {
  expiresIn: string;
  renewWindowMinutes: number;
  maxSessionsPerUser: number;
}

/**
 * Seed section "Composant de cache (Cache)": the auth plugin's token policy is read from the
 * database once and then served by `cache.wrap` for 60 s. Every API call of the demo checks the
 * policy, so the dashboard's hit/miss counters move as you click.
 */
export class AuthPlugin extends Plugin {
  hits = 0;
  misses = 0;
  #cache: Cache | undefined;

  constructor(
    private readonly db: Database,
    private readonly events: EventLog,
  ) {
    super({ name: 'auth' });
  }

  override async load(): Promise<void> {
    // Which store backs it (memory per instance, or a shared Redis / NATS store) is the app's
    // composition; the plugin only names its cache and prefix.
    this.#cache = await this.app.cacheManager.createCache({ name: 'auth', prefix: 'auth' });
    await this.tokenPolicy();
  }

  get cacheStore(): string {
    return this.#cache?.storeName ?? 'memory';
  }

  async tokenPolicy(): Promise<TokenPolicy> {
    if (!this.#cache) throw new Error('auth plugin is not loaded');
    let filled = false;
    const policy = await this.#cache.wrap(
      'token:config',
      async () => {
        filled = true;
        const rows = await this.db.query<{ policy: string }>(
          `SELECT policy FROM demo_token_policies WHERE app = ? AND id = 'default'`,
          [this.app.name],
        );
        if (!rows[0]) throw new Error('the default token policy is missing');
        return JSON.parse(rows[0].policy) as TokenPolicy;
      },
      60 * 1000,
    );
    if (filled) {
      this.misses += 1;
      this.events.push('cache-miss', 'token policy loaded from the database (cache miss)');
    } else {
      this.hits += 1;
    }
    return policy;
  }
}
