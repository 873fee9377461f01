import { ClusterError } from '@cluster/core';

/** Rejects with TIMEOUT when `promise` has not settled within `ms`. */
export function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  if (ms <= 0) {
    promise.catch(() => {});
    return Promise.reject(new ClusterError('TIMEOUT', `${what} did not complete in time`));
  }
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new ClusterError('TIMEOUT', `${what} did not complete in time`)),
      ms,
    );
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
