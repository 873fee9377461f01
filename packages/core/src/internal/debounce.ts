/**
 * Trailing-edge debounce per key: calls within `wait` ms of each other with the same key collapse
 * into one call with the last arguments. Each subscriber owns one, so two debounced subscribers on
 * one channel both run (NocoBase keys the debouncer by channel and loses the second).
 */
export class Debouncer<A> {
  readonly #pending = new Map<string, { timer: NodeJS.Timeout; arg: A }>();

  constructor(
    readonly wait: number,
    readonly run: (arg: A) => void,
  ) {}

  push(key: string, arg: A): void {
    const pending = this.#pending.get(key);
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.#pending.delete(key);
      this.run(arg);
    }, this.wait);
    timer.unref?.();
    this.#pending.set(key, { timer, arg });
  }

  get size(): number {
    return this.#pending.size;
  }

  /** Drops every pending call (used on unsubscribe and stop: nothing runs afterwards). */
  cancel(): void {
    for (const { timer } of this.#pending.values()) clearTimeout(timer);
    this.#pending.clear();
  }
}
