/**
 * How a suite gets adapters. `backend()` is called once per test and stands for one shared backing
 * system (a memory hub, a Redis server under a unique prefix, ...). Every `create()` on it returns
 * a fresh adapter instance connected to that same system, so two of them behave as two nodes.
 */
export interface Backend<A> {
  create(): A | Promise<A>;
  /** Called after the test, once every adapter it created has been closed. */
  cleanup?(): void | Promise<void>;
}

export type BackendFactory<A> = () => Backend<A> | Promise<Backend<A>>;

export interface SuiteOptions<A> {
  /** Shown in the describe() title. */
  name: string;
  backend: BackendFactory<A>;
}

let counter = 0;

/** A name no other test, run or process uses: `t<random>-<n>`. */
export function uniqueName(prefix = 't'): string {
  counter += 1;
  return `${prefix}${Math.random().toString(36).slice(2, 8)}-${process.pid}-${counter}`;
}
