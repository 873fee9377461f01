import { abortError, closedError, invalidArgument } from '../errors.js';
import { createMemoryHub, type MemoryHub } from '../hub.js';
import type { LockAcquireRequest, LockAdapter, LockCapabilities, LockGrant } from './types.js';

export interface MemoryLockOptions {
  /** Adapters created on one hub share their locks, as nodes of one cluster. Default: a private hub. */
  hub?: MemoryHub;
}

interface Holder {
  readonly key: string;
  readonly owner: string;
  readonly token: number;
  readonly adapter: MemoryLockAdapter;
  expiresAt: number;
  timer: NodeJS.Timeout | undefined;
}

interface Waiter {
  readonly owner: string;
  readonly ttl: number;
  readonly adapter: MemoryLockAdapter;
  /** Hands the key over; detaches the waiter's timer and abort listener first. */
  grant(grant: LockGrant): void;
  fail(error: unknown): void;
}

interface KeyState {
  holder: Holder | undefined;
  /** Insertion-ordered, so the first entry is the longest waiter (FIFO) and removal is O(1). */
  /** Created on first wait: most acquisitions never wait, and a Set per acquisition shows in GC. */
  waiters: Set<Waiter> | undefined;
}

/** The slice every memory lock adapter on one hub shares. */
interface LockHubState {
  /** Only keys that are held or waited for; pruned as soon as neither is true. */
  readonly keys: Map<string, KeyState>;
  /** Last token granted per key; kept when the key is free so tokens never go backwards. */
  readonly tokens: Map<string, number>;
}

/**
 * Grants report their end this much before the key is actually freed, so the manager's loss timer
 * fires (and the old holder's signal aborts) before a waiter is handed the key.
 */
const REPORT_EARLY_MS = 1;

const CAPABILITIES: LockCapabilities = Object.freeze({
  crossProcess: false,
  durable: false,
  fencing: true,
  fairness: 'fifo',
  wakeOnRelease: true,
});

class MemoryLockAdapter implements LockAdapter {
  readonly capabilities = CAPABILITIES;
  readonly #state: LockHubState;
  readonly #waiters = new Set<Waiter>();
  #closed = false;

  constructor(hub: MemoryHub) {
    this.#state = hub.part<LockHubState>('lock', () => ({ keys: new Map(), tokens: new Map() }));
  }

  async connect(): Promise<void> {
    if (this.#closed) throw closedError('memory lock adapter');
  }

  acquire(key: string, request: LockAcquireRequest): Promise<LockGrant | null> {
    try {
      if (this.#closed) throw closedError('memory lock adapter');
      assertRequest(key, request);
    } catch (error) {
      return Promise.reject(error);
    }
    const { owner, ttl, waitTimeout, signal } = request;
    if (signal?.aborted) return Promise.reject(abortError(signal, 'lock acquire'));

    let state = this.#keyState(key);
    const current = state.holder;
    if (current !== undefined && Date.now() >= current.expiresAt) {
      // Its expiry timer is late (busy event loop): end that lease now, handing over in FIFO order.
      this.#free(current);
      state = this.#keyState(key);
    }
    if (state.holder === undefined) return Promise.resolve(this.#grant(key, state, owner, ttl));
    if (waitTimeout === 0) return Promise.resolve(null);

    return new Promise<LockGrant | null>((resolve, reject) => {
      const detach = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        state.waiters?.delete(waiter);
        this.#waiters.delete(waiter);
      };
      const waiter: Waiter = {
        owner,
        ttl,
        adapter: this,
        grant: (grant) => {
          detach();
          resolve(grant);
        },
        fail: (error) => {
          detach();
          this.#prune(key, state);
          reject(error);
        },
      };
      const onAbort = () => waiter.fail(abortError(signal!, 'lock acquire'));
      const timer = setTimeout(() => {
        detach();
        this.#prune(key, state);
        resolve(null);
      }, waitTimeout);
      timer.unref?.();
      signal?.addEventListener('abort', onAbort, { once: true });
      state.waiters ??= new Set();
      state.waiters.add(waiter);
      this.#waiters.add(waiter);
      // Someone now waits for this lease to end: make sure its end wakes them.
      if (state.holder !== undefined) this.#armExpiry(state.holder);
    });
  }

  acquireNow(key: string, owner: string, ttl: number): LockGrant | null {
    if (this.#closed) throw closedError('memory lock adapter');
    let state = this.#keyState(key);
    const current = state.holder;
    if (current !== undefined && Date.now() >= current.expiresAt) {
      this.#free(current);
      state = this.#keyState(key);
    }
    return state.holder === undefined ? this.#grant(key, state, owner, ttl) : null;
  }

  releaseNow(key: string, owner: string, token: number): boolean {
    if (this.#closed) throw closedError('memory lock adapter');
    const holder = this.#holderOf(key, owner, token);
    if (holder === undefined) return false;
    this.#free(holder);
    return true;
  }

  async release(key: string, owner: string, token: number): Promise<boolean> {
    if (this.#closed) throw closedError('memory lock adapter');
    const holder = this.#holderOf(key, owner, token);
    if (holder === undefined) return false;
    this.#free(holder);
    return true;
  }

  async extend(key: string, owner: string, token: number, ttl: number): Promise<LockGrant | null> {
    if (this.#closed) throw closedError('memory lock adapter');
    assertDuration(ttl, 'ttl', false);
    const holder = this.#holderOf(key, owner, token);
    if (holder === undefined) return null;
    // An armed expiry timer re-reads expiresAt when it fires, so it needs no re-arming here.
    holder.expiresAt = Date.now() + ttl;
    return { token: holder.token, expiresAt: holder.expiresAt - REPORT_EARLY_MS };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const closed = closedError('memory lock adapter');
    for (const waiter of [...this.#waiters]) waiter.fail(closed);
    // Found by a scan (close is rare) rather than kept in a Set of its own, which every grant and
    // release would have to update.
    const holds: Holder[] = [];
    for (const state of this.#state.keys.values())
      if (state.holder?.adapter === this) holds.push(state.holder);
    for (const holder of holds) this.#free(holder);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** The current holder when it is owner/token and its lease has not ended yet (a late timer does not count). */
  #holderOf(key: string, owner: string, token: number): Holder | undefined {
    const holder = this.#state.keys.get(key)?.holder;
    if (holder === undefined || holder.owner !== owner || holder.token !== token) return undefined;
    if (Date.now() >= holder.expiresAt) {
      this.#free(holder);
      return undefined;
    }
    return holder;
  }

  #keyState(key: string): KeyState {
    let state = this.#state.keys.get(key);
    if (state === undefined) {
      state = { holder: undefined, waiters: undefined };
      this.#state.keys.set(key, state);
    }
    return state;
  }

  #grant(key: string, state: KeyState, owner: string, ttl: number): LockGrant {
    const token = (this.#state.tokens.get(key) ?? 0) + 1;
    this.#state.tokens.set(key, token);
    const holder: Holder = {
      key,
      owner,
      token,
      adapter: this,
      expiresAt: Date.now() + ttl,
      timer: undefined,
    };
    state.holder = holder;
    // No timer yet: with nobody waiting, an overdue lease is ended when the key is next touched.
    if (state.waiters !== undefined && state.waiters.size > 0) this.#armExpiry(holder);
    return { token, expiresAt: holder.expiresAt - REPORT_EARLY_MS };
  }

  /** The lease of a holder that stops renewing ends on its own; the manager reports that as a loss. */
  #armExpiry(holder: Holder): void {
    if (holder.timer !== undefined) return;
    const fire = () => {
      const remaining = holder.expiresAt - Date.now();
      if (remaining > 0) {
        // Timers may fire a millisecond early; never end a lease before its time.
        holder.timer = setTimeout(fire, remaining);
        holder.timer.unref?.();
        return;
      }
      this.#free(holder);
    };
    holder.timer = setTimeout(fire, Math.max(0, holder.expiresAt - Date.now()));
    holder.timer.unref?.();
  }

  /** Ends `holder`'s lease (it must be the current holder) and hands the key to the longest waiter. */
  #free(holder: Holder): void {
    clearTimeout(holder.timer);
    holder.timer = undefined;
    const state = this.#state.keys.get(holder.key);
    if (state === undefined || state.holder !== holder) return;
    state.holder = undefined;
    const next = state.waiters?.values().next();
    if (next === undefined) {
      this.#prune(holder.key, state);
      return;
    }
    if (next.done) {
      this.#prune(holder.key, state);
      return;
    }
    const waiter = next.value;
    // The grant belongs to the waiter's adapter, so closing that adapter releases it.
    const grant = waiter.adapter.#grant(holder.key, state, waiter.owner, waiter.ttl);
    waiter.grant(grant);
  }

  #prune(key: string, state: KeyState): void {
    if (
      state.holder === undefined &&
      (state.waiters === undefined || state.waiters.size === 0) &&
      this.#state.keys.get(key) === state
    ) {
      this.#state.keys.delete(key);
    }
  }
}

function assertRequest(key: unknown, request: LockAcquireRequest): void {
  if (typeof key !== 'string' || key.length === 0)
    throw invalidArgument('lock key must be a non-empty string');
  if (typeof request !== 'object' || request === null)
    throw invalidArgument('lock request must be an object');
  if (typeof request.owner !== 'string' || request.owner.length === 0) {
    throw invalidArgument('lock owner must be a non-empty string');
  }
  assertDuration(request.ttl, 'ttl', false);
  assertDuration(request.waitTimeout, 'waitTimeout', true);
}

/** Timers cannot wait longer than this (about 24.8 days); a longer delay would fire at once. */
const MAX_DURATION_MS = 2_147_483_647;

function assertDuration(value: unknown, what: string, allowZero: boolean): void {
  if (
    typeof value !== 'number' ||
    !Number.isFinite(value) ||
    value < 0 ||
    (value === 0 && !allowZero) ||
    value > MAX_DURATION_MS
  ) {
    throw invalidArgument(
      `${what} must be a ${allowZero ? 'non-negative' : 'positive'} number of ms up to ${MAX_DURATION_MS}`,
    );
  }
}

/**
 * In-process locks: leases with fencing tokens, FIFO waiters woken on release or expiry, per-key
 * state pruned when free. Adapters on one hub exclude each other; they are not cross-process.
 */
export function createMemoryLock(options: MemoryLockOptions = {}): LockAdapter {
  if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
  return new MemoryLockAdapter(options.hub ?? createMemoryHub());
}
