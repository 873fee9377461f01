/**
 * Shared state for the in-memory adapters. Several `Cluster` instances created with the same hub
 * behave as separate nodes of one cluster inside one process (tests, the demo's embedded mode).
 * Each memory adapter keeps its own slice, created on first use.
 */
export class MemoryHub {
  readonly #parts = new Map<string, unknown>();

  /** The slice named `name`, created by `create` the first time it is asked for. */
  part<T>(name: string, create: () => T): T {
    let value = this.#parts.get(name) as T | undefined;
    if (value === undefined) {
      value = create();
      this.#parts.set(name, value);
    }
    return value;
  }
}

export function createMemoryHub(): MemoryHub {
  return new MemoryHub();
}
