import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, it } from 'node:test';
import pino from 'pino';
import type { Broker, Publication } from '../src/broker/broker.ts';
import { MemoryBroker } from '../src/broker/memory.ts';
import { RedisBroker } from '../src/broker/redis.ts';
import { startServer, waitUntil } from './helpers.ts';
import {
  cleanupRedisPrefix,
  REDIS_TEST_URL,
  redisKeys,
  redisSkipReason,
  testRedisClient,
  uniqueRedisPrefix,
} from './support/redis.ts';

/**
 * The Broker contract (src/broker/broker.ts), run against every backend. The
 * tests use only the Broker interface; a backend is one entry in `backends`.
 * Delivery may be asynchronous (Redis), so tests wait for a condition, and a
 * publication that must not arrive is checked by publishing a later sentinel
 * on a subscribed channel and waiting for that.
 */
export interface BrokerFixture {
  broker: Broker;
  /** Backends with a server: how many subscriptions the server holds for the channel (PUBSUB NUMSUB). */
  serverSubscriptions?(channel: string): Promise<number>;
  /** Releases everything `open` created (the broker itself is closed by the tests or here). */
  cleanup(): Promise<void>;
}

export interface BrokerBackend {
  name: string;
  /** A reason to skip this backend (its server is not configured, say); falsy runs it. */
  skip?: string | false | undefined;
  /** Whether it runs on a server (its fixtures then have `serverSubscriptions`). */
  server: boolean;
  open(): Promise<BrokerFixture>;
}

const memory: BrokerBackend = {
  name: 'memory',
  server: false,
  async open() {
    const broker = new MemoryBroker();
    return { broker, cleanup: () => broker.close() };
  },
};

/** The machine's Redis, under a key prefix of this test's own, deleted after. */
const redisSkip = await redisSkipReason();
const redis: BrokerBackend = {
  name: 'redis',
  skip: redisSkip,
  server: true,
  async open() {
    const prefix = uniqueRedisPrefix('broker');
    const broker = await RedisBroker.connect({ url: REDIS_TEST_URL, prefix, log: pino({ level: 'silent' }) });
    return {
      broker,
      serverSubscriptions: (ch) => numsub(`${prefix}ch:${ch}`),
      async cleanup() {
        await broker.close();
        const left = await redisKeys(prefix);
        await cleanupRedisPrefix(prefix);
        assert.deepEqual(left, [], 'the broker leaves no keys under its prefix');
      },
    };
  },
};

/** PUBSUB NUMSUB of one Redis channel: how many connections are subscribed to it. */
async function numsub(redisChannel: string): Promise<number> {
  const client = testRedisClient();
  try {
    await client.connect();
    const reply = (await client.call('PUBSUB', 'NUMSUB', redisChannel)) as [string, number];
    return Number(reply[1]);
  } finally {
    client.disconnect();
  }
}

const backends: BrokerBackend[] = [memory, redis];

const WAIT_MS = 5000;

/** Records every publication a broker hands to its handler and lets a test wait for a condition. */
class Recorder {
  readonly received: Publication[] = [];
  private waiters: Array<{ check: () => boolean; resolve: () => void }> = [];

  constructor(broker: Broker) {
    broker.onPublication((publication) => {
      this.received.push(publication);
      this.waiters = this.waiters.filter((waiter) => {
        if (!waiter.check()) return true;
        waiter.resolve();
        return false;
      });
    });
  }

  on(channel: string): Publication[] {
    return this.received.filter((p) => p.channel === channel);
  }

  /** Resolves once `check` holds; rejects after WAIT_MS. */
  until(check: () => boolean, what: string): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.check !== check);
        reject(new Error(`timed out waiting for ${what}`));
      }, WAIT_MS);
      this.waiters.push({
        check,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  /** Waits until `count` publications arrived on `channel`. */
  count(channel: string, count: number): Promise<void> {
    return this.until(() => this.on(channel).length >= count, `${count} publication(s) on ${channel}`);
  }
}

const channel = (label: string) => `room:${label}-${randomUUID().slice(0, 8)}`;

const publication = (ch: string, offset: number, extra: Partial<Publication> = {}): Publication => ({
  channel: ch,
  offset,
  frame: JSON.stringify({ type: 'message', channel: ch, message: { offset } }),
  ...extra,
});

for (const backend of backends) {
  describe(`Broker conformance: ${backend.name}`, { skip: backend.skip || false }, () => {
    let fx: BrokerFixture;
    let broker: Broker;
    let recorder: Recorder;

    beforeEach(async () => {
      fx = await backend.open();
      broker = fx.broker;
      recorder = new Recorder(broker);
    });
    afterEach(async () => {
      await fx.cleanup();
    });

    it('delivers to the handler once subscribe has resolved', async () => {
      const ch = channel('ready');
      await broker.subscribe(ch);
      await broker.publish(publication(ch, 1));
      await recorder.count(ch, 1);
      assert.deepEqual(recorder.on(ch), [publication(ch, 1)]);
    });

    it('delivers only publications of subscribed channels', async () => {
      const subscribed = channel('yes');
      const other = channel('no');
      await broker.subscribe(subscribed);
      await broker.publish(publication(other, 1));
      await broker.publish(publication(subscribed, 1));
      await recorder.count(subscribed, 1);
      assert.deepEqual(recorder.on(other), []);
      assert.deepEqual(
        recorder.received.map((p) => p.channel),
        [subscribed],
      );
    });

    it('does not deliver what was published before subscribing', async () => {
      const ch = channel('late');
      await broker.publish(publication(ch, 1));
      await broker.subscribe(ch);
      await broker.publish(publication(ch, 2));
      await recorder.count(ch, 1);
      assert.deepEqual(
        recorder.on(ch).map((p) => p.offset),
        [2],
      );
    });

    it('delivers 1,000 publications in publish order', async () => {
      const ch = channel('order');
      await broker.subscribe(ch);
      const sent = Array.from({ length: 1000 }, (_, i) => publication(ch, i + 1));
      await Promise.all(sent.map((p) => broker.publish(p)));
      await recorder.count(ch, 1000);
      assert.deepEqual(recorder.on(ch), sent);
    });

    it('keeps per-channel order when channels interleave', async () => {
      const a = channel('a');
      const b = channel('b');
      await Promise.all([broker.subscribe(a), broker.subscribe(b)]);
      const sent: Promise<void>[] = [];
      for (let i = 1; i <= 200; i++) {
        sent.push(broker.publish(publication(a, i)));
        sent.push(broker.publish(publication(b, i)));
      }
      await Promise.all(sent);
      await recorder.count(a, 200);
      await recorder.count(b, 200);
      const expected = Array.from({ length: 200 }, (_, i) => i + 1);
      assert.deepEqual(
        recorder.on(a).map((p) => p.offset),
        expected,
      );
      assert.deepEqual(
        recorder.on(b).map((p) => p.offset),
        expected,
      );
    });

    it('stops delivering after unsubscribe', async () => {
      const ch = channel('gone');
      const sentinel = channel('sentinel');
      await Promise.all([broker.subscribe(ch), broker.subscribe(sentinel)]);
      await broker.publish(publication(ch, 1));
      await recorder.count(ch, 1);
      await broker.unsubscribe(ch);
      await broker.publish(publication(ch, 2));
      await broker.publish(publication(sentinel, 1));
      await recorder.count(sentinel, 1);
      assert.deepEqual(
        recorder.on(ch).map((p) => p.offset),
        [1],
      );
      // Subscribing again resumes delivery.
      await broker.subscribe(ch);
      await broker.publish(publication(ch, 3));
      await recorder.count(ch, 2);
      assert.deepEqual(
        recorder.on(ch).map((p) => p.offset),
        [1, 3],
      );
    });

    it('passes offset, frame and skipUser through unchanged', async () => {
      const ch = channel('fields');
      await broker.subscribe(ch);
      const frame = JSON.stringify({ type: 'typing', channel: ch, user: 'zoë', note: 'ünï 🎉 "q" \\ \n' });
      await broker.publish({ channel: ch, offset: 0, frame, skipUser: 'zoë' });
      await broker.publish({ channel: ch, offset: 9007199254740991, frame: '{"type":"message"}' });
      await recorder.count(ch, 2);
      const [typing, message] = recorder.on(ch);
      assert.equal(typing?.channel, ch);
      assert.equal(typing?.offset, 0);
      assert.equal(typing?.frame, frame);
      assert.equal(typing?.skipUser, 'zoë');
      assert.equal(message?.offset, 9007199254740991);
      assert.equal(message?.frame, '{"type":"message"}');
      assert.equal(message?.skipUser, undefined);
    });

    const serverIt = backend.server ? it : () => undefined;
    serverIt('holds a subscription on its server only while the channel is subscribed', async () => {
      const subscriptions = fx.serverSubscriptions;
      assert.ok(subscriptions, 'a backend on a server counts its subscriptions');
      const ch = channel('numsub');
      const kept = channel('numsub-kept');
      assert.equal(await subscriptions(ch), 0);
      await Promise.all([broker.subscribe(ch), broker.subscribe(kept)]);
      assert.equal(await subscriptions(ch), 1, 'one SUBSCRIBE per channel per instance');
      await broker.unsubscribe(ch);
      assert.equal(await subscriptions(ch), 0, 'gone once unsubscribed');
      assert.equal(await subscriptions(kept), 1, 'other channels stay subscribed');
      await broker.close();
      assert.equal(await subscriptions(kept), 0, 'gone once closed');
    });

    it('is ready until closed', async () => {
      assert.equal(broker.isReady(), true);
      await broker.close();
      assert.equal(broker.isReady(), false);
    });
  });
}

/**
 * The broker as the hub drives it, on a real server: the instance subscribes
 * a channel in Redis on its first local subscriber and unsubscribes after
 * its last, however the subscriber goes; once closed, the server leaves
 * nothing under its key prefix (presence hashes, liveness key).
 */
describe('a server on Redis subscribes channels only while it has local subscribers', { skip: redisSkip }, () => {
  it('PUBSUB NUMSUB follows the local subscribers, and the prefix is empty after close', async () => {
    const prefix = uniqueRedisPrefix('numsub');
    const server = await startServer({ REDIS_URL: REDIS_TEST_URL, REDIS_KEY_PREFIX: prefix, SHUTDOWN_DRAIN_MS: '0' });
    try {
      const ch = channel('hub');
      const redisChannel = `${prefix}ch:${ch}`;
      const count = () => numsub(redisChannel);
      const alice = await server.ws('/ws', { token: await server.token('alice') });
      const bob = await server.ws('/ws', { token: await server.token('bob') });
      await alice.ok({ type: 'subscribe', channel: ch });
      await bob.ok({ type: 'subscribe', channel: ch });
      assert.equal(await count(), 1, 'one subscription for the instance, not one per socket');
      await alice.ok({ type: 'unsubscribe', channel: ch });
      // bob is still here: a marker published now must reach him through the subscription.
      const marker = await alice.ok({ type: 'publish', channel: ch, data: 'marker' });
      await bob.next((f) => f.type === 'message' && f.message.offset === marker.offset, 5000, 'the marker');
      assert.equal(await count(), 1, 'still subscribed for bob');
      bob.terminate();
      await waitUntil(async () => (await count()) === 0, 'the instance to unsubscribe after its last subscriber');
      // Subscribing again subscribes again, and an unsubscribe command ends it too.
      await alice.ok({ type: 'subscribe', channel: ch });
      assert.equal(await count(), 1);
      await alice.ok({ type: 'unsubscribe', channel: ch });
      await waitUntil(async () => (await count()) === 0, 'the unsubscribe after the last unsubscribe command');
      alice.terminate();
    } finally {
      await server.close();
    }
    const left = await redisKeys(prefix);
    await cleanupRedisPrefix(prefix);
    assert.deepEqual(left, [], 'nothing left under the prefix once the server closed');
  });
});
