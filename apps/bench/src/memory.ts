/**
 * The in-memory suite: @cluster/core's memory defaults side by side with the libraries NocoBase
 * apps use today, in one process. Every peer is optional: one that fails to load is reported as
 * unavailable with its reason, and its figures stay empty.
 */
import type { Cluster } from '@cluster/core';
import {
  checkTarget,
  compareContended,
  contendedColumns,
  contendedRows,
  fmt,
  type Loaded,
  loadPeer,
  nowNs,
  peerInfo,
  Recorder,
  type ReportRow,
  ratioColumn,
  type Scenario,
  type SuiteReport,
  sinceMs,
  type TargetCheck,
} from './harness.js';
import {
  guard,
  label,
  metric,
  reasonOf,
  sequentialMethod,
  smokeKv,
  split,
  startClock,
  suiteReport,
  throughputScenario,
} from './suite.js';

// ---------------------------------------------------------------------------------------------
// Sizes (tuned for ~20-30 s on 2 cores)
// ---------------------------------------------------------------------------------------------

const CACHE_KEYS = 1_000;
const SEQ = { warmupOps: 20_000, rounds: 7, opsPerRound: 100_000, sampleEvery: 4, maxRoundMs: 500 };
const CONTENDED = { callers: 50, opsPerRound: 10_000, warmupOps: 2_000, rounds: 3 };
const STAMPEDE = { keys: 200, callersPerKey: 100, rounds: 2, warmupKeys: 20 };
const SEQ_METHOD = sequentialMethod(SEQ);
const LOCK_TTL = 5_000;
const LOCK_KEY = 'bench-lock';

// ---------------------------------------------------------------------------------------------
// Uniform views of the implementations
// ---------------------------------------------------------------------------------------------

interface Value {
  id: number;
  name: string;
  tags: string[];
  at: number;
}

interface CacheImpl {
  name: string;
  /** A fresh, empty cache (its own store) for one scenario. */
  create(label: string): Promise<CacheView>;
  close(): Promise<void>;
}

interface CacheView {
  set(key: string, value: Value): Promise<unknown>;
  get(key: string): Promise<Value | undefined>;
  wrap(key: string, fn: () => Promise<Value>): Promise<Value>;
}

interface LockImpl {
  name: string;
  runExclusive(fn: () => Promise<void>): Promise<unknown>;
  close(): Promise<void>;
}

const OURS = '@cluster/core';

async function loadOurs(): Promise<Loaded<Cluster>> {
  return loadPeer(OURS, async () => {
    const { createCluster } = await import('@cluster/core');
    const app = createCluster({ name: 'bench' });
    await app.start();
    return app;
  });
}

function oursCache(app: Cluster): CacheImpl {
  return {
    name: OURS,
    async create(name) {
      const cache = await app.cacheManager.createCache({ name });
      return {
        set: (k, v) => cache.set(k, v),
        get: (k) => cache.get<Value>(k),
        wrap: (k, fn) => cache.wrap(k, fn),
      };
    },
    close: async () => {},
  };
}

function oursLock(app: Cluster): LockImpl {
  return {
    name: OURS,
    runExclusive: (fn) => app.lockManager.runExclusive(LOCK_KEY, fn, LOCK_TTL),
    close: async () => {},
  };
}

async function loadCacheManager(): Promise<Loaded<CacheImpl>> {
  const loaded = await loadPeer('cache-manager', async () => {
    const { createCache } = await import('cache-manager');
    const { Keyv } = await import('keyv');
    const caches: ReturnType<typeof createCache>[] = [];
    const impl: CacheImpl = {
      name: '',
      async create() {
        // cache-manager 7's in-memory default: one Keyv over a Map.
        const cache = createCache({ stores: [new Keyv()] });
        caches.push(cache);
        return {
          set: (k, v) => cache.set(k, v),
          get: (k) => cache.get<Value>(k),
          wrap: (k, fn) => cache.wrap(k, fn),
        };
      },
      async close() {
        for (const cache of caches) await cache.disconnect();
      },
    };
    await smokeCache(impl);
    return impl;
  });
  if (loaded.available) loaded.value.name = label(loaded, '(keyv memory)');
  return loaded;
}

async function loadNocoBaseCache(): Promise<Loaded<CacheImpl>> {
  const loaded = await loadPeer('@nocobase/cache', async () => {
    const { CacheManager } = await import('@nocobase/cache');
    const cm = new CacheManager();
    const impl: CacheImpl = {
      name: '',
      async create(name) {
        // store 'memory' gives each cache its own cache-manager 5 memory store (lru-cache, max 2000).
        const cache = await cm.createCache({ name, store: 'memory' });
        return {
          set: (k, v) => cache.set(k, v),
          get: (k) => cache.get<Value | undefined>(k),
          wrap: (k, fn) => cache.wrap(k, fn),
        };
      },
      close: () => cm.close(),
    };
    await smokeCache(impl);
    return impl;
  });
  if (loaded.available) loaded.value.name = label(loaded, '(memory)');
  return loaded;
}

async function loadAsyncMutex(): Promise<Loaded<LockImpl>> {
  const loaded = await loadPeer('async-mutex', async () => {
    const { Mutex } = await import('async-mutex');
    const mutex = new Mutex();
    const impl: LockImpl = { name: '', runExclusive: (fn) => mutex.runExclusive(fn), close: async () => {} };
    await impl.runExclusive(async () => {});
    return impl;
  });
  if (loaded.available) loaded.value.name = label(loaded, 'Mutex');
  return loaded;
}

async function loadNocoBaseLock(): Promise<Loaded<LockImpl>> {
  const loaded = await loadPeer('@nocobase/lock-manager', async () => {
    const { LockManager } = await import('@nocobase/lock-manager');
    const lm = new LockManager();
    const impl: LockImpl = {
      name: '',
      runExclusive: (fn) => lm.runExclusive(LOCK_KEY, fn, LOCK_TTL),
      close: () => lm.close(),
    };
    await impl.runExclusive(async () => {});
    return impl;
  });
  if (loaded.available) loaded.value.name = label(loaded, '(local)');
  return loaded;
}

async function smokeCache(impl: CacheImpl): Promise<void> {
  await smokeKv(await impl.create('smoke'), makeValue(1));
}

function makeValue(id: number): Value {
  return { id, name: `user-${id}`, tags: ['admin', 'editor', `team-${id % 7}`], at: Date.now() };
}

// ---------------------------------------------------------------------------------------------
// 1. cache set + get
// ---------------------------------------------------------------------------------------------

async function cacheSetGet(impls: CacheImpl[], skipped: ReportRow[]): Promise<Scenario> {
  const values = Array.from({ length: CACHE_KEYS }, (_, i) => makeValue(i));
  const keys = values.map((_, i) => `user:${i}`);
  const wrong = new Map<string, number>();
  const cases = await Promise.all(
    impls.map(async (impl) => {
      const view = await impl.create('bench-setget');
      wrong.set(impl.name, 0);
      return {
        name: impl.name,
        async op(i: number) {
          const n = i % CACHE_KEYS;
          const key = keys[n]!;
          await view.set(key, values[n]!);
          const got = await view.get(key);
          if (got?.id !== n) wrong.set(impl.name, (wrong.get(impl.name) ?? 0) + 1);
        },
      };
    }),
  );
  return throughputScenario({
    id: 'cache.setget',
    title: `1. cache set+get, small object, ${CACHE_KEYS.toLocaleString('en-US')} keys (1 op = set + get)`,
    cases,
    settings: SEQ,
    oursName: OURS,
    skipped,
    extraColumns: [{ key: 'wrongReads', label: 'bad reads', format: fmt.int }],
    extraMetrics: (impl) => ({ wrongReads: wrong.get(impl) ?? 0 }),
    notes: [
      SEQ_METHOD,
      'ours serializes values (tagged JSON: Date/Map/Set/BigInt survive) and get returns a fresh copy; cache-manager 7 (keyv) JSON-serializes too; @nocobase/cache memory deep-clones on set (lodash.clonedeep) and get returns the stored object by reference',
    ],
  });
}

// ---------------------------------------------------------------------------------------------
// 2. lock runExclusive, sequential and contended
// ---------------------------------------------------------------------------------------------

function lockSequential(impls: LockImpl[], skipped: ReportRow[]): Promise<Scenario> {
  const empty = async () => {};
  return throughputScenario({
    id: 'lock.sequential',
    title: `2a. lock runExclusive, sequential, one key, empty async fn (ttl ${LOCK_TTL} ms)`,
    cases: impls.map((impl) => ({ name: impl.name, op: () => impl.runExclusive(empty) })),
    settings: SEQ,
    oursName: OURS,
    skipped,
    notes: [
      SEQ_METHOD,
      'ours is a lease lock: every acquisition gets a fencing token, a ttl enforced by a loss timer, renewal every ttl/3 inside runExclusive, a bounded wait and an abort signal; async-mutex is a bare in-process mutex',
      '@nocobase/lock-manager local = async-mutex + a ttl timer per call; that timer is cleared as soon as runExclusive returns its promise (before fn runs), so its ttl is not enforced (lib/lock-manager.js LocalLockAdapter.runExclusive; checked by hand: a 200 ms fn under ttl 20 ms kept the key until it finished)',
    ],
  });
}

async function lockContended(impls: LockImpl[], skipped: ReportRow[]): Promise<Scenario> {
  const cases = impls.map((impl) => ({
    name: impl.name,
    op: (_caller: number, calledAt: number, wait: Recorder) =>
      impl.runExclusive(async () => {
        wait.record(nowNs() - calledAt);
      }),
  }));
  const results = await compareContended(cases, CONTENDED);
  return {
    id: 'lock.contended',
    title: `2b. lock runExclusive, ${CONTENDED.callers} concurrent callers looping on one key`,
    columns: [
      contendedColumns.opsPerSec,
      contendedColumns.waitP50Us,
      contendedColumns.waitP99Us,
      contendedColumns.leastServedShare,
      contendedColumns.totalOps,
      ratioColumn(),
    ],
    rows: [...contendedRows(results, OURS), ...skipped],
    notes: [
      `${CONTENDED.rounds} rounds of ${CONTENDED.opsPerRound.toLocaleString('en-US')} ops shared by the callers, after ${CONTENDED.warmupOps.toLocaleString('en-US')} warm-up ops; wait = call to entering fn`,
      'least-served = min ops of one caller / mean ops per caller (1.00 = perfectly fair, 0 = starvation)',
    ],
    raw: results.map((r) => ({ ...r, perCaller: r.perCaller })),
  };
}

// ---------------------------------------------------------------------------------------------
// 3. wrap stampede
// ---------------------------------------------------------------------------------------------

interface StampedeResult {
  name: string;
  keys: number;
  callersPerKey: number;
  computes: number;
  computesPerKey: number;
  wrongResults: number;
  totalMs: number;
  keysPerSec: number;
  fill: ReturnType<Recorder['stats']>;
}

async function stampedeOne(impl: CacheImpl): Promise<StampedeResult> {
  const view = await impl.create('bench-wrap');
  let computes = 0;
  let wrong = 0;
  const fill = new Recorder();
  const runKeys = async (round: string, count: number, record: boolean) => {
    for (let k = 0; k < count; k++) {
      const key = `cold:${round}:${k}`;
      const compute = async () => {
        computes++;
        // A real loader is asynchronous: the other callers arrive while this one is in flight.
        await new Promise<void>((resolve) => setImmediate(resolve));
        return makeValue(k);
      };
      const t0 = nowNs();
      const values = await Promise.all(
        Array.from({ length: STAMPEDE.callersPerKey }, () => view.wrap(key, compute)),
      );
      if (record) fill.record(nowNs() - t0);
      for (const v of values) if (v?.id !== k) wrong++;
    }
  };
  await runKeys('warmup', STAMPEDE.warmupKeys, false);
  computes = 0;
  wrong = 0;
  const t0 = nowNs();
  for (let r = 0; r < STAMPEDE.rounds; r++) await runKeys(`r${r}`, STAMPEDE.keys, true);
  const totalMs = sinceMs(t0);
  const keys = STAMPEDE.keys * STAMPEDE.rounds;
  return {
    name: impl.name,
    keys,
    callersPerKey: STAMPEDE.callersPerKey,
    computes,
    computesPerKey: computes / keys,
    wrongResults: wrong,
    totalMs,
    keysPerSec: keys / (totalMs / 1000),
    fill: fill.stats(),
  };
}

async function wrapStampede(impls: CacheImpl[], skipped: ReportRow[]): Promise<Scenario> {
  const results: StampedeResult[] = [];
  for (const impl of impls) results.push(await stampedeOne(impl));
  const ours = results.find((r) => r.name === OURS);
  const rows: ReportRow[] = results.map((r) => ({
    impl: r.name,
    available: true,
    metrics: {
      computes: r.computes,
      computesPerKey: r.computesPerKey,
      wrongResults: r.wrongResults,
      totalMs: r.totalMs,
      keysPerSec: r.keysPerSec,
      fillP50Us: r.fill.p50Us,
      fillP99Us: r.fill.p99Us,
      oursOverThis: ours ? ours.keysPerSec / r.keysPerSec : null,
    },
  }));
  return {
    id: 'cache.wrapStampede',
    title: `3. wrap stampede: ${STAMPEDE.callersPerKey} concurrent wrap() per cold key, ${STAMPEDE.keys * STAMPEDE.rounds} cold keys`,
    columns: [
      { key: 'computes', label: 'computes', format: fmt.int },
      {
        key: 'computesPerKey',
        label: 'per key',
        format: (v) => (typeof v === 'number' ? v.toFixed(2) : '-'),
      },
      { key: 'wrongResults', label: 'bad values', format: fmt.int },
      { key: 'totalMs', label: 'time ms', format: fmt.ms },
      { key: 'fillP50Us', label: 'key p50 µs', format: fmt.us },
      { key: 'fillP99Us', label: 'key p99 µs', format: fmt.us },
      { key: 'oursOverThis', label: 'ours/this', format: fmt.ratio },
    ],
    rows: [...rows, ...skipped],
    notes: [
      'keys are filled one after another; the loader awaits one setImmediate; key p50/p99 = time for all callers of one key to get the value; ours/this compares keys/s',
    ],
    raw: results,
  };
}

// ---------------------------------------------------------------------------------------------
// Suite
// ---------------------------------------------------------------------------------------------

export async function runMemorySuite(log: (line: string) => void = () => {}): Promise<SuiteReport> {
  const started = startClock();

  log('loading implementations...');
  const ours = await loadOurs();
  const [cm7, nbCache, mutex, nbLock] = await Promise.all([
    loadCacheManager(),
    loadNocoBaseCache(),
    loadAsyncMutex(),
    loadNocoBaseLock(),
  ]);

  const oursCacheL: Loaded<CacheImpl> = ours.available
    ? { ...ours, value: oursCache(ours.value) }
    : (ours as Loaded<CacheImpl>);
  const oursLockL: Loaded<LockImpl> = ours.available
    ? { ...ours, value: oursLock(ours.value) }
    : (ours as Loaded<LockImpl>);

  const { ok: caches, skipped: cacheSkipped } = split([oursCacheL, cm7, nbCache]);
  const { ok: locks, skipped: lockSkipped } = split([oursLockL, mutex, nbLock]);

  const scenarios: Scenario[] = [];
  const names = [...caches, ...locks].map((i) => i.name);
  log('1/4 cache set+get...');
  scenarios.push(
    await guard('cache.setget', '1. cache set+get', names, () => cacheSetGet(caches, cacheSkipped)),
  );
  log('2/4 lock sequential...');
  scenarios.push(
    await guard('lock.sequential', '2a. lock sequential', names, () => lockSequential(locks, lockSkipped)),
  );
  log('3/4 lock contended...');
  scenarios.push(
    await guard('lock.contended', '2b. lock contended', names, () => lockContended(locks, lockSkipped)),
  );
  log('4/4 wrap stampede...');
  scenarios.push(
    await guard('cache.wrapStampede', '3. wrap stampede', names, () => wrapStampede(caches, cacheSkipped)),
  );

  const [setGet, lockSeq, lockCont, stampede] = scenarios as [Scenario, Scenario, Scenario, Scenario];
  const nbCacheName = nbCache.available ? nbCache.value.name : undefined;
  const nbLockName = nbLock.available ? nbLock.value.name : undefined;
  const mutexName = mutex.available ? mutex.value.name : undefined;
  const oursReason = reasonOf(ours);

  const targets: TargetCheck[] = [
    checkTarget(
      setGet.id,
      'cache set+get ops/s: ours >= 1.0x @nocobase/cache',
      { name: OURS, value: metric(setGet, OURS, 'opsPerSec') },
      {
        name: '@nocobase/cache',
        value: metric(setGet, nbCacheName, 'opsPerSec'),
        reason: oursReason ?? reasonOf(nbCache),
      },
      1.0,
    ),
    checkTarget(
      lockSeq.id,
      'lock sequential ops/s: ours >= 1.0x @nocobase/lock-manager local',
      { name: OURS, value: metric(lockSeq, OURS, 'opsPerSec') },
      {
        name: '@nocobase/lock-manager',
        value: metric(lockSeq, nbLockName, 'opsPerSec'),
        reason: oursReason ?? reasonOf(nbLock),
      },
      1.0,
    ),
    checkTarget(
      lockSeq.id,
      'lock sequential ops/s: ours >= 0.7x async-mutex',
      { name: OURS, value: metric(lockSeq, OURS, 'opsPerSec') },
      {
        name: 'async-mutex',
        value: metric(lockSeq, mutexName, 'opsPerSec'),
        reason: oursReason ?? reasonOf(mutex),
      },
      0.7,
    ),
  ];
  const computesPerKey = metric(stampede, OURS, 'computesPerKey');
  targets.push({
    scenario: stampede.id,
    description: 'wrap stampede: ours computes exactly 1 per cold key',
    ours: OURS,
    peer: '-',
    ratio: computesPerKey,
    target: 1,
    comparison: '==',
    unit: '',
    met:
      computesPerKey === null ? null : computesPerKey === 1 && metric(stampede, OURS, 'wrongResults') === 0,
    ...(computesPerKey === null && { reason: oursReason ?? 'not measured' }),
  });

  const notes = [
    'ratios are ours/peer on throughput (ops/s or keys/s): above 1.00x ours is faster',
    `contended fairness (least-served share): ${lockCont.rows
      .filter((r) => r.available)
      .map((r) => `${r.impl} ${fmt.share(r.metrics.leastServedShare ?? null)}`)
      .join(', ')}`,
  ];

  for (const impl of [...caches, ...locks]) await impl.close().catch(() => {});
  if (ours.available) await ours.value.stop().catch(() => {});

  return suiteReport('memory', started, {
    peers: [ours, cm7, nbCache, mutex, nbLock].map(peerInfo),
    scenarios,
    targets,
    notes,
  });
}
