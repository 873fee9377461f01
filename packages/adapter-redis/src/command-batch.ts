import { ClusterError } from '@cluster/core';
import type { RedisClient } from './connection.js';

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

/** Items of one turn that share a tag, a script and its fixed keys and arguments: one script call. */
interface Merge {
  readonly tag: string;
  readonly script: Script;
  readonly keys: readonly string[];
  readonly args: Args;
  readonly what: string;
  readonly items: MergedItem[];
}

interface MergedItem {
  readonly keys: readonly string[];
  readonly args: Args;
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
 * pipeline: one socket write and one deadline timer instead of one of each per command. A command
 * alone in its turn goes out by itself. Batches are kept per `tag`, because a Redis Cluster
 * pipeline must stay in one slot. The flush runs in the same macrotask once the microtask queue has
 * drained, so batching adds no delay; commands of one batch keep their order.
 */
export class CommandBatcher {
  readonly #client: () => RedisClient;
  readonly #deadlineMs: number;
  readonly #pending = new Map<string, Call[]>();
  readonly #merges = new Map<string, Merge>();
  #scheduled = false;
  readonly #flush = () => {
    this.#scheduled = false;
    if (this.#merges.size > 0) {
      const merges = [...this.#merges.values()];
      this.#merges.clear();
      for (const merge of merges) this.#queueMerged(merge);
    }
    const batches = [...this.#pending.values()];
    this.#pending.clear();
    for (const calls of batches) this.#send(calls);
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
    return this.#enqueue(tag, 'EVALSHA', [script.sha, keys.length, ...keys, ...args], script.source, what);
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
  ): Promise<unknown> {
    const id = `${tag}\n${script.sha}\n${keys.join('\n')}\n${args.join('\n')}`;
    return new Promise<unknown>((resolve, reject) => {
      let merge = this.#merges.get(id);
      if (merge === undefined) {
        merge = { tag, script, keys, args, what, items: [] };
        this.#merges.set(id, merge);
      }
      let bytes = 0;
      for (const a of itemArgs) bytes += typeof a === 'string' ? a.length : 8;
      merge.items.push({ keys: itemKeys, args: itemArgs, bytes, resolve, reject });
      this.#scheduleFlush();
    });
  }

  /** Turns a merge into script calls of bounded size, queued with the other calls of its tag. */
  #queueMerged(merge: Merge): void {
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
      const keys: string[] = [...merge.keys];
      const args: (string | number)[] = [...merge.args];
      for (const item of chunk) {
        for (const k of item.keys) keys.push(k);
        for (const a of item.args) args.push(a);
      }
      this.#push(merge.tag, {
        command: 'EVALSHA',
        args: [merge.script.sha, keys.length, ...keys, ...args],
        source: merge.script.source,
        what: merge.what,
        resolve: (reply) => {
          const replies = Array.isArray(reply) ? reply : [];
          for (let i = 0; i < chunk.length; i++) chunk[i]!.resolve(replies[i]);
        },
        reject: (error) => {
          for (const item of chunk) item.reject(error);
        },
      });
    }
  }

  #push(tag: string, call: Call): void {
    let calls = this.#pending.get(tag);
    if (calls === undefined) this.#pending.set(tag, (calls = []));
    calls.push(call);
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
      this.#push(tag, { command, args, source, what, resolve, reject });
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
    const timer = setTimeout(() => {
      done = true;
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
      for (let i = 0; i < calls.length; i++) {
        const [error, value] = outcomes[i] ?? [new Error('no reply for a pipelined command'), undefined];
        if (error) calls[i]!.reject(error);
        else calls[i]!.resolve(value);
      }
    };
    if (calls.length === 1) {
      sendOne(client, calls[0]!).then(
        (value) => finish([[null, value]]),
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
              return [null, await client.call('EVAL', call.source, ...call.args.slice(1))];
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

function isNoScript(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith('NOSCRIPT');
}

async function sendOne(client: RedisClient, call: Call): Promise<unknown> {
  try {
    return await client.call(call.command, ...call.args);
  } catch (error) {
    if (!isNoScript(error) || call.source === undefined) throw error;
    return await client.call('EVAL', call.source, ...call.args.slice(1));
  }
}
