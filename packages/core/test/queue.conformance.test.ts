import { createMemoryHub, createMemoryQueue } from '@cluster/core';
import { describeQueueConformance } from '@cluster/testkit';

// A short visibility timeout keeps the redelivery tests fast; redeliveryWithinMs bounds them.
describeQueueConformance({
  name: 'memory',
  redeliveryWithinMs: 1_000,
  backend: () => {
    const hub = createMemoryHub();
    return { create: () => createMemoryQueue({ hub, visibilityTimeout: 500 }) };
  },
});
