// A runnable tour of @cluster/core on its in-memory defaults: three instances of one app in one
// process (one memory hub), each with the same plugin. Run: pnpm example
import { createCluster, createMemoryHub, Plugin } from '@cluster/core';

class SchemaPlugin extends Plugin {
  name = 'schema';
  collections = new Map();

  async load() {
    // Cache: computed once, then served from the cache.
    this.policy = await this.app.cache.wrap('token:policy', async () => ({ ttlMinutes: 30 }), 60_000);
    // Queue: one instance runs each task.
    this.app.eventQueue.subscribe(`${this.name}.task`, {
      concurrency: 2,
      process: async (payload, { attempt }) => {
        console.log(`[${this.app.instanceId}] ran task ${payload.n} (attempt ${attempt})`);
        taskDone();
      },
    });
  }

  // SyncMessage: the other instances reload what changed.
  async handleSyncMessage(message) {
    if (message.type === 'syncCollection') {
      this.collections.set(message.name, message.version);
      console.log(`[${this.app.instanceId}] reloaded collection ${message.name} v${message.version}`);
    }
  }

  async createCollection(name) {
    // LockManager: schema changes are serialised across instances; the token fences stale writers.
    await this.app.lockManager.runExclusive(`${this.name}:collections:${name}`, async ({ token }) => {
      const version = (this.collections.get(name) ?? 0) + 1;
      this.collections.set(name, version);
      const transaction = fakeTransaction();
      await this.sendSyncMessage({ type: 'syncCollection', name, version }, { transaction });
      transaction.commit(); // the message leaves only now
      console.log(`[${this.app.instanceId}] created ${name} v${version} under lock token ${token}`);
    });
  }
}

function fakeTransaction() {
  const callbacks = [];
  return {
    afterCommit: (cb) => callbacks.push(cb),
    commit: () => {
      for (const cb of callbacks.splice(0)) cb();
    },
  };
}

let remaining = 6;
let allDone;
const finished = new Promise((resolve) => {
  allDone = resolve;
});
function taskDone() {
  remaining -= 1;
  if (remaining === 0) allDone();
}

const hub = createMemoryHub();
const apps = [1, 2, 3].map((i) =>
  createCluster({ name: 'shop', instanceId: `node-${i}`, hub, plugins: [new SchemaPlugin()] }),
);
for (const app of apps) await app.start();

await apps[0].getPlugin('schema').createCollection('posts');
for (let n = 1; n <= 6; n++) await apps[1].eventQueue.publish('schema.task', { n }, { maxRetries: 2 });

await finished;
for (const app of apps) await app.stop();
console.log('done');
