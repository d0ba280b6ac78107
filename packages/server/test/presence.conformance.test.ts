import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, it } from 'node:test';
import pino from 'pino';
import { MemoryPresenceStore } from '../src/presence/memory.ts';
import type { PresenceStore } from '../src/presence/presence.ts';
import { RedisPresenceStore } from '../src/presence/redis.ts';
import {
  cleanupRedisPrefix,
  REDIS_TEST_URL,
  redisSkipReason,
  testRedisClient,
  uniqueRedisPrefix,
} from './support/redis.ts';

/**
 * The PresenceStore contract (src/presence/presence.ts), run against every
 * backend. The tests use only the PresenceStore interface; a backend is one
 * entry in `backends`.
 */
export interface PresenceFixture {
  presence: PresenceStore;
  /**
   * Shared backends only: another instance's store on the same backend, and
   * a way to make that instance die without a word (no close, no removes).
   * A backend of one process has no peers: its `reap` never finds anyone.
   */
  peer?(): Promise<{ presence: PresenceStore; die(): Promise<void> }>;
  /** Releases everything `open` created. */
  cleanup(): Promise<void>;
}

export interface PresenceBackend {
  name: string;
  /** A reason to skip this backend (its server is not configured, say); falsy runs it. */
  skip?: string | false | undefined;
  /** Whether several instances share it (its fixtures then have `peer`); the death test runs only then. */
  shared: boolean;
  open(): Promise<PresenceFixture>;
}

const memory: PresenceBackend = {
  name: 'memory',
  shared: false,
  async open() {
    const presence = new MemoryPresenceStore();
    return { presence, cleanup: () => presence.close() };
  },
};

/** The machine's Redis, under a key prefix of this test's own, deleted after. */
const redis: PresenceBackend = {
  name: 'redis',
  skip: await redisSkipReason(),
  shared: true,
  async open() {
    const prefix = uniqueRedisPrefix('presence');
    const connect = (instanceId: string, refreshMs?: number) =>
      RedisPresenceStore.connect({
        url: REDIS_TEST_URL,
        prefix,
        instanceId,
        log: pino({ level: 'silent' }),
        refreshMs,
      });
    const presence = await connect('conformance');
    const peers: RedisPresenceStore[] = [];
    return {
      presence,
      async peer() {
        // No refresh during the test (once an hour), so a dead peer stays dead.
        const peer = await connect(`peer${peers.length}`, 3_600_000);
        peers.push(peer);
        return {
          presence: peer,
          async die() {
            // What a SIGKILL leaves: its entries, and a liveness key that is no longer refreshed and lapses.
            const client = testRedisClient();
            try {
              await client.connect();
              await client.del(peer.livenessKey);
            } finally {
              client.disconnect();
            }
          },
        };
      },
      async cleanup() {
        for (const peer of peers) await peer.close();
        await presence.close();
        await cleanupRedisPrefix(prefix);
      },
    };
  },
};

const backends: PresenceBackend[] = [memory, redis];

/** A channel name no other test uses, so backends whose data outlives a test stay isolated. */
const channel = (label: string) => `room:${label}-${randomUUID().slice(0, 8)}`;

for (const backend of backends) {
  describe(`PresenceStore conformance: ${backend.name}`, { skip: backend.skip || false }, () => {
    let fx: PresenceFixture;
    let presence: PresenceStore;

    beforeEach(async () => {
      fx = await backend.open();
      presence = fx.presence;
    });
    afterEach(async () => {
      await fx.cleanup();
    });

    it('lists an empty channel as []', async () => {
      assert.deepEqual(await presence.list(channel('empty')), []);
    });

    it("add is true only for a user's first connection", async () => {
      const ch = channel('join');
      assert.equal(await presence.add(ch, 'alice', 'c1'), true);
      assert.equal(await presence.add(ch, 'alice', 'c2'), false);
      assert.equal(await presence.add(ch, 'alice', 'c3'), false);
      assert.equal(await presence.add(ch, 'bob', 'c4'), true, 'another user joins on their first connection');
      assert.deepEqual(await presence.list(ch), [
        { user: 'alice', connections: 3 },
        { user: 'bob', connections: 1 },
      ]);
    });

    it("remove is true only for a user's last connection", async () => {
      const ch = channel('leave');
      await presence.add(ch, 'alice', 'c1');
      await presence.add(ch, 'alice', 'c2');
      assert.equal(await presence.remove(ch, 'alice', 'c1'), false);
      assert.deepEqual(await presence.list(ch), [{ user: 'alice', connections: 1 }]);
      assert.equal(await presence.remove(ch, 'alice', 'c2'), true);
      assert.deepEqual(await presence.list(ch), []);
      // After a leave, the next connection is a join again.
      assert.equal(await presence.add(ch, 'alice', 'c3'), true);
    });

    it('counts a connection added twice once', async () => {
      const ch = channel('dup');
      assert.equal(await presence.add(ch, 'alice', 'c1'), true);
      assert.equal(await presence.add(ch, 'alice', 'c1'), false);
      assert.deepEqual(await presence.list(ch), [{ user: 'alice', connections: 1 }]);
      assert.equal(await presence.remove(ch, 'alice', 'c1'), true, 'one remove undoes it');
      assert.deepEqual(await presence.list(ch), []);
    });

    it('remove of an unknown connection, user or channel is false and changes nothing', async () => {
      const ch = channel('unknown');
      assert.equal(await presence.remove(ch, 'alice', 'c1'), false, 'unknown channel');
      await presence.add(ch, 'alice', 'c1');
      assert.equal(await presence.remove(ch, 'alice', 'nope'), false, 'unknown connection');
      assert.equal(await presence.remove(ch, 'bob', 'c1'), false, "another user's connection id");
      assert.equal(await presence.remove(channel('elsewhere'), 'alice', 'c1'), false, 'another channel');
      assert.deepEqual(await presence.list(ch), [{ user: 'alice', connections: 1 }]);
      assert.equal(await presence.remove(ch, 'alice', 'c1'), true);
      assert.equal(await presence.remove(ch, 'alice', 'c1'), false, 'removed already');
    });

    it('lists users sorted by name with their connection counts', async () => {
      const ch = channel('sorted');
      const adds: Array<[string, string]> = [
        ['zoe', 'z1'],
        ['alice', 'a1'],
        ['mallory', 'm1'],
        ['alice', 'a2'],
        ['bob', 'b1'],
        ['zoe', 'z2'],
        ['zoe', 'z3'],
      ];
      for (const [user, connection] of adds) await presence.add(ch, user, connection);
      assert.deepEqual(await presence.list(ch), [
        { user: 'alice', connections: 2 },
        { user: 'bob', connections: 1 },
        { user: 'mallory', connections: 1 },
        { user: 'zoe', connections: 3 },
      ]);
    });

    it('keeps channels independent', async () => {
      const a = channel('a');
      const b = channel('b');
      assert.equal(await presence.add(a, 'alice', 'c1'), true);
      assert.equal(await presence.add(b, 'alice', 'c1'), true, 'the same connection joins another channel');
      assert.equal(await presence.add(b, 'bob', 'c2'), true);
      assert.deepEqual(await presence.list(a), [{ user: 'alice', connections: 1 }]);
      assert.equal(await presence.remove(a, 'alice', 'c1'), true);
      assert.deepEqual(await presence.list(a), []);
      assert.deepEqual(await presence.list(b), [
        { user: 'alice', connections: 1 },
        { user: 'bob', connections: 1 },
      ]);
    });

    it('is ready while its backend answers', async () => {
      // (Not ready while Redis is down: redis.test.ts, which can stop a Redis of its own.)
      assert.equal(presence.isReady(), true);
      await presence.add(channel('ready'), 'alice', 'c1');
      assert.equal(presence.isReady(), true);
    });

    it('reap never removes the connections of live instances', async () => {
      const ch = channel('alive');
      const other = channel('alive-other');
      await presence.add(ch, 'alice', 'c1');
      await presence.add(ch, 'alice', 'c2');
      await presence.add(other, 'bob', 'c3');
      assert.deepEqual(await presence.reap([ch, other, channel('never-used')]), []);
      assert.deepEqual(await presence.reap([]), []);
      assert.deepEqual(await presence.list(ch), [{ user: 'alice', connections: 2 }]);
      assert.deepEqual(await presence.list(other), [{ user: 'bob', connections: 1 }]);
      const peer = await fx.peer?.();
      if (peer) {
        await peer.presence.add(ch, 'carol', 'p1');
        assert.deepEqual(await presence.reap([ch]), [], 'a live peer is not reaped');
        assert.deepEqual(await peer.presence.reap([ch]), [], 'nor is this store, seen from the peer');
        assert.equal(await peer.presence.remove(ch, 'carol', 'p1'), true);
      }
      assert.equal(await presence.remove(ch, 'alice', 'c1'), false);
      assert.equal(await presence.remove(ch, 'alice', 'c2'), true);
      assert.equal(await presence.remove(other, 'bob', 'c3'), true);
    });

    // One process has nobody else who could die: its reap is covered by the test above.
    const sharedIt = backend.shared ? it : () => undefined;
    sharedIt("reap removes a dead instance's connections and reports each leave once", async () => {
      assert.ok(fx.peer, 'a shared backend has peers');
      const ch = channel('reap');
      const other = channel('reap-other');
      const peer = await fx.peer();
      await peer.presence.add(ch, 'casper', 'p1');
      await peer.presence.add(ch, 'casper', 'p2');
      await peer.presence.add(ch, 'alice', 'p3');
      await peer.presence.add(other, 'casper', 'p4');
      await presence.add(ch, 'alice', 'c1');
      await peer.die();
      const left = await presence.reap([ch, other]);
      const byChannel = (x: { channel: string; user: string }, y: { channel: string; user: string }) =>
        `${x.channel} ${x.user}` < `${y.channel} ${y.user}` ? -1 : 1;
      assert.deepEqual(
        left.sort(byChannel),
        [
          { channel: ch, user: 'casper' },
          { channel: other, user: 'casper' },
        ].sort(byChannel),
        'casper left both channels; alice stays through her live connection',
      );
      assert.deepEqual(await presence.reap([ch, other]), [], 'each leave is reported once');
      assert.deepEqual(await presence.list(ch), [{ user: 'alice', connections: 1 }]);
      assert.deepEqual(await presence.list(other), []);
      assert.equal(await presence.remove(ch, 'alice', 'c1'), true, 'counts are right after the reap');
      assert.equal(await presence.add(ch, 'casper', 'c2'), true, 'casper joins again as new');
      assert.equal(await presence.remove(ch, 'casper', 'c2'), true);
    });

    it('handles concurrent adds and removes consistently', async () => {
      const ch = channel('concurrent');
      const joins = await Promise.all(
        Array.from({ length: 50 }, (_, i) => presence.add(ch, `user${i % 5}`, `conn${i}`)),
      );
      assert.equal(joins.filter(Boolean).length, 5, 'one join per user');
      assert.deepEqual(
        await presence.list(ch),
        Array.from({ length: 5 }, (_, i) => ({ user: `user${i}`, connections: 10 })),
      );
      const leaves = await Promise.all(
        Array.from({ length: 50 }, (_, i) => presence.remove(ch, `user${i % 5}`, `conn${i}`)),
      );
      assert.equal(leaves.filter(Boolean).length, 5, 'one leave per user');
      assert.deepEqual(await presence.list(ch), []);
    });
  });
}
