import type { DeadLetterRecord } from '@cluster/core';
import type { Message } from 'amqplib';
import { wirePart } from '../publisher.js';

/** The queues of one channel. */
export interface ChannelNames {
  /** The quorum work queue consumers compete on. */
  readonly work: string;
  /** The dead-letter queue: tasks that failed for good, and poison messages past x-delivery-limit. */
  readonly dead: string;
  /** The delay queue for a (bucketed) delay in ms: messages wait there, expire, and dead-letter back to `work`. */
  delay(ms: number): string;
}

export function channelNames(prefix: string, channel: string): ChannelNames {
  const base = `${prefix}.q.${wirePart(channel)}`;
  return { work: base, dead: `${base}~dead`, delay: (ms) => `${base}~delay~${ms}` };
}

/**
 * Headers of task messages. A task's fields travel in ONE string header (`attempt:maxRetries:
 * timeout:publishedAt`): an AMQP field table costs encoding work per entry on every publish.
 */
export const HEADER = {
  task: 'x-cluster-task',
  error: 'x-cluster-error',
  failedAt: 'x-cluster-failed-at',
} as const;

/** A task's fields as carried in a message's properties and headers. */
export interface TaskFields {
  readonly id: string;
  /** The attempt this message is for, before counting broker redeliveries. */
  readonly attempt: number;
  readonly maxRetries: number;
  readonly timeout: number;
  readonly publishedAt: number;
}

export function numberHeader(
  headers: Record<string, unknown> | undefined,
  name: string,
  fallback: number,
): number {
  const value = headers?.[name];
  const n = typeof value === 'number' ? value : typeof value === 'string' ? Number(value) : Number.NaN;
  return Number.isFinite(n) ? n : fallback;
}

function field(parts: string[], index: number, fallback: number): number {
  const n = Number(parts[index]);
  return parts[index] !== undefined && parts[index] !== '' && Number.isFinite(n) ? n : fallback;
}

/** The fields a message carries, as published (broker redeliveries not counted). */
export function storedFieldsOf(message: Message): TaskFields {
  const headers = message.properties.headers as Record<string, unknown> | undefined;
  const raw = headers?.[HEADER.task];
  const parts =
    typeof raw === 'string' ? raw.split(':') : Buffer.isBuffer(raw) ? raw.toString().split(':') : [];
  return {
    id: String(message.properties.messageId ?? ''),
    attempt: field(parts, 0, 1),
    maxRetries: field(parts, 1, 0),
    timeout: field(parts, 2, 0),
    publishedAt: field(parts, 3, 0),
  };
}

/** The fields of a delivered task. The attempt adds the broker's redelivery count (a consumer died or a claim expired). */
export function taskFieldsOf(message: Message): TaskFields {
  const stored = storedFieldsOf(message);
  const headers = message.properties.headers as Record<string, unknown> | undefined;
  const redeliveries = numberHeader(headers, 'x-delivery-count', message.fields.redelivered ? 1 : 0);
  return redeliveries === 0 ? stored : { ...stored, attempt: stored.attempt + redeliveries };
}

/** Headers of a task message for `fields`. */
export function taskHeaders(fields: TaskFields): Record<string, unknown> {
  return {
    [HEADER.task]: `${fields.attempt}:${fields.maxRetries}:${fields.timeout}:${fields.publishedAt}`,
  };
}

/** A dead letter as stored in the dead-letter queue: written by the adapter, or by the broker's delivery limit. */
export function deadLetterOf(message: Message, deliveryLimit: number): DeadLetterRecord {
  const headers = message.properties.headers as Record<string, unknown> | undefined;
  const fields = taskFieldsOf(message);
  const error = headers?.[HEADER.error];
  const deaths = headers?.['x-death'] as { time?: { value?: number } | Date; reason?: string }[] | undefined;
  const death = Array.isArray(deaths) ? deaths[0] : undefined;
  const deathTime =
    death?.time instanceof Date ? death.time.getTime() : Number(death?.time?.value ?? 0) * 1000;
  return {
    id: fields.id,
    payload: message.content.toString(),
    // Stored by the adapter with the failed attempt; a broker dead-letter counts its redeliveries.
    attempts: typeof error === 'string' ? storedFieldsOf(message).attempt : fields.attempt,
    error:
      typeof error === 'string'
        ? error
        : `delivered more than ${deliveryLimit} times without being settled (x-delivery-limit); consumers died or lost the claim`,
    publishedAt: fields.publishedAt,
    failedAt: numberHeader(headers, HEADER.failedAt, deathTime || Date.now()),
  };
}

/**
 * The delay queue a delay goes to. One queue per distinct delay would mean one queue per jittered
 * retry, so delays are rounded UP to one of 8 steps per power of two (at most 12.5 % late, never
 * early). Every message in one delay queue has the same TTL, so they expire in arrival order and
 * a long delay never holds back a short one (per-message TTLs only expire at the head of a queue).
 */
export function delayBucket(ms: number): number {
  const whole = Math.ceil(ms);
  if (whole <= 16) return whole;
  const step = 2 ** (Math.floor(Math.log2(whole)) - 3);
  return Math.ceil(whole / step) * step;
}
