import { createMemoryCacheStore, createMemoryHub, createMemoryPubSub } from '@cluster/core';
import {
  describeCacheStoreConformance,
  describePubSubConformance,
  describeSyncConformance,
} from '@cluster/testkit';

// The memory adapters pass exactly the suites every other adapter must pass.
describeCacheStoreConformance({
  name: 'memory',
  backend: () => {
    const hub = createMemoryHub();
    return { create: () => createMemoryCacheStore({ hub }) };
  },
});

const pubSubBackend = () => {
  const hub = createMemoryHub();
  return { create: () => createMemoryPubSub({ hub }) };
};
describePubSubConformance({ name: 'memory', backend: pubSubBackend });
describeSyncConformance({ name: 'memory', backend: pubSubBackend });
