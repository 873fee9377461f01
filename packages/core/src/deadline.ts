import { ClusterError } from './errors.js';

/**
 * Rejects with a TIMEOUT ClusterError when `promise` has not settled within `ms` (a remote call with
 * an unknown outcome: the caller must treat it as maybe done). For adapters whose client has no
 * per-call deadline of its own. The promise's own later rejection is swallowed.
 */
export function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  if (ms <= 0) {
    promise.catch(() => {});
    return Promise.reject(new ClusterError('TIMEOUT', `${what} did not complete in time`));
  }
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      promise.catch(() => {});
      reject(new ClusterError('TIMEOUT', `${what} did not complete within ${ms} ms`));
    }, ms);
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
