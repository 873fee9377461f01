import { createMemoryHub, createMemoryLock } from '@cluster/core';
import { describeLockConformance } from '@cluster/testkit';

describeLockConformance({
  name: 'memory',
  backend: () => {
    const hub = createMemoryHub();
    return { create: () => createMemoryLock({ hub }) };
  },
});
