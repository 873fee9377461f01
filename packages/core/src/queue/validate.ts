import { ClusterError, invalidArgument } from '../errors.js';
import { assertName, assertPositiveMs } from '../internal/names.js';
import type { QueuePublishRequest } from './types.js';

/**
 * Checks a publish request at the adapter boundary. Adapters call it so that a request the manager
 * never makes (a third-party caller, a bug) fails the same typed way on every backend.
 */
export function assertQueuePublishRequest(task: QueuePublishRequest, maxPayloadBytes: number): void {
  if (typeof task !== 'object' || task === null) throw invalidArgument('task must be an object');
  assertName(task.id, 'id');
  if (typeof task.payload !== 'string') throw invalidArgument('payload must be an encoded string');
  if (!Number.isInteger(task.maxRetries) || task.maxRetries < 0) {
    throw invalidArgument('maxRetries must be a non-negative integer');
  }
  assertPositiveMs(task.timeout, 'timeout');
  assertPositiveMs(task.delay, 'delay', true);
  if (typeof task.dedupe !== 'boolean') throw invalidArgument('dedupe must be a boolean');
  // A UTF-8 byte is at most 3 per UTF-16 unit, so short payloads skip the exact count.
  if (task.payload.length * 3 > maxPayloadBytes && Buffer.byteLength(task.payload) > maxPayloadBytes) {
    throw new ClusterError(
      'PAYLOAD_TOO_LARGE',
      `payload is ${Buffer.byteLength(task.payload)} bytes, the limit is ${maxPayloadBytes}`,
    );
  }
}

/** Dead-letter ids for replay / purge: undefined (all) or an array of strings. */
export function assertDeadLetterIds(ids: readonly string[] | undefined): void {
  if (ids === undefined) return;
  if (!Array.isArray(ids) || ids.some((id) => typeof id !== 'string')) {
    throw invalidArgument('ids must be an array of strings');
  }
}
