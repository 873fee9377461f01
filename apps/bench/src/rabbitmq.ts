import type { SuiteReport } from './harness.js';

// Written by the adapter's bench work: a side-by-side suite in the shape of redis.ts.
export async function runRabbitmqSuite(_log: (line: string) => void = () => {}): Promise<SuiteReport> {
  throw new Error('the Rabbitmq bench suite is not written yet');
}
