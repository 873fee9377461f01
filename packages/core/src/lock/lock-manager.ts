import {
  abortError,
  ClusterError,
  closedError,
  invalidArgument,
  LockAcquireError,
  LockLostError,
} from '../errors.js';
import type { MemoryHub } from '../hub.js';
import { randomId } from '../internal/async.js';
import { assertName, assertOptionalMs, namespaced, segment } from '../internal/names.js';
import { errorFields, type Logger, noopLogger } from '../logger.js';
import { createMemoryLock } from './memory.js';
import type { LockAdapter } from './types.js';

export interface LockOptions {
  /** Lease length in ms. Default: the manager's `defaultTtl`. */
  ttl?: number;
  /** How long to wait for a held key in ms; 0 means one attempt. Never unlimited. */
  waitTimeout?: number;
  /** Cancels the wait: the call rejects with ABORTED (or the signal's ClusterError reason). */
  signal?: AbortSignal;
  /** Name of a registered adapter. Default: the manager's `defaultAdapter`. */
  adapter?: string;
}

export interface LockContext {
  /** Aborts with a LockLostError if the lease is lost while the function runs. */
  readonly signal: AbortSignal;
  /** Fencing token of this acquisition: pass it to the resource you protect. */
  readonly token: number;
}

export type ExclusiveFn<T> = (context: LockContext) => Promise<T> | T;

/** NocoBase's `Releaser` shape: calling it releases the lock. */
export type Releaser = () => Promise<void>;

/**
 * A held lock. Calling it releases it (idempotent), so `const release = await acquire(k); await
 * release();` works as in NocoBase. Without renewal the lease ends after its ttl: `signal` then
 * aborts with a LockLostError and another holder may get the key.
 */
export interface Lock extends AsyncDisposable {
  (): Promise<void>;
  /** The key as the caller gave it (not namespaced). */
  readonly key: string;
  /** Fencing token: strictly greater than every earlier acquisition's token for this key (when the adapter has `fencing`). */
  readonly token: number;
  /** Aborts with a LockLostError when the lease is lost (expiry without renewal, refused extend, manager closed); not on release. */
  readonly signal: AbortSignal;
  /** When the lease ends on the local clock (Date.now() ms) unless extended. */
  readonly expiresAt: number;
  /** True while the lease is ours: not released, not lost, not past `expiresAt`. */
  readonly held: boolean;
  /** Releases the lock; idempotent, and never touches a later holder's lease. */
  release(): Promise<void>;
  /**
   * Extends the lease to `ttl` ms from now (default: the last ttl). Rejects with a LockLostError
   * (and fires `signal`) if the lease is no longer ours, with LOCK_NOT_HELD after a release.
   */
  extend(ttl?: number): Promise<void>;
  /** Runs `fn` under this lock, renewing the lease every ttl/3, then releases it (NocoBase `ILock`). */
  runExclusive<T>(fn: ExclusiveFn<T>, ttl?: number): Promise<T>;
  /** NocoBase `ILock.acquire(ttl)`: re-arms the lease to `ttl` and returns this same releaser. */
  acquire(ttl?: number): Promise<Lock>;
}

export interface LockManagerOptions {
  /** Prefix of every key the adapters see, so two apps on one backend never collide. */
  appName: string;
  /** Adapter used when a call names none. Default `'local'`. */
  defaultAdapter?: string;
  adapters?: Record<string, LockAdapter>;
  /** Hub of the built-in `'local'` memory adapter (when `adapters` has no `'local'`). Default: a private hub. */
  hub?: MemoryHub;
  logger?: Logger;
  /** Lease length in ms when a call gives none. Default 30 000. */
  defaultTtl?: number;
  /** Wait limit in ms for `acquire` and `runExclusive` when a call gives none. Default 30 000. */
  defaultWaitTimeout?: number;
}

const DEFAULT_TTL = 30_000;
const RESOLVED: Promise<void> = Promise.resolve();
const noop = (): void => {};
const DEFAULT_WAIT_TIMEOUT = 30_000;

type LeaseState = 'held' | 'released' | 'lost';

/**
 * The leases a manager holds, with one timer for all of them instead of one per lease: acquisitions
 * only add and remove a Set entry; the timer is armed for the earliest due lease and, when it fires,
 * runs the leases that are due and re-arms for the next. (A timer per acquisition was a large share
 * of the cost of a short critical section, and so was a second Set of held leases.)
 */
class LeaseClock {
  readonly #leases = new Set<Lease>();
  #timer: NodeJS.Timeout | undefined;
  #armedAt = Number.POSITIVE_INFINITY;

  watch(lease: Lease): void {
    this.#leases.add(lease);
    if (lease.dueAt < this.#armedAt) this.#arm(lease.dueAt);
  }

  /** The armed timer is left alone: it fires once, finds nothing due, and stops (it is unref'd). */
  unwatch(lease: Lease): void {
    this.#leases.delete(lease);
  }

  /** Every lease held now (each is watched from its grant until it ends). */
  held(): Lease[] {
    return [...this.#leases];
  }

  #arm(at: number): void {
    clearTimeout(this.#timer);
    this.#armedAt = at;
    this.#timer = setTimeout(() => this.#fire(), Math.min(Math.max(0, at - Date.now()), MAX_DURATION_MS));
    this.#timer.unref?.();
  }

  #fire(): void {
    this.#timer = undefined;
    this.#armedAt = Number.POSITIVE_INFINITY;
    const now = Date.now();
    // A due lease stays in the set: its tick reschedules it (renewal, loss check) or ends it.
    for (const lease of [...this.#leases]) if (lease.dueAt <= now) lease.tick();
    let next = Number.POSITIVE_INFINITY;
    for (const lease of this.#leases) if (lease.dueAt < next) next = lease.dueAt;
    if (next < this.#armedAt && next !== Number.POSITIVE_INFINITY) this.#arm(next);
  }
}

interface LeaseHost {
  readonly adapter: LockAdapter;
  readonly adapterName: string;
  readonly logger: Logger;
  readonly clock: LeaseClock;
}

/** One acquisition: its lease clock, loss detection, renewal and release. The `Lock` handle wraps it. */
class Lease {
  readonly #host: LeaseHost;
  // Created on first use: most runExclusive callers never read the signal, and a signal costs µs.
  #controller: AbortController | undefined;
  #handle: Lock | undefined;
  #methods: LeaseMethods | undefined;
  #state: LeaseState = 'held';
  #ttl: number;
  #expiresAt: number;
  /** When the clock must next look at this lease: the next renewal while renewing, else expiresAt. */
  dueAt = Number.POSITIVE_INFINITY;
  #renewing = false;
  #renewAt = 0;
  #inFlight = false;
  #running = false;
  #releasing: Promise<void> | undefined;

  constructor(
    host: LeaseHost,
    readonly key: string,
    readonly adapterKey: string,
    readonly owner: string,
    readonly token: number,
    ttl: number,
    expiresAt: number,
  ) {
    this.#host = host;
    this.#ttl = ttl;
    this.#expiresAt = expiresAt;
  }

  get handle(): Lock {
    this.#handle ??= createHandle(this);
    return this.#handle;
  }

  get methods(): LeaseMethods {
    this.#methods ??= leaseMethods(this);
    return this.#methods;
  }

  get signal(): AbortSignal {
    this.#controller ??= new AbortController();
    return this.#controller.signal;
  }

  get expiresAt(): number {
    return this.#expiresAt;
  }

  get held(): boolean {
    return this.#state === 'held' && Date.now() < this.#expiresAt;
  }

  get ttl(): number {
    return this.#ttl;
  }

  /** Starts loss detection for a lease handed out as a handle. */
  watch(): this {
    this.#schedule();
    return this;
  }

  release(): Promise<void> {
    if (this.#releasing) return this.#releasing;
    if (this.#state !== 'held') return RESOLVED;
    this.#end('released');
    const released = this.#releaseAtBackend();
    // Only the first caller sees a backend failure; the lease runs out by itself, so later calls resolve.
    this.#releasing = released.then(noop, noop);
    return released;
  }

  /** Synchronous release through an in-process adapter's fast path (no promise round trip). */
  #releaseNow(releaseNow: NonNullable<LockAdapter['releaseNow']>): void {
    this.#end('released');
    this.#releasing = RESOLVED;
    if (!releaseNow.call(this.#host.adapter, this.adapterKey, this.owner, this.token)) {
      this.#host.logger.warn(
        { key: this.key, token: this.token },
        'lock lease had already ended when it was released',
      );
      this.#abort(this.#lostError('the lease had already ended when it was released'));
    }
  }

  async #releaseAtBackend(): Promise<void> {
    const wasHeld = await this.#host.adapter.release(this.adapterKey, this.owner, this.token);
    if (wasHeld) return;
    // The lease ended at the backend before we let go: whoever relied on it was not exclusive.
    this.#host.logger.warn(
      { key: this.key, token: this.token },
      'lock lease had already ended when it was released',
    );
    this.#abort(this.#lostError('the lease had already ended when it was released'));
  }

  async extend(ttl: number = this.#ttl): Promise<void> {
    this.#assertHeld();
    const grant = await this.#host.adapter.extend(this.adapterKey, this.owner, this.token, ttl);
    this.#assertHeld();
    if (grant === null) {
      void this.lose('the backend refused to extend the lease');
      throw this.signal.reason;
    }
    this.#ttl = ttl;
    this.#expiresAt = grant.expiresAt;
    this.#schedule();
  }

  async runExclusive<T>(fn: ExclusiveFn<T>, ttl?: number): Promise<T> {
    if (this.#running) throw invalidArgument(`runExclusive is already running on lock "${this.key}"`);
    this.#running = true;
    try {
      // NocoBase's handle starts the lease with the ttl given here; without one the current lease runs on.
      if (ttl === undefined) this.#assertHeld();
      else await this.extend(ttl);
    } catch (error) {
      this.#running = false;
      await this.#releaseQuietly();
      throw error;
    }

    this.#renewing = true;
    // A lease taken a while ago (tryAcquire, then runExclusive on the handle) may be close to its end.
    this.#renewAt = Date.now() + Math.max(1, Math.min(this.#ttl / 3, (this.#expiresAt - Date.now()) / 2));
    this.#schedule();
    let ok = true;
    let value: T | undefined;
    let failure: unknown;
    try {
      value = await fn(new ExclusiveContext(this));
    } catch (error) {
      ok = false;
      failure = error;
    }
    this.#renewing = false;
    this.#running = false;
    if (this.#state === 'held') {
      try {
        const releaseNow = this.#host.adapter.releaseNow;
        if (releaseNow !== undefined) this.#releaseNow(releaseNow);
        else await this.release();
      } catch (error) {
        // The lease runs out by itself; the caller's own outcome matters more than this failure.
        this.#host.logger.warn(
          { key: this.key, token: this.token, ...errorFields(error) },
          'lock release failed',
        );
      }
    }

    if (this.#state === 'lost' || this.#controller?.signal.aborted) {
      const lost = this.signal.reason as LockLostError;
      if (ok || failure === lost) throw lost;
      throw new LockLostError(lost.message, { cause: failure, details: lost.details ?? {} });
    }
    if (!ok) throw failure;
    return value as T;
  }

  /**
   * Marks the lease lost (signal, warn log) and lets go of it at the backend, which only frees it
   * if it is still ours. Resolves when that release settles; never rejects.
   */
  lose(why: string): Promise<void> {
    if (this.#state !== 'held') return this.#releasing ?? Promise.resolve();
    this.#end('lost');
    const error = this.#lostError(why);
    this.#host.logger.warn({ key: this.key, token: this.token, reason: why }, 'lock lease lost');
    this.#abort(error);
    this.#releasing = this.#host.adapter.release(this.adapterKey, this.owner, this.token).then(
      () => undefined,
      (cause) =>
        this.#host.logger.debug({ key: this.key, ...errorFields(cause) }, 'release after lease loss failed'),
    );
    return this.#releasing;
  }

  #abort(error: LockLostError): void {
    this.#controller ??= new AbortController();
    this.#controller.abort(error);
  }

  #end(state: LeaseState): void {
    this.#state = state;
    this.#renewing = false;
    this.#host.clock.unwatch(this);
  }

  #assertHeld(): void {
    if (this.#state === 'lost') throw this.signal.reason;
    if (this.#state === 'released') {
      throw new ClusterError('LOCK_NOT_HELD', `lock "${this.key}" was released`, {
        details: { key: this.key, token: this.token },
      });
    }
  }

  #lostError(why: string): LockLostError {
    return new LockLostError(`lock "${this.key}" was lost: ${why}`, {
      details: { key: this.key, token: this.token, adapter: this.#host.adapterName },
    });
  }

  async #releaseQuietly(): Promise<void> {
    try {
      await this.release();
    } catch (error) {
      // The lease runs out by itself; the caller's own outcome matters more than this failure.
      this.#host.logger.warn(
        { key: this.key, token: this.token, ...errorFields(error) },
        'lock release failed',
      );
    }
  }

  /**
   * (Re)arms the lease's one timer: at the next renewal while renewing (and no renewal is in
   * flight), else at expiresAt, where a lease not extended in time is reported lost — never dropped
   * silently.
   */
  #schedule(): void {
    if (this.#state !== 'held') return;
    const renew = this.#renewing && !this.#inFlight;
    this.dueAt = renew ? Math.min(this.#renewAt, this.#expiresAt) : this.#expiresAt;
    this.#host.clock.watch(this);
  }

  /** Called by the clock when this lease is due. */
  tick(): void {
    if (this.#state !== 'held') return;
    const now = Date.now();
    if (now >= this.#expiresAt) {
      void this.lose('the lease expired without renewal');
      return;
    }
    if (this.#renewing && !this.#inFlight && now >= this.#renewAt) {
      void this.#renew();
      return;
    }
    this.#schedule();
  }

  async #renew(): Promise<void> {
    const ttl = this.#ttl;
    this.#inFlight = true;
    this.#schedule(); // the loss check stays armed while the renewal is in flight
    try {
      const grant = await this.#host.adapter.extend(this.adapterKey, this.owner, this.token, ttl);
      if (this.#state !== 'held' || !this.#renewing) return;
      if (grant === null) {
        void this.lose('the backend refused to renew the lease');
        return;
      }
      this.#expiresAt = grant.expiresAt;
      this.#renewAt = Date.now() + ttl / 3;
    } catch (error) {
      if (this.#state !== 'held' || !this.#renewing) return;
      this.#host.logger.warn(
        { key: this.key, token: this.token, ...errorFields(error) },
        'lock renewal failed; retrying',
      );
      // Retry sooner than the normal period, while some of the lease is left; the loss check decides the rest.
      this.#renewAt = Date.now() + Math.max(1, Math.min(ttl / 3, (this.#expiresAt - Date.now()) / 3));
    } finally {
      this.#inFlight = false;
      this.#schedule();
    }
  }
}

/** What `runExclusive` hands to its function; the signal is made only if it is read. */
class ExclusiveContext implements LockContext {
  readonly token: number;
  readonly #lease: Lease;

  constructor(lease: Lease) {
    this.#lease = lease;
    this.token = lease.token;
  }

  get signal(): AbortSignal {
    return this.#lease.signal;
  }
}

/** The lease behind a handle, on the handle itself. */
const LEASE = Symbol('lease');
type Handle = Lock & { [LEASE]: Lease };

/** The handle's methods, bound to one lease, so they work detached (`const { release } = lock`). */
interface LeaseMethods {
  readonly release: () => Promise<void>;
  readonly extend: (ttl?: number) => Promise<void>;
  readonly runExclusive: <T>(fn: ExclusiveFn<T>, ttl?: number) => Promise<T>;
  readonly acquire: (ttl?: number) => Promise<Lock>;
}

function leaseMethods(lease: Lease): LeaseMethods {
  return {
    release: () => lease.release(),
    extend: async (ttl?: number) => {
      assertDuration(ttl, 'ttl');
      await lease.extend(ttl === undefined ? undefined : Math.ceil(ttl));
    },
    runExclusive: async <T>(fn: ExclusiveFn<T>, ttl?: number): Promise<T> => {
      assertFunction(fn);
      assertDuration(ttl, 'ttl');
      return lease.runExclusive(fn, ttl === undefined ? undefined : Math.ceil(ttl));
    },
    acquire: async (ttl?: number): Promise<Lock> => {
      assertDuration(ttl, 'ttl');
      await lease.extend(ttl === undefined ? undefined : Math.ceil(ttl));
      return lease.handle;
    },
  };
}

/** A read-only property of every handle, read from its lease. */
function fromLease(read: (lease: Lease) => unknown, enumerable = true): PropertyDescriptor {
  return {
    get(this: Handle) {
      return read(this[LEASE]);
    },
    enumerable,
  };
}

/**
 * What every handle shares: read-only getters over its lease, and its methods (bound per lease on
 * first use). Defining ten properties on each handle instead cost about 5 µs per acquisition.
 */
const handlePrototype: object = Object.create(Function.prototype, {
  key: fromLease((lease) => lease.key),
  token: fromLease((lease) => lease.token),
  signal: fromLease((lease) => lease.signal),
  expiresAt: fromLease((lease) => lease.expiresAt),
  held: fromLease((lease) => lease.held),
  release: fromLease((lease) => lease.methods.release, false),
  extend: fromLease((lease) => lease.methods.extend, false),
  runExclusive: fromLease((lease) => lease.methods.runExclusive, false),
  acquire: fromLease((lease) => lease.methods.acquire, false),
  [Symbol.asyncDispose]: fromLease((lease) => lease.methods.release, false),
});

function createHandle(lease: Lease): Lock {
  const release = (() => lease.release()) as Handle;
  release[LEASE] = lease;
  Object.setPrototypeOf(release, handlePrototype);
  return release;
}

interface AdapterEntry {
  readonly name: string;
  readonly adapter: LockAdapter;
  readonly host: LeaseHost;
  connecting: Promise<void> | undefined;
  /** Set once connect() resolved, so each acquisition skips awaiting it. */
  connected: boolean;
}

interface ResolvedRequest {
  readonly entry: AdapterEntry;
  readonly ttl: number;
  readonly waitTimeout: number;
  readonly signal: AbortSignal | undefined;
}

/**
 * Distributed locks over pluggable adapters: leases with fencing tokens, bounded waits, renewal
 * inside `runExclusive`, and a signal on every handle that fires when its lease is lost.
 */
export class LockManager implements AsyncDisposable {
  readonly appName: string;
  readonly defaultAdapter: string;
  readonly #adapters = new Map<string, AdapterEntry>();
  readonly #logger: Logger;
  readonly #defaultTtl: number;
  readonly #defaultWaitTimeout: number;
  /** Also the set of held leases. */
  readonly #clock = new LeaseClock();
  /** Per-call controllers of waits that also listen to a caller's signal; close() aborts them too. */
  readonly #waits = new Set<AbortController>();
  /** Owners are this manager's id plus a counter: unique, and cheaper than a UUID per acquisition. */
  readonly #ownerPrefix = `${randomId()}:`;
  /** `namespaced(appName, key)` is this plus the key's escaped segment. */
  readonly #keyPrefix: string;
  #ownerSeq = 0;
  #started = false;
  #closing: Promise<void> | undefined;

  constructor(options: LockManagerOptions) {
    if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
    assertName(options.appName, 'appName');
    if (options.defaultAdapter !== undefined) assertName(options.defaultAdapter, 'defaultAdapter');
    assertDuration(options.defaultTtl, 'defaultTtl');
    assertDuration(options.defaultWaitTimeout, 'defaultWaitTimeout', true);
    if (
      options.adapters !== undefined &&
      (typeof options.adapters !== 'object' || options.adapters === null)
    ) {
      throw invalidArgument('adapters must be an object of name → LockAdapter');
    }
    if (options.hub !== undefined && typeof (options.hub as { part?: unknown })?.part !== 'function') {
      throw invalidArgument('hub must be a MemoryHub');
    }
    this.appName = options.appName;
    this.#keyPrefix = `${namespaced(options.appName)}:`;
    this.defaultAdapter = options.defaultAdapter ?? 'local';
    this.#defaultTtl = Math.ceil(options.defaultTtl ?? DEFAULT_TTL);
    this.#defaultWaitTimeout = Math.ceil(options.defaultWaitTimeout ?? DEFAULT_WAIT_TIMEOUT);
    this.#logger = (options.logger ?? noopLogger).child({ component: 'lock-manager', app: this.appName });
    for (const [name, adapter] of Object.entries(options.adapters ?? {})) this.#add(name, adapter);
    if (!this.#adapters.has('local')) this.#add('local', createMemoryLock({ hub: options.hub }));
  }

  /** Adds an adapter under `name`; usable at once (connected lazily, or now if the manager has started). */
  registerAdapter(name: string, adapter: LockAdapter): void {
    this.#assertOpen();
    const entry = this.#add(name, adapter);
    if (this.#started) {
      this.#connect(entry).catch((error) =>
        this.#logger.error({ adapter: name, ...errorFields(error) }, 'lock adapter failed to connect'),
      );
    }
  }

  /** Connects every adapter. Idempotent; calls made before it connect their adapter on first use. */
  async start(): Promise<void> {
    this.#assertOpen();
    this.#started = true;
    await Promise.all([...this.#adapters.values()].map((entry) => this.#connect(entry)));
  }

  /** Waits up to `waitTimeout` (default `defaultWaitTimeout`) for the key, then rejects with a LockAcquireError. */
  async acquire(key: string, ttlOrOptions?: number | LockOptions): Promise<Lock> {
    const request = this.#resolve(key, ttlOrOptions, 'ttl', this.#defaultWaitTimeout);
    return (this.#acquireNow(key, request) ?? (await this.#acquire(key, request))).watch().handle;
  }

  /**
   * Takes the key if it is free, else rejects with a LockAcquireError at once (timeout 0, the
   * default) or after waiting up to `timeout` ms. The lock is held with a ttl like any other.
   */
  async tryAcquire(key: string, timeoutOrOptions?: number | LockOptions): Promise<Lock> {
    const request = this.#resolve(key, timeoutOrOptions, 'waitTimeout', 0);
    return (this.#acquireNow(key, request) ?? (await this.#acquire(key, request))).watch().handle;
  }

  /**
   * Runs `fn` holding the key, renewing the lease every ttl/3 so `fn` may outlive the ttl, and
   * releases it afterwards whatever happens. If the lease is lost meanwhile, `signal` aborts and
   * this rejects with a LockLostError once `fn` settles.
   */
  async runExclusive<T>(key: string, fn: ExclusiveFn<T>, ttlOrOptions?: number | LockOptions): Promise<T> {
    const request = this.#resolve(key, ttlOrOptions, 'ttl', this.#defaultWaitTimeout);
    assertFunction(fn);
    const lease = this.#acquireNow(key, request) ?? (await this.#acquire(key, request));
    return await lease.runExclusive(fn); // `return await` adopts in one tick, a bare return in three
  }

  /** Releases every lock this manager holds (their signals fire), cancels waits, closes the adapters. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(): Promise<void> {
    const closed = closedError('LockManager');
    for (const wait of this.#waits) wait.abort(closed);
    await Promise.all(this.#clock.held().map((lease) => lease.lose('the lock manager was closed')));
    const results = await Promise.allSettled(
      [...this.#adapters.values()].map((entry) => entry.adapter.close()),
    );
    results.forEach((result, index) => {
      if (result.status === 'rejected') {
        const name = [...this.#adapters.keys()][index];
        this.#logger.error({ adapter: name, ...errorFields(result.reason) }, 'lock adapter failed to close');
      }
    });
  }

  #assertOpen(): void {
    if (this.#closing) throw closedError('LockManager');
  }

  #add(name: string, adapter: LockAdapter): AdapterEntry {
    assertName(name, 'adapter name');
    assertAdapter(adapter, name);
    if (this.#adapters.has(name)) throw invalidArgument(`lock adapter "${name}" is already registered`);
    const entry: AdapterEntry = {
      name,
      adapter,
      connecting: undefined,
      connected: false,
      host: {
        adapter,
        adapterName: name,
        logger: this.#logger,
        clock: this.#clock,
      },
    };
    this.#adapters.set(name, entry);
    return entry;
  }

  #connect(entry: AdapterEntry): Promise<void> {
    entry.connecting ??= entry.adapter.connect().then(
      () => {
        entry.connected = true;
      },
      (error: unknown) => {
        entry.connecting = undefined; // a later call may try again
        throw error;
      },
    );
    return entry.connecting;
  }

  #resolve(
    key: string,
    value: number | LockOptions | undefined,
    numberMeans: 'ttl' | 'waitTimeout',
    defaultWaitTimeout: number,
  ): ResolvedRequest {
    this.#assertOpen();
    assertName(key, 'lock key');
    let options: LockOptions;
    if (value === undefined) options = {};
    else if (typeof value === 'number')
      options = numberMeans === 'ttl' ? { ttl: value } : { waitTimeout: value };
    else if (typeof value === 'object' && value !== null && !Array.isArray(value)) options = value;
    else throw invalidArgument(`the last argument must be a number (${numberMeans}) or an options object`);

    assertDuration(options.ttl, 'ttl');
    assertDuration(options.waitTimeout, 'waitTimeout', true);
    const { signal } = options;
    if (signal !== undefined && !isAbortSignal(signal))
      throw invalidArgument('signal must be an AbortSignal');
    const adapterName = options.adapter ?? this.defaultAdapter;
    if (options.adapter !== undefined) assertName(options.adapter, 'adapter');
    const entry = this.#adapters.get(adapterName);
    if (entry === undefined) throw invalidArgument(`lock adapter "${adapterName}" is not registered`);
    const ttl = Math.ceil(options.ttl ?? this.#defaultTtl);
    const waitTimeout = Math.ceil(options.waitTimeout ?? defaultWaitTimeout);
    return { entry, ttl, waitTimeout, signal };
  }

  /**
   * The in-process fast path: a free key on an adapter with `acquireNow` is taken synchronously.
   * Anything else (held key, signal, adapter not connected yet) goes the async way.
   */
  #acquireNow(key: string, request: ResolvedRequest): Lease | undefined {
    const { entry, ttl, signal } = request;
    const acquireNow = entry.adapter.acquireNow;
    if (acquireNow === undefined || !entry.connected || signal !== undefined) return undefined;
    const adapterKey = this.#keyPrefix + segment(key);
    const owner = this.#ownerPrefix + (++this.#ownerSeq).toString(36);
    const grant = acquireNow.call(entry.adapter, adapterKey, owner, ttl);
    if (grant === null) return undefined;
    return new Lease(entry.host, key, adapterKey, owner, grant.token, ttl, grant.expiresAt);
  }

  async #acquire(key: string, request: ResolvedRequest): Promise<Lease> {
    const { entry, ttl, waitTimeout, signal } = request;
    if (signal?.aborted) throw abortError(signal, 'lock acquire');
    if (!entry.connected) {
      await this.#connect(entry);
      this.#assertOpen();
      if (signal?.aborted) throw abortError(signal, 'lock acquire');
    }

    const adapterKey = this.#keyPrefix + segment(key);
    const owner = this.#ownerPrefix + (++this.#ownerSeq).toString(36);
    // With a caller signal the adapter gets a per-call one that also fires on close(). Without, none:
    // close() closes the adapters, which reject their waits with CLOSED — a listener per waiter on
    // one shared signal would tax every contended wait (and AbortSignal.any leaks on Node 20).
    let wait: AbortController | undefined;
    let onAbort: (() => void) | undefined;
    if (signal) {
      const combined = new AbortController();
      wait = combined;
      onAbort = () => combined.abort(abortError(signal, 'lock acquire'));
      signal.addEventListener('abort', onAbort, { once: true });
      this.#waits.add(combined);
    }
    let grant: Awaited<ReturnType<LockAdapter['acquire']>>;
    try {
      grant = await entry.adapter.acquire(adapterKey, {
        owner,
        ttl,
        waitTimeout,
        signal: wait?.signal,
      });
    } finally {
      if (signal && onAbort) signal.removeEventListener('abort', onAbort);
      if (wait) this.#waits.delete(wait);
    }

    if (grant === null) {
      const message =
        waitTimeout === 0
          ? `lock "${key}" is held by someone else`
          : `lock "${key}" was not acquired within ${waitTimeout} ms`;
      throw new LockAcquireError(message, { details: { key, waitTimeout, adapter: entry.name } });
    }
    // A grant can race with an abort or close(): give it back rather than hand out a lock nobody waits for.
    if (this.#closing || signal?.aborted) {
      await entry.adapter.release(adapterKey, owner, grant.token).catch(() => false);
      if (this.#closing) throw closedError('LockManager');
      throw abortError(signal!, 'lock acquire');
    }

    return new Lease(entry.host, key, adapterKey, owner, grant.token, ttl, grant.expiresAt);
  }
}

/** Timers cannot wait longer than this (about 24.8 days); a longer delay would fire at once. */
const MAX_DURATION_MS = 2_147_483_647;

function assertDuration(value: unknown, what: string, allowZero = false): void {
  assertOptionalMs(value, what, allowZero);
  if (typeof value === 'number' && value > MAX_DURATION_MS) {
    throw invalidArgument(`${what} must be at most ${MAX_DURATION_MS} ms`);
  }
}

/** Structural, so signals from another realm (jsdom, a polyfill) are accepted too. */
function isAbortSignal(value: unknown): value is AbortSignal {
  const candidate = value as Partial<AbortSignal> | null;
  return (
    typeof candidate === 'object' &&
    candidate !== null &&
    typeof candidate.aborted === 'boolean' &&
    typeof candidate.addEventListener === 'function' &&
    typeof candidate.removeEventListener === 'function'
  );
}

function assertFunction(fn: unknown): asserts fn is Function {
  if (typeof fn !== 'function') throw invalidArgument(`fn must be a function, got ${typeof fn}`);
}

function assertAdapter(adapter: unknown, name: string): asserts adapter is LockAdapter {
  const candidate = adapter as Partial<Record<keyof LockAdapter, unknown>> | null;
  const complete =
    typeof candidate === 'object' &&
    candidate !== null &&
    typeof candidate.capabilities === 'object' &&
    (['connect', 'acquire', 'release', 'extend', 'close'] as const).every(
      (m) => typeof candidate[m] === 'function',
    );
  if (!complete) throw invalidArgument(`lock adapter "${name}" does not implement LockAdapter`);
}
