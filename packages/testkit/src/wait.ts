/**
 * Event-driven waiting for tests: poll a condition until it holds or a deadline passes. Deadlines
 * are generous upper bounds, never the thing asserted, so a loaded machine only makes tests slower.
 */
export async function waitFor<T>(
  check: () => T | Promise<T>,
  options: { timeout?: number; interval?: number; message?: string } = {},
): Promise<NonNullable<T>> {
  const timeout = options.timeout ?? 5_000;
  const interval = options.interval ?? 5;
  const deadline = Date.now() + timeout;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      const why = last instanceof Error ? `: ${last.message}` : '';
      throw new Error(
        `waitFor timed out after ${timeout} ms${options.message ? ` (${options.message})` : ''}${why}`,
      );
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** A promise with its resolvers, for waiting on a callback. */
export function signal<T = void>(): { promise: Promise<T>; resolve(value: T): void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Rejects if `promise` does not settle within `ms` (a hang detector, not a timing assertion). */
export async function within<T>(promise: Promise<T>, ms: number, what = 'operation'): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Counts concurrent sections and remembers the peak. */
export class PeakCounter {
  current = 0;
  peak = 0;
  enter(): void {
    this.current += 1;
    if (this.current > this.peak) this.peak = this.current;
  }
  leave(): void {
    this.current -= 1;
  }
}
