// Connection faults (cut, blackhole, refuse) on the publishing and the consuming side, under traffic
// (the testkit's scenario): every publish is confirmed or rejected with a typed error in time, no
// confirmed task is lost, the adapter recovers by itself.
import { describeQueueFaults, RABBITMQ, requireServer, uniqueName } from '@cluster/testkit';
import { createRabbitQueue, type RabbitQueueOptions } from '../src/index.js';
import { brokerTarget, faultConnection } from './helpers/faults.js';
import { AMQP_URL, TopologyTracker } from './helpers/rabbit.js';

const available = await requireServer(RABBITMQ);
const PUBLISH_TIMEOUT = 1_500;
/**
 * A blackhole lasts past the heartbeat timeout (1 s heartbeats: noticed after 2-3 s), as a real
 * partition does before TCP gives up. The proxy DROPS bytes; real TCP retransmits them, so a
 * shorter blackhole is a delay on a real network. On the proxy, a short one silently deletes whole
 * AMQP frames mid-stream, which desynchronises delivery tags and confirms (nothing in AMQP 0-9-1
 * can detect that); see the README's "Guarantees".
 */
const BLACKHOLE_MS = 3_500;
const tracker = new TopologyTracker();

describeQueueFaults({
  name: 'rabbitmq',
  skip: !available,
  target: brokerTarget(),
  // The publish deadline, plus a loaded box.
  publishDeadlineMs: PUBLISH_TIMEOUT + 750,
  faultMs: (fault) => (fault === 'blackhole' ? BLACKHOLE_MS : 700),
  adapters: ({ side, proxy, logger }) => {
    const prefix = uniqueName('tqf');
    // A delivery a fault swallowed comes back through the broker's requeue of the dead channel.
    const common: RabbitQueueOptions = { prefix, visibilityTimeout: 30_000, publishTimeout: PUBLISH_TIMEOUT };
    const proxied: RabbitQueueOptions = { ...common, ...faultConnection(proxy), logger };
    const direct: RabbitQueueOptions = { ...common, url: AMQP_URL };
    return {
      producer: tracker.track(createRabbitQueue(side === 'publish' ? proxied : direct)),
      worker: tracker.track(createRabbitQueue(side === 'consume' ? proxied : direct)),
    };
  },
  cleanup: () => tracker.cleanup(),
});
