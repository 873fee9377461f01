import { ClusterError } from '@cluster/core';
import type { RedisClient } from './connection.js';

type Args = readonly (string | number)[];

interface Call {
  readonly command: string;
  readonly args: Args;
  /** What to send instead when the server answers NOSCRIPT (an EVALSHA's EVAL). */
  readonly onNoScript: readonly [command: string, args: Args] | undefined;
  readonly what: string;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

type Outcome = readonly [error: unknown, value: unknown];

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
  #scheduled = false;
  readonly #flush = () => {
    this.#scheduled = false;
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
    script: { readonly sha: string; readonly source: string },
    keys: readonly string[],
    args: Args,
    what: string,
  ): Promise<unknown> {
    return this.#enqueue(
      tag,
      'EVALSHA',
      [script.sha, keys.length, ...keys, ...args],
      ['EVAL', [script.source, keys.length, ...keys, ...args]],
      what,
    );
  }

  #enqueue(
    tag: string,
    command: string,
    args: Args,
    onNoScript: Call['onNoScript'],
    what: string,
  ): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      let calls = this.#pending.get(tag);
      if (calls === undefined) this.#pending.set(tag, (calls = []));
      calls.push({ command, args, onNoScript, what, resolve, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        queueMicrotask(this.#schedule);
      }
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
            if (!isNoScript(error) || call.onNoScript === undefined) return [error, value];
            try {
              return [null, await client.call(call.onNoScript[0], ...call.onNoScript[1])];
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
    if (!isNoScript(error) || call.onNoScript === undefined) throw error;
    return await client.call(call.onNoScript[0], ...call.onNoScript[1]);
  }
}
