import { type Cluster, type ClusterOptions, createCluster } from '@cluster/core';

export interface Instances extends AsyncDisposable {
  readonly apps: Cluster[];
  /** Stops every instance (in reverse start order). Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts `n` instances of one app, each built from `options(index)` (give each its own adapters,
 * all on one backend or one memory hub). If one fails to start, the started ones are stopped.
 */
export async function startInstances(
  n: number,
  options: (index: number) => ClusterOptions,
): Promise<Instances> {
  const apps: Cluster[] = [];
  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      for (const app of [...apps].reverse()) await app.stop();
    })();
    return stopping;
  };
  try {
    for (let i = 0; i < n; i++) {
      const app = createCluster(options(i));
      apps.push(app);
      await app.start();
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { apps, stop, [Symbol.asyncDispose]: stop };
}
