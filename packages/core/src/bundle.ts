/** Anything an adapter bundle can hold: a part that closes. */
export interface ClosablePart {
  close(): Promise<void>;
}

/** The parts, read as properties: each made the first time it is read. */
export type BundleParts<P extends Record<string, () => ClosablePart>> = {
  readonly [K in keyof P]: ReturnType<P[K]>;
};

export interface AdapterBundleOptions<P extends Record<string, () => ClosablePart>, E extends object> {
  /** How to make each part; called at most once, on first read. */
  parts: P;
  /** Closes the shared connections, after every part made so far has closed. Idempotent. */
  closeShared(): Promise<void>;
  /** More own properties, e.g. the shared `connections`. */
  extra: E;
  /** The adapter family in `toJSON()`, e.g. `redis`. */
  kind: string;
  /** What `util.inspect` shows, e.g. `RedisAdapters { keyPrefix: "cluster" }`: never connection options. */
  label: string;
}

/**
 * The parts of one adapter package over one set of connections, for `createXAdapters()` factories
 * (Redis, RabbitMQ and NATS use it; so can your own). A part is made the first time it is read, so a
 * part the app never reads opens nothing. Each part retains the shared connections and releases
 * them when it closes (`app.stop()` closes every adapter it was given); `close()` closes every part
 * made so far, then the shared connections. `toJSON` and `inspect` never walk the parts (that would
 * make them) nor show connection options.
 */
export function createAdapterBundle<P extends Record<string, () => ClosablePart>, E extends object>(
  options: AdapterBundleOptions<P, E>,
): BundleParts<P> & E & AsyncDisposable & { close(): Promise<void> } {
  const made: ClosablePart[] = [];
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      await Promise.all(made.map((part) => part.close()));
      await options.closeShared();
    })();
    return closing;
  };
  const bundle: Record<PropertyKey, unknown> = {
    ...options.extra,
    close,
    [Symbol.asyncDispose]: close,
    toJSON: () => ({ adapter: options.kind, parts: made.length }),
    [Symbol.for('nodejs.util.inspect.custom')]: () => options.label,
  };
  for (const [name, make] of Object.entries(options.parts)) {
    let part: ClosablePart | undefined;
    Object.defineProperty(bundle, name, {
      enumerable: true,
      get() {
        if (part === undefined) {
          part = make();
          made.push(part);
        }
        return part;
      },
    });
  }
  return bundle as BundleParts<P> & E & AsyncDisposable & { close(): Promise<void> };
}
