import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { type Duplex, Writable } from 'node:stream';
import { after, afterEach, before, describe, it } from 'node:test';
import pino, { type Logger } from 'pino';
import type { Publication } from '../src/broker/broker.ts';
import { decodePublication, encodePublication, RedisBroker } from '../src/broker/redis.ts';
import { ParleyError } from '../src/errors.ts';
import { RedisPresenceStore } from '../src/presence/redis.ts';
import { type Frame, startServer, type TestServer, type TestSocket, waitUntil } from './helpers.ts';
import { createTestDatabase, postgresSkipReason, type TestDatabase } from './support/postgres.ts';
import {
  type RedisServer,
  redisServerSkipReason,
  startRedisServer,
  testRedisClient,
  uniqueRedisPrefix,
} from './support/redis.ts';
import { recordWrites } from './support/socket-writes.ts';
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy.ts';

/**
 * The Redis broker and presence store against a redis-server of this test's
 * own (so it can be stopped and restarted without touching the shared one),
 * alone and under real server instances.
 */

const silent = pino({ level: 'silent' });
const uniqueChannel = (label: string) => `room:${label}-${randomUUID().slice(0, 8)}`;
const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

function captureLog(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = pino(
    { level: 'debug' },
    new Writable({
      write(chunk, _encoding, done) {
        for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as LogLine);
        done();
      },
    }),
  );
  return { log, lines };
}

const isUnavailable = (error: unknown) => error instanceof ParleyError && error.code === 'unavailable';

describe('publication wire format', () => {
  it('round-trips offset, publishedAt, skipUser and frame', () => {
    const cases: Publication[] = [
      { channel: 'room:a', offset: 42, frame: '{"type":"message"}' },
      { channel: 'room:a', offset: 0, frame: '{"type":"typing","user":"zoë"}', skipUser: 'zoë' },
      { channel: 'room:a', offset: 9007199254740991, frame: '', publishedAt: 1763805600123 },
      { channel: 'room:a', offset: 7, frame: '0,1,x{"a":"b,c"}\n', skipUser: 'a,b', publishedAt: 0 },
    ];
    for (const publication of cases) {
      assert.deepEqual(decodePublication('room:a', encodePublication(publication)), publication);
    }
  });

  it('rejects payloads it did not write', () => {
    for (const payload of ['', '{"type":"message"}', '12', '12,', '12,,', '12,,x,', 'a,,0,{}', '1,,9,short']) {
      assert.equal(decodePublication('room:a', payload), undefined, JSON.stringify(payload));
    }
  });
});

const postgresSkip = await postgresSkipReason();

describe('Redis backends on a redis-server of their own', { skip: redisServerSkipReason() }, () => {
  let redis: RedisServer;

  before(async () => {
    redis = await startRedisServer();
  });
  after(async () => {
    await redis?.close();
  });

  describe('RedisBroker', () => {
    it('refuses to start, naming REDIS_URL, when Redis cannot be reached', async () => {
      const started = Date.now();
      await assert.rejects(
        RedisBroker.connect({ url: 'redis://127.0.0.1:1', prefix: 'x:', log: silent, connectTimeoutMs: 500 }),
        /REDIS_URL: cannot reach Redis at redis:\/\/127\.0\.0\.1:1\/? within 0\.5 s/,
      );
      assert.ok(Date.now() - started < 3000, 'gives up after the timeout');
    });

    it('fails fast while Redis is down, then resubscribes and reports the reconnect once', async () => {
      const { log, lines } = captureLog();
      const broker = await RedisBroker.connect({ url: redis.url, prefix: uniqueRedisPrefix('broker'), log });
      try {
        const received: Publication[] = [];
        broker.onPublication((publication) => received.push(publication));
        let reconnects = 0;
        broker.onReconnect(() => reconnects++);
        const ch = uniqueChannel('outage');
        await broker.subscribe(ch);
        await broker.subscribe(ch); // idempotent
        await broker.publish({ channel: ch, offset: 1, frame: 'one' });
        await waitUntil(() => received.length === 1, 'the first publication');

        await redis.stop();
        await waitUntil(() => !broker.isReady(), 'the broker to notice');
        const started = performance.now();
        await assert.rejects(broker.publish({ channel: ch, offset: 2, frame: 'two' }), isUnavailable);
        await assert.rejects(broker.subscribe(uniqueChannel('while-down')), isUnavailable);
        assert.ok(performance.now() - started < 100, 'rejects at once instead of queueing');
        await broker.unsubscribe(uniqueChannel('never-subscribed')); // a no-op, never a rejection

        await redis.restart();
        await waitUntil(() => broker.isReady() && reconnects === 1, 'the broker to reconnect', 15_000);
        await broker.publish({ channel: ch, offset: 3, frame: 'three' });
        await waitUntil(() => received.length === 2, 'a publication after the restart');
        assert.deepEqual(
          received.map((p) => p.offset),
          [1, 3],
          'resubscribed by itself; what was published while down is gone (at most once)',
        );
        const messages = (level: number) => lines.filter((l) => l.level === level).map((l) => l.msg);
        assert.deepEqual(
          messages(40).filter((m) => m.startsWith('redis connection')),
          ['redis connection lost'],
        );
        assert.deepEqual(
          messages(30).filter((m) => m.startsWith('redis connection')),
          ['redis connection restored'],
        );
        assert.equal(reconnects, 1);
      } finally {
        await broker.close();
      }
      assert.equal(broker.isReady(), false);
    });

    it('does not deliver to a channel unsubscribed while its subscribe was pending, and resubscribes the rest', async () => {
      const broker = await RedisBroker.connect({ url: redis.url, prefix: uniqueRedisPrefix('broker'), log: silent });
      try {
        const received: Publication[] = [];
        broker.onPublication((publication) => received.push(publication));
        const gone = uniqueChannel('gone');
        const kept = uniqueChannel('kept');
        const pending = broker.subscribe(gone);
        await broker.unsubscribe(gone);
        await pending;
        await broker.subscribe(kept);
        await broker.publish({ channel: gone, offset: 1, frame: 'x' });
        await broker.publish({ channel: kept, offset: 1, frame: 'y' });
        await waitUntil(() => received.length >= 1, 'the kept channel');
        assert.deepEqual(
          received.map((p) => p.channel),
          [kept],
        );
      } finally {
        await broker.close();
      }
    });

    /** Two instances' brokers on one prefix, closed after `body` whatever it does. */
    async function withTwoBrokers(body: (a: RedisBroker, b: RedisBroker) => Promise<void>): Promise<void> {
      const prefix = uniqueRedisPrefix('broker');
      const a = await RedisBroker.connect({ url: redis.url, prefix, log: silent });
      const b = await RedisBroker.connect({ url: redis.url, prefix, log: silent });
      try {
        await body(a, b);
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    }

    it("hands its own publications to its own subscribers at once and drops Redis's echo of them", () =>
      withTwoBrokers(async (a, b) => {
        const atA: Publication[] = [];
        const atB: Publication[] = [];
        a.onPublication((publication) => atA.push(publication));
        b.onPublication((publication) => atB.push(publication));
        const ch = uniqueChannel('own');
        await Promise.all([a.subscribe(ch), b.subscribe(ch)]);

        // Stored messages and ephemeral events interleaved, as a chat sends them.
        const fromA: Publication[] = [];
        for (let i = 1; i <= 50; i++) {
          fromA.push({ channel: ch, offset: 0, frame: `{"type":"typing","n":${i}}`, skipUser: 'alice' });
          fromA.push({ channel: ch, offset: i, frame: `{"type":"message","offset":${i}}`, publishedAt: 1 });
        }
        const published: Promise<void>[] = [];
        for (const publication of fromA) {
          const before = atA.length;
          published.push(a.publish(publication));
          assert.equal(atA.length, before + 1, 'handed to the own handlers within publish()');
        }
        await Promise.all(published);
        // Redis keeps order: once B's publication reaches A, every echo of A's own has reached A before it.
        const sentinel: Publication = { channel: ch, offset: 51, frame: '{"type":"message","offset":51}' };
        await b.publish(sentinel);
        await waitUntil(() => atA.length > fromA.length, "B's publication at A");
        await waitUntil(() => atB.length >= fromA.length + 1, 'everything at B');

        assert.deepEqual(atA, [...fromA, sentinel], 'A: each of its own once, in order, then the other instance’s');
        // B's own sentinel reached B at once, wherever A's echoes were by then.
        assert.deepEqual(
          atB.filter((p) => p !== sentinel),
          fromA,
          "B: A's, once each, in order",
        );
        assert.equal(atB.filter((p) => p === sentinel).length, 1, 'B: its own, once');
      }));

    it('sends the publications of one turn in one socket write, in order, and uncorks by the end of the turn', () =>
      withTwoBrokers(async (a, b) => {
        const atB: Publication[] = [];
        b.onPublication((publication) => atB.push(publication));
        const ch = uniqueChannel('turn');
        await b.subscribe(ch);

        // The publisher's socket, seen from the stream side: every write that reaches it is one of these calls.
        const socket = (a as unknown as { publisher: { stream: Duplex } }).publisher.stream;
        const writes = recordWrites(socket);

        const burst = (from: number) =>
          Array.from({ length: 100 }, (_, i) => a.publish({ channel: ch, offset: from + i, frame: `m${from + i}` }));
        const first = burst(1);
        assert.deepEqual(writes, [], 'nothing written before the turn ends');
        await Promise.all(first);
        assert.deepEqual(writes, [100], 'the 100 publications of the turn in one write');
        assert.equal(socket.writableCorked, 0, 'uncorked once the turn was over');

        // A later turn gets a write of its own.
        await Promise.all(burst(101));
        assert.deepEqual(writes, [100, 100]);
        await waitUntil(() => atB.length === 200, 'both bursts at the other instance');
        assert.deepEqual(
          atB.map((p) => p.offset),
          Array.from({ length: 200 }, (_, i) => i + 1),
          'in the order published',
        );
      }));
  });

  describe('RedisPresenceStore', () => {
    const stores: RedisPresenceStore[] = [];
    let prefix: string;

    const open = async (
      instanceId: string,
      extra: { refreshMs?: number; livenessTtlMs?: number; url?: string } = {},
    ) => {
      const store = await RedisPresenceStore.connect({
        url: extra.url ?? redis.url,
        prefix,
        instanceId,
        log: silent,
        refreshMs: extra.refreshMs,
        livenessTtlMs: extra.livenessTtlMs,
      });
      stores.push(store);
      return store;
    };

    async function deleteKey(key: string): Promise<void> {
      const client = testRedisClient(redis.url);
      try {
        await client.connect();
        await client.del(key);
      } finally {
        client.disconnect();
      }
    }

    async function exists(key: string): Promise<boolean> {
      const client = testRedisClient(redis.url);
      try {
        await client.connect();
        return (await client.exists(key)) === 1;
      } finally {
        client.disconnect();
      }
    }

    before(() => {
      prefix = uniqueRedisPrefix('presence');
    });
    afterEach(async () => {
      for (const store of stores.splice(0)) await store.close();
    });

    it('refuses to start, naming REDIS_URL, when Redis cannot be reached', async () => {
      await assert.rejects(
        RedisPresenceStore.connect({
          url: 'redis://127.0.0.1:1',
          prefix,
          instanceId: 'x',
          log: silent,
          connectTimeoutMs: 500,
        }),
        /REDIS_URL/,
      );
    });

    it('decides joins and leaves across instances', async () => {
      const a = await open('a');
      const b = await open('b');
      const ch = uniqueChannel('shared');
      assert.equal(await a.add(ch, 'alice', 'a1'), true);
      assert.equal(await b.add(ch, 'alice', 'b1'), false, 'alice is there already, on another instance');
      assert.equal(await b.add(ch, 'bob', 'b2'), true);
      const expected = [
        { user: 'alice', connections: 2 },
        { user: 'bob', connections: 1 },
      ];
      assert.deepEqual(await a.list(ch), expected);
      assert.deepEqual(await b.list(ch), expected);
      assert.equal(await a.remove(ch, 'alice', 'a1'), false);
      assert.equal(await b.remove(ch, 'alice', 'b1'), true, 'her last connection, whichever instance held it');
      assert.deepEqual(await a.list(ch), [{ user: 'bob', connections: 1 }]);
    });

    it("reaps a dead instance's members: each leave to exactly one of two concurrent reapers", async () => {
      const a = await open('a');
      const b = await open('b');
      // A ghost whose liveness refresh never runs (once an hour), killed by deleting its key.
      const ghost = await open('ghost', { refreshMs: 3_600_000 });
      const ch = uniqueChannel('haunted');
      const other = uniqueChannel('other');
      await ghost.add(ch, 'casper', 'g1');
      await ghost.add(ch, 'casper', 'g2');
      await ghost.add(ch, 'alice', 'g3');
      await ghost.add(other, 'casper', 'g4');
      await a.add(ch, 'alice', 'a1');
      assert.deepEqual(await b.reap([ch, other]), [], 'nothing to reap while the ghost is alive');
      assert.deepEqual(await a.list(ch), [
        { user: 'alice', connections: 2 },
        { user: 'casper', connections: 2 },
      ]);

      await deleteKey(ghost.livenessKey);
      assert.deepEqual(await b.list(ch), [{ user: 'alice', connections: 1 }], 'a dead owner is hidden at once');

      const results = await Promise.all([a.reap([ch, other]), b.reap([other, ch]), a.reap([ch])]);
      const leaves = results.flat().sort((x, y) => (x.channel < y.channel ? -1 : 1));
      assert.deepEqual(
        leaves,
        [
          { channel: ch, user: 'casper' },
          { channel: other, user: 'casper' },
        ].sort((x, y) => (x.channel < y.channel ? -1 : 1)),
        'casper left both channels, once each; alice did not leave (a1 is alive)',
      );
      assert.deepEqual(await a.list(ch), [{ user: 'alice', connections: 1 }]);
      assert.deepEqual(await a.reap([ch, other]), []);
      assert.equal(await a.remove(ch, 'alice', 'a1'), true, 'the counts are right after reaping');
    });

    it('counts an instance dead once its liveness TTL lapses', async () => {
      const a = await open('a');
      const ghost = await open('short-lived', { livenessTtlMs: 200, refreshMs: 3_600_000 });
      const ch = uniqueChannel('lapse');
      await ghost.add(ch, 'casper', 'g1');
      await waitUntil(async () => !(await exists(ghost.livenessKey)), 'the liveness key to expire', 5000);
      assert.deepEqual(await a.reap([ch]), [{ channel: ch, user: 'casper' }]);
    });

    it('closing deletes the liveness key, so leftovers are reaped at once', async () => {
      const a = await open('a');
      const leaving = await open('leaving');
      const ch = uniqueChannel('closing');
      await leaving.add(ch, 'dave', 'l1');
      assert.equal(await exists(leaving.livenessKey), true);
      await leaving.close();
      assert.equal(await exists(leaving.livenessKey), false);
      assert.deepEqual(await a.reap([ch]), [{ channel: ch, user: 'dave' }]);
    });

    it('rejects unavailable while Redis is away and re-registers its members when Redis lost them', async () => {
      const a = await open('a');
      const ch = uniqueChannel('restart');
      await a.add(ch, 'alice', 'a1');
      await redis.stop();
      try {
        await waitUntil(async () => {
          try {
            await a.list(ch);
            return false;
          } catch (error) {
            return isUnavailable(error);
          }
        }, 'list to reject unavailable');
        await assert.rejects(a.add(ch, 'bob', 'a2'), isUnavailable);
        await assert.rejects(a.reap([ch]), isUnavailable);
        assert.equal(a.isReady(), false, 'not ready while Redis is away');
      } finally {
        await redis.restart();
      }
      await waitUntil(() => a.isReady(), 'the presence store to be ready again', 15_000);
      // The new Redis is empty; the store puts back what its own connections hold, bob included.
      await waitUntil(
        async () => {
          try {
            return (
              JSON.stringify(await a.list(ch)) ===
              JSON.stringify([
                { user: 'alice', connections: 1 },
                { user: 'bob', connections: 1 },
              ])
            );
          } catch {
            return false;
          }
        },
        'presence to be re-registered',
        15_000,
      );
      assert.equal(await exists(a.livenessKey), true);
      await a.close();
      assert.equal(a.isReady(), false, 'not ready once closed');
    });

    it('retries after a connection cut the removals that failed during it', async () => {
      let proxy: TcpProxy | undefined;
      try {
        proxy = await startTcpProxy({ host: '127.0.0.1', port: redis.port });
        const viaProxy = await open('cut', { url: `redis://127.0.0.1:${proxy.port}` });
        const observer = await open('observer');
        const ch = uniqueChannel('cut');
        await viaProxy.add(ch, 'carol', 'c1');
        await viaProxy.add(ch, 'erin', 'c2');
        proxy.cut();
        await waitUntil(async () => {
          try {
            await viaProxy.list(ch);
            return false;
          } catch (error) {
            return isUnavailable(error);
          }
        }, 'the cut to be noticed');
        await assert.rejects(viaProxy.remove(ch, 'carol', 'c1'), isUnavailable);
        assert.deepEqual(
          await observer.list(ch),
          [
            { user: 'carol', connections: 1 },
            { user: 'erin', connections: 1 },
          ],
          'Redis kept its data; carol is still recorded',
        );
        proxy.restore();
        await waitUntil(
          async () => JSON.stringify(await observer.list(ch)) === JSON.stringify([{ user: 'erin', connections: 1 }]),
          'the failed removal to be retried',
          15_000,
        );
      } finally {
        await proxy?.close();
      }
    });
  });

  describe('server instances sharing Redis and PostgreSQL', { skip: postgresSkip }, () => {
    let database: TestDatabase;
    let a: TestServer;
    let b: TestServer;
    const sockets: TestSocket[] = [];

    const env = (instance: string, prefix: string): Record<string, string> => ({
      DATABASE_URL: database.url,
      REDIS_URL: redis.url,
      REDIS_KEY_PREFIX: prefix,
      INSTANCE_ID: instance,
      RATE_LIMIT_PER_SEC: '10000',
      RATE_LIMIT_BURST: '10000',
      SHUTDOWN_DRAIN_MS: '0',
    });

    async function connect(server: TestServer, user: string): Promise<TestSocket> {
      const socket = await server.ws('/ws', { token: await server.token(user) });
      sockets.push(socket);
      await socket.welcome();
      return socket;
    }

    before(async () => {
      database = await createTestDatabase();
      const prefix = uniqueRedisPrefix('servers');
      // One after the other: both migrate the same database.
      a = await startServer(env('a', prefix));
      b = await startServer(env('b', prefix));
    });
    after(async () => {
      for (const socket of sockets) socket.terminate();
      await a?.close();
      await b?.close();
      await database?.drop();
    });

    it('(a) delivers, lists presence and announces join/leave across instances', async () => {
      const channel = uniqueChannel('across');
      const alice = await connect(a, 'alice');
      const bob = await connect(b, 'bob');
      await alice.ok({ type: 'subscribe', channel });
      await bob.ok({ type: 'subscribe', channel });
      const join = await alice.next((f) => f.type === 'join' && f.user === 'bob', 5000, "bob's join on A");
      assert.deepEqual(join, { type: 'join', channel, user: 'bob' });

      const stored = await alice.ok({ type: 'publish', channel, data: { text: 'hello from A' } });
      const pushed = await bob.next((f) => f.type === 'message' && f.channel === channel, 5000, 'the message on B');
      assert.deepEqual(pushed.message, stored);

      const both = [
        { user: 'alice', connections: 1 },
        { user: 'bob', connections: 1 },
      ];
      assert.deepEqual((await alice.ok({ type: 'presence', channel })).users, both);
      assert.deepEqual((await bob.ok({ type: 'presence', channel })).users, both);
      const viaHttp = await b.http('GET', `/channels/${channel}/presence`, { token: await b.token('carol') });
      assert.equal(viaHttp.status, 200);
      assert.deepEqual(viaHttp.body.users, both);

      // bob's second connection, on A: no new join; his first one leaving on B: no leave.
      const bobOnA = await connect(a, 'bob');
      await bobOnA.ok({ type: 'subscribe', channel });
      assert.deepEqual((await bob.ok({ type: 'presence', channel })).users, [
        { user: 'alice', connections: 1 },
        { user: 'bob', connections: 2 },
      ]);
      await bob.ok({ type: 'unsubscribe', channel });
      const marker = await alice.ok({ type: 'publish', channel, data: { text: 'marker' } });
      await alice.next((f) => f.type === 'message' && f.message.offset === marker.offset, 5000, 'the marker');
      const bobEvents = (frames: Frame[]) =>
        frames.filter((f) => (f.type === 'join' || f.type === 'leave') && f.user === 'bob').map((f) => f.type);
      assert.deepEqual(bobEvents(alice.frames), ['join'], 'one join and no leave while bob has a connection');

      // His last connection goes: the leave reaches A.
      bobOnA.close();
      await alice.next((f) => f.type === 'leave' && f.user === 'bob', 5000, "bob's leave");
      assert.deepEqual(bobEvents(alice.frames), ['join', 'leave']);
      assert.deepEqual((await alice.ok({ type: 'presence', channel })).users, [{ user: 'alice', connections: 1 }]);
    });

    it('(b) survives a Redis restart mid-stream: every offset exactly once, in order, on the other instance', async () => {
      const channel = uniqueChannel('restart');
      const total = 300;
      const reader = await connect(b, 'reader');
      const writer = await connect(a, 'writer');
      await reader.ok({ type: 'subscribe', channel });
      const ready = async (server: TestServer) => (await server.http('GET', '/readyz')).status;
      assert.equal(await ready(a), 200);
      assert.equal(await ready(b), 200);

      for (let n = 1; n <= total; n++) {
        const message = await writer.ok({ type: 'publish', channel, data: { n } });
        assert.equal(message.offset, n);
        if (n === 100) {
          await redis.stop();
          await waitUntil(async () => (await ready(a)) === 503 && (await ready(b)) === 503, '/readyz 503 on both');
          const down = await a.http('GET', '/readyz');
          assert.equal(down.body.checks.presence, 'unreachable', '/readyz reports the presence store');
          assert.equal(down.body.checks.broker, 'unreachable');
          assert.equal(down.body.checks.store, 'ok');
        }
        if (n === 200) {
          await redis.restart();
          await waitUntil(
            async () => (await ready(a)) === 200 && (await ready(b)) === 200,
            '/readyz 200 on both',
            15_000,
          );
        }
        await delay(2); // paced: the stream spans the outage
      }

      await reader.next((f) => f.type === 'message' && f.message.offset === total, 20_000, `offset ${total} on B`);
      const offsets = reader.messages(channel).map((m) => m.offset);
      assert.deepEqual(
        offsets,
        Array.from({ length: total }, (_, i) => i + 1),
      );
      assert.deepEqual(
        reader.messages(channel).map((m) => m.data.n),
        offsets,
      );
      // Redis came back empty; the reader's instance registered its presence again.
      await waitUntil(
        async () =>
          JSON.stringify((await writer.ok({ type: 'presence', channel })).users) ===
          JSON.stringify([{ user: 'reader', connections: 1 }]),
        'presence to be re-registered after the restart',
        15_000,
      );
    });

    it("(c) announces the leave of a dead instance's user to a WebSocket subscriber", async () => {
      const channel = uniqueChannel('ghost');
      const watcher = await connect(a, 'watcher');
      const onB = await connect(b, 'bystander');
      await watcher.ok({ type: 'subscribe', channel });
      await onB.ok({ type: 'subscribe', channel });
      const ghost = await RedisPresenceStore.connect({
        url: redis.url,
        prefix: a.parley.ctx.config.redisKeyPrefix,
        instanceId: 'ghost',
        log: silent,
        refreshMs: 3_600_000,
      });
      try {
        assert.equal(await ghost.add(channel, 'casper', 'ghost-connection'), true);
        assert.deepEqual((await watcher.ok({ type: 'presence', channel })).users, [
          { user: 'bystander', connections: 1 },
          { user: 'casper', connections: 1 },
          { user: 'watcher', connections: 1 },
        ]);
        // The ghost instance dies: no more refreshes, and its liveness key is gone.
        const client = testRedisClient(redis.url);
        try {
          await client.connect();
          await client.del(ghost.livenessKey);
        } finally {
          client.disconnect();
        }
        // Both instances serve the channel and reap at once (as their timers would); the leave comes once.
        await Promise.all([a.parley.ctx.channels.reap(), b.parley.ctx.channels.reap()]);
        const leave = await watcher.next((f) => f.type === 'leave', 5000, "casper's leave");
        assert.deepEqual(leave, { type: 'leave', channel, user: 'casper' });
        const marker = await watcher.ok({ type: 'publish', channel, data: { text: 'marker' } });
        await watcher.next((f) => f.type === 'message' && f.message.offset === marker.offset, 5000, 'the marker');
        assert.equal(watcher.frames.filter((f) => f.type === 'leave').length, 1);
        assert.deepEqual((await watcher.ok({ type: 'presence', channel })).users, [
          { user: 'bystander', connections: 1 },
          { user: 'watcher', connections: 1 },
        ]);
      } finally {
        await ghost.close();
      }
    });
  });
});
