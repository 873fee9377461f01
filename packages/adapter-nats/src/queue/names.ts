import { assertEncodedLength, nameHash, subjectToken } from '../subjects.js';

/** The JetStream names of one queue channel (already namespaced by app in core). */
export interface ChannelNames {
  /** Work stream `<prefix>_Q_<hash>`; stream names cannot hold user text safely, so a hash. */
  readonly stream: string;
  readonly subject: string;
  /** Delayed tasks wait here until a delayer moves them into `subject` (JetStream 2.9 cannot schedule). */
  readonly delayedSubject: string;
  readonly deadLetterStream: string;
  readonly deadLetterSubject: string;
}

/** The durable pull consumer every instance of a channel shares, so they compete for its tasks. */
export const WORKERS = 'workers';
/** The durable consumer of delayed tasks, shared the same way. */
export const DELAYER = 'delayer';

export function channelNames(prefix: string, channel: string): ChannelNames {
  const token = subjectToken(channel);
  assertEncodedLength(token, 'channel');
  const hash = nameHash(channel);
  return {
    stream: `${prefix}_Q_${hash}`,
    subject: `${prefix}.q.${token}`,
    delayedSubject: `${prefix}.qd.${token}`,
    deadLetterStream: `${prefix}_DLQ_${hash}`,
    deadLetterSubject: `${prefix}.dlq.${token}`,
  };
}

/**
 * Task metadata travels in ONE header, `Cluster-Task: <maxRetries>;<timeout>;<publishedAt>;<notBefore>;<id>`
 * (notBefore empty when not delayed; the id last, as it may hold `;`), so the payload is stored and
 * delivered exactly as the manager encoded it. One header, because every header costs encoding and
 * parsing on each of the many messages.
 */
export const TASK_HEADER = 'Cluster-Task';

export interface TaskMeta {
  id: string;
  maxRetries: number;
  timeout: number;
  publishedAt: number;
  /** Epoch ms before which a delayed task must not run; 0 when not delayed. */
  notBefore: number;
}

export function encodeTaskMeta(meta: TaskMeta): string {
  return `${meta.maxRetries};${meta.timeout};${meta.publishedAt};${meta.notBefore || ''};${meta.id}`;
}

export function decodeTaskMeta(text: string | undefined): TaskMeta | undefined {
  if (!text) return undefined;
  const parts: string[] = [];
  let from = 0;
  for (let n = 0; n < 4; n++) {
    const at = text.indexOf(';', from);
    if (at < 0) return undefined;
    parts.push(text.slice(from, at));
    from = at + 1;
  }
  return {
    maxRetries: Number(parts[0]) || 0,
    timeout: Number(parts[1]) || 15_000,
    publishedAt: Number(parts[2]) || 0,
    notBefore: Number(parts[3]) || 0,
    id: text.slice(from),
  };
}
