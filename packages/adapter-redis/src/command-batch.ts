import { ClusterError } from '@cluster/core';
import { Cluster } from 'ioredis';
import { commandTimeoutOf, type RedisClient } from './connection.js';

type Args = readonly (string | number)[];

interface Call {
  readonly command: string;
  readonly args: Args;
  /** An EVALSHA's script source: sent as EVAL (same arguments) when the server answers NOSCRIPT. */
  readonly source: string | undefined;
  readonly what: string;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

type Outcome = readonly [error: unknown, value: unknown];

interface Script {
  readonly sha: string;
  readonly source: string;
}

/**
 * Consecutive items of one turn that share a tag, a script (or command) and its fixed keys and
 * arguments: one call. Only the latest entry of a tag's batch takes more items, so merging never
 * reorders calls: `set(k)` then `get(k)` in one turn still reads what the set wrote.
 */
interface Merge {
  readonly id: string;
  readonly tag: string;
  /** A script run once for all items, or (undefined) a variadic command such as MGET. */
  readonly script: Script | undefined;
  readonly command: string;
  readonly keys: readonly string[];
  readonly args: Args;
  readonly what: string;
  readonly items: MergedItem[];
}

interface MergedItem {
  readonly keys: readonly string[];
  readonly args: Args;
  /** The plain command that does the same for this item alone (GET for one MGET key), if any. */
  readonly alone: readonly [command: string, args: Args] | undefined;
  /** Rough size of the item's arguments, to bound one call's size. */
  readonly bytes: number;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/** Bounds of one merged script call: the server runs it as one atomic step, blocking others meanwhile. */
const MAX_MERGED_ITEMS = 100;
const MAX_MERGED_BYTES = 512 * 1024;

/**
 * Sends commands in per-turn batches. Every command issued during one burst of promise callbacks
 * (1,000 publishes in a loop, the acks of 50 handlers that finished on one reply) goes out in one
 * pipeline: one socket write and one deadline timer (none on a client whose own command deadline is
 * shorter) instead of one of each per command. A command
 * issued while nothing is waiting or in flight goes out at once, by itself (a caller awaiting each
 * call pays nothing for batching); the ones after it in its turn are batched. Batches are kept per
 * `tag`, because a Redis Cluster pipeline must stay in one slot. The flush runs in the same
 * macrotask once the microtask queue has drained, so batching adds no delay. Calls keep their order:
 * consecutive items of one kind (`evalEach`, `callEach`) are merged into one command, and a call of
 * another kind in between starts a new one.
 */
export class CommandBatcher {
  readonly #client: () => RedisClient;
  readonly #deadlineMs: number;
  /** Per tag, this turn's calls and merges in call order. */
  readonly #pending = new Map<string, (Call | Merge)[]>();
  #scheduled = false;
  /** Sends (single calls or pipelines) whose replies have not all arrived. */
  #inFlight = 0;
  /** The last flush batched several calls: callers are issuing concurrently, so keep batching. */
  #concurrent = false;
  readonly #flush = () => {
    this.#scheduled = false;
    const batches = [...this.#pending.values()];
    this.#pending.clear();
    let calls = 0;
    for (const entries of batches)
      for (const entry of entries) calls += isMerge(entry) ? entry.items.length : 1;
    this.#concurrent = calls > 1;
    for (const entries of batches) {
      const out: Call[] = [];
      for (const entry of entries) {
        if (isMerge(entry)) expandMerge(entry, out);
        else out.push(entry);
      }
      this.#send(out);
    }
  };
  readonly #schedule = () => {
    // A tick queued from a microtask runs once the whole microtask queue is empty.
    process.nextTick(this.#flush);
  };

  /** `client` is asked once per batch; `deadlineMs` bounds every call (a given client may have no commandTimeout). */
  constructor(client: () => RedisClient, deadlineMs: number) {
    this.#client = client;
    this.#deadlineMs = deadlineMs;
  }

  call(tag: string, command: string, args: Args, what: string): Promise<unknown> {
    return this.#enqueue(tag, command, args, undefined, what);
  }

  /** EVALSHA `sha`, falling back to EVAL `source` when the server does not know the script yet. */
  evalScript(
    tag: string,
    script: Script,
    keys: readonly string[],
    args: Args,
    what: string,
  ): Promise<unknown> {
    return this.#enqueue(tag, 'evalsha', [script.sha, keys.length, ...keys, ...args], script.source, what);
  }

  /**
   * Runs `script` for one item, in one call with the other items of this turn that share `tag`, the
   * script and the fixed `keys` and `args`: KEYS = fixed keys then every item's keys, ARGV = fixed
   * args then every item's args, in call order. The script returns one reply per item, in order;
   * this resolves with the item's. A failed call rejects all its items.
   */
  evalEach(
    tag: string,
    script: Script,
    keys: readonly string[],
    args: Args,
    itemKeys: readonly string[],
    itemArgs: Args,
    what: string,
    alone?: readonly [command: string, args: Args],
  ): Promise<unknown> {
    const id = `${tag}\n${script.sha}\n${keys.join('\n')}\n${args.join('\n')}`;
    return this.#merge(id, tag, script, 'evalsha', keys, args, itemKeys, itemArgs, what, alone);
  }

  /**
   * One item of a variadic command (MGET, MSET, UNLINK), sent as one command with the other items of
   * this turn that share `tag`, the command and its fixed `args`. Resolves with the item's element
   * when the reply is an array (MGET), else with the whole reply.
   */
  callEach(
    tag: string,
    command: string,
    args: Args,
    itemArgs: Args,
    what: string,
    alone?: readonly [command: string, args: Args],
  ): Promise<unknown> {
    const id = `${tag}\n${command}\n${args.join('\n')}`;
    return this.#merge(id, tag, undefined, command, [], args, [], itemArgs, what, alone);
  }

  #merge(
    id: string,
    tag: string,
    script: Script | undefined,
    command: string,
    keys: readonly string[],
    args: Args,
    itemKeys: readonly string[],
    itemArgs: Args,
    what: string,
    alone: readonly [command: string, args: Args] | undefined,
  ): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      const direct = this.#idle();
      if (direct && alone) {
        this.#send([{ command: alone[0], args: alone[1], source: undefined, what, resolve, reject }]);
        return;
      }
      let bytes = 0;
      for (const a of itemArgs) bytes += typeof a === 'string' ? a.length : 8;
      const item: MergedItem = { keys: itemKeys, args: itemArgs, alone, bytes, resolve, reject };
      if (direct) {
        // As in #enqueue: nothing to merge with, so it goes out now, as a call of one item.
        const calls: Call[] = [];
        expandMerge({ id, tag, script, command, keys, args, what, items: [item] }, calls);
        this.#send(calls);
        return;
      }
      const entries = this.#entriesOf(tag);
      const last = entries[entries.length - 1];
      if (last !== undefined && isMerge(last) && last.id === id) last.items.push(item);
      else entries.push({ id, tag, script, command, keys, args, what, items: [item] });
      this.#scheduleFlush();
    });
  }

  /**
   * Nothing waiting or in flight, and no concurrent callers lately: a call has nothing to batch
   * with, and waiting for the end of the turn would only add work. Later calls of its turn see it in
   * flight and batch; a flush of several calls switches to batching until a flush of one.
   */
  #idle(): boolean {
    return this.#inFlight === 0 && !this.#scheduled && !this.#concurrent;
  }

  /** This turn's entries for `tag`, created on first use. */
  #entriesOf(tag: string): (Call | Merge)[] {
    let entries = this.#pending.get(tag);
    if (entries === undefined) this.#pending.set(tag, (entries = []));
    return entries;
  }

  #scheduleFlush(): void {
    if (!this.#scheduled) {
      this.#scheduled = true;
      queueMicrotask(this.#schedule);
    }
  }

  #enqueue(
    tag: string,
    command: string,
    args: Args,
    source: string | undefined,
    what: string,
  ): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      const call: Call = { command, args, source, what, resolve, reject };
      if (this.#idle()) {
        this.#send([call]);
        return;
      }
      this.#entriesOf(tag).push(call);
      this.#scheduleFlush();
    });
  }

  #send(calls: Call[]): void {
    let client: RedisClient;
    try {
      client = this.#client();
    } catch (error) {
      for (const call of calls) call.reject(error);
      return;
    }
    let done = false;
    this.#inFlight++;
    // A single-server client with its own, shorter command deadline settles every command by
    // itself (ioredis arms it per command): a second timer per send would only add cost.
    const timer = boundsItself(client, this.#deadlineMs)
      ? undefined
      : setTimeout(() => {
          done = true;
          this.#inFlight--;
          for (const call of calls) {
            call.reject(
              new ClusterError('TIMEOUT', `${call.what} did not complete within ${this.#deadlineMs} ms`),
            );
          }
        }, this.#deadlineMs);
    const finish = (outcomes: readonly Outcome[]) => {
      clearTimeout(timer);
      if (done) return;
      done = true;
      this.#inFlight--;
      for (let i = 0; i < calls.length; i++) {
        const [error, value] = outcomes[i] ?? [new Error('no reply for a pipelined command'), undefined];
        if (error) calls[i]!.reject(error);
        else calls[i]!.resolve(value);
      }
    };
    if (calls.length === 1) {
      const call = calls[0]!;
      sendOne(client, call).then(
        (value) => {
          clearTimeout(timer);
          if (done) return;
          done = true;
          this.#inFlight--;
          call.resolve(value);
        },
        (error: unknown) => finish([[error, undefined]]),
      );
      return;
    }
    const pipeline = client.pipeline();
    for (const { command, args } of calls) pipeline.call(command, ...args);
    pipeline.exec().then(
      async (results) => {
        const outcomes = await Promise.all(
          calls.map(async (call, i): Promise<Outcome> => {
            const [error, value] = results?.[i] ?? [new Error('no reply for a pipelined command'), undefined];
            if (!isNoScript(error) || call.source === undefined) return [error, value];
            try {
              return [null, await client.call('eval', call.source, ...call.args.slice(1))];
            } catch (retryError) {
              return [retryError, undefined];
            }
          }),
        );
        finish(outcomes);
      },
      (error: unknown) => finish(calls.map(() => [error, undefined])),
    );
  }
}

/**
 * True when `client` rejects every command by itself within `deadlineMs`: a single server with a
 * commandTimeout (a Cluster may hold commands in its own queue, untimed, while it looks for nodes).
 * A script's EVAL after NOSCRIPT follows a reply that came in time, so it too ends by then, give
 * or take the NOSCRIPT round trip.
 */
function boundsItself(client: RedisClient, deadlineMs: number): boolean {
  if (client instanceof Cluster) return false;
  const timeout = commandTimeoutOf(client);
  return typeof timeout === 'number' && timeout > 0 && timeout <= deadlineMs;
}

function isNoScript(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith('NOSCRIPT');
}

function sendOne(client: RedisClient, call: Call): Promise<unknown> {
  const sent = client.call(call.command, ...call.args);
  if (call.source === undefined) return sent;
  return sent.catch((error: unknown) => {
    if (!isNoScript(error)) throw error;
    return client.call('eval', call.source!, ...call.args.slice(1));
  });
}

/** Turns a merge into calls of bounded size, appended to `out` (a lone item as its plain command). */
function expandMerge(merge: Merge, out: Call[]): void {
  const { items } = merge;
  let start = 0;
  while (start < items.length) {
    let end = start;
    let bytes = 0;
    while (
      end < items.length &&
      end - start < MAX_MERGED_ITEMS &&
      (end === start || bytes + items[end]!.bytes <= MAX_MERGED_BYTES)
    ) {
      bytes += items[end]!.bytes;
      end++;
    }
    const chunk = items.slice(start, end);
    start = end;
    const only = chunk.length === 1 ? chunk[0]! : undefined;
    if (only?.alone) {
      // One item: its plain command (GET rather than a one-key MGET, SET rather than a script).
      out.push({
        command: only.alone[0],
        args: only.alone[1],
        source: undefined,
        what: merge.what,
        resolve: only.resolve,
        reject: only.reject,
      });
      continue;
    }
    const keys: string[] = [...merge.keys];
    const args: (string | number)[] = [...merge.args];
    for (const item of chunk) {
      for (const k of item.keys) keys.push(k);
      for (const a of item.args) args.push(a);
    }
    const { script } = merge;
    out.push({
      command: merge.command,
      args: script ? [script.sha, keys.length, ...keys, ...args] : args,
      source: script?.source,
      what: merge.what,
      resolve: (reply) => {
        if (!Array.isArray(reply)) for (const item of chunk) item.resolve(reply);
        else for (let i = 0; i < chunk.length; i++) chunk[i]!.resolve(reply[i]);
      },
      reject: (error) => {
        for (const item of chunk) item.reject(error);
      },
    });
  }
}

function isMerge(entry: Call | Merge): entry is Merge {
  return (entry as Merge).items !== undefined;
}
