import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Broker, Delivery, Publication, PublicationHandler } from '../src/broker/broker.ts';
import { startServer, type TestServer, type TestSocket, waitUntil } from './helpers.ts';
import { createTestDatabase, postgresSkipReason, type TestDatabase } from './support/postgres.ts';
import { cleanupRedisPrefix, REDIS_TEST_URL, redisSkipReason, uniqueRedisPrefix } from './support/redis.ts';
import { startTcpProxy, type TcpProxy, throughProxy } from './support/tcp-proxy.ts';

const postgresSkip = await postgresSkipReason();
const redisSkip = await redisSkipReason();

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, k) => from + k);

/** A deterministic PRNG (mulberry32), so a failing run can be replayed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A real broker with a hand on what it delivers: every publication the inner
 * broker hands up goes through `intercept`, which emits it (now, later, twice)
 * or not at all. Everything else is the inner broker's.
 */
abstract class InterceptingBroker implements Broker {
  abstract readonly name: string;
  abstract readonly delivery: Delivery;
  private readonly handlers: PublicationHandler[] = [];

  constructor(protected readonly inner: Broker) {
    inner.onPublication((publication) => this.intercept(publication));
  }

  protected abstract intercept(publication: Publication): void;

  protected emit(publication: Publication): void {
    for (const handler of this.handlers) handler(publication);
  }

  onPublication(handler: PublicationHandler): void {
    this.handlers.push(handler);
  }
  onReconnect(handler: () => void): void {
    this.inner.onReconnect(handler);
  }
  publish(publication: Publication): Promise<void> {
    return this.inner.publish(publication);
  }
  subscribe(channel: string): Promise<void> {
    return this.inner.subscribe(channel);
  }
  unsubscribe(channel: string): Promise<void> {
    return this.inner.unsubscribe(channel);
  }
  isReady(): boolean {
    return this.inner.isReady();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/**
 * A broker that loses, delays (so reorders) and duplicates stored-message
 * publications, as Redis pub/sub may over a bad network. Ephemeral events pass.
 */
class FaultyBroker extends InterceptingBroker {
  readonly name = 'faulty';
  readonly delivery = 'at-most-once' as const;
  readonly counts = { dropped: 0, delayed: 0, duplicated: 0 };
  protected readonly pending = new Set<NodeJS.Timeout>();

  constructor(
    inner: Broker,
    private readonly rand: () => number,
  ) {
    super(inner);
  }

  protected intercept(publication: Publication): void {
    if (publication.offset === 0) {
      this.emit(publication);
      return;
    }
    this.schedule(publication);
  }

  protected schedule(publication: Publication): void {
    const roll = this.rand();
    if (roll < 0.1) {
      this.counts.dropped++;
      return;
    }
    if (roll < 0.2) {
      this.counts.delayed++;
      const timer = setTimeout(
        () => {
          this.pending.delete(timer);
          this.emit(publication);
        },
        Math.floor(this.rand() * 30),
      );
      this.pending.add(timer);
      return;
    }
    this.emit(publication);
    if (roll > 0.95) {
      this.counts.duplicated++;
      this.emit(publication);
    }
  }

  override async close(): Promise<void> {
    for (const timer of this.pending) clearTimeout(timer);
    await this.inner.close();
  }
}

test('a broker that drops, delays and duplicates: every subscriber still gets every offset once, in order', async (t) => {
  const seed = Number(process.env.FAULT_SEED ?? 20261122);
  let faulty: FaultyBroker | undefined;
  const server = await startServer(
    { RATE_LIMIT_PER_SEC: '100000', RATE_LIMIT_BURST: '100000' },
    {
      wrapBroker: (inner) => {
        faulty = new FaultyBroker(inner, random(seed));
        return faulty;
      },
    },
  );
  try {
    const channel = 'room:lossy';
    const readers: TestSocket[] = [];
    for (const user of ['r1', 'r2', 'r3']) {
      const socket = await server.ws('/ws', { token: await server.token(user) });
      await socket.ok({ type: 'subscribe', channel });
      readers.push(socket);
    }
    const writer = await server.ws('/ws', { token: await server.token('writer') });
    const total = 1000;
    for (let i = 1; i <= total; i += 50) {
      const batch = [];
      for (let k = i; k < i + 50; k++) batch.push(writer.ok({ type: 'publish', channel, data: k }));
      await Promise.all(batch);
    }
    // A lost last message has no successor to reveal the gap: the periodic position check finds it.
    for (const reader of readers) {
      await reader.next((f) => f.type === 'message' && f.message.offset === total, 10000, `offset ${total}`);
    }
    await writer.ok({ type: 'ping' });
    const expected = Array.from({ length: total }, (_, k) => k + 1);
    for (const reader of readers) {
      assert.deepEqual(
        reader.messages(channel).map((m) => m.offset),
        expected,
      );
      assert.deepEqual(
        reader.messages(channel).map((m) => m.data),
        expected,
      );
    }
    const counts = (faulty as FaultyBroker).counts;
    t.diagnostic(`seed ${seed}: dropped ${counts.dropped}, delayed ${counts.delayed}, duplicated ${counts.duplicated}`);
    assert.ok(counts.dropped > 50 && counts.delayed > 50 && counts.duplicated > 10, 'faults were injected');
  } finally {
    await server.close();
  }
});

/** A broker that delivers everything, in order, but late: the store is always ahead of it. */
class LaggingBroker extends FaultyBroker {
  constructor(
    inner: Broker,
    private readonly lagMs: number,
  ) {
    super(inner, () => 0.5);
  }

  protected override schedule(publication: Publication): void {
    const timer = setTimeout(() => this.emit(publication), this.lagMs);
    this.pending.add(timer);
  }
}

test('subscribing while the broker lags the store: the reply and later pushes never overlap', async () => {
  const server = await startServer(
    { RATE_LIMIT_PER_SEC: '100000', RATE_LIMIT_BURST: '100000' },
    { wrapBroker: (inner) => new LaggingBroker(inner, 80) },
  );
  try {
    const channel = 'room:lagging';
    const first = await server.ws('/ws', { token: await server.token('first') });
    const head = await first.ok({ type: 'subscribe', channel });
    const writer = await server.ws('/ws', { token: await server.token('writer') });
    const total = 300;
    const joiners: Array<{ socket: TestSocket; reply: { offset: number; messages: Array<{ offset: number }> } }> = [];
    for (let n = 1; n <= total; n += 10) {
      const batch = [];
      for (let k = n; k < n + 10; k++) batch.push(writer.ok({ type: 'publish', channel, data: k }));
      await Promise.all(batch);
      if (n % 50 === 1 && n > 1) {
        // Mid-stream, with and without `since`: the hub has not yet seen what the store just said.
        const socket = await server.ws('/ws', { token: await server.token(`joiner${n}`) });
        const since = joiners.length % 2 === 0 ? { since: { offset: n - 20, epoch: head.epoch } } : {};
        joiners.push({ socket, reply: await socket.ok({ type: 'subscribe', channel, ...since }) });
      }
    }
    for (const { socket, reply } of joiners) {
      if (reply.offset < total) await socket.next((f) => f.type === 'message' && f.message.offset === total, 5000);
      const offsets = [...reply.messages.map((m) => m.offset), ...socket.messages(channel).map((m) => m.offset)];
      const start = reply.messages[0]?.offset ?? reply.offset + 1;
      assert.deepEqual(
        offsets,
        Array.from({ length: total - start + 1 }, (_, k) => start + k),
        `joiner at offset ${reply.offset}: contiguous, no duplicate`,
      );
    }
    await first.next((f) => f.type === 'message' && f.message.offset === total, 5000);
    assert.equal(first.messages(channel).length, total);
  } finally {
    await server.close();
  }
});

/**
 * A broker the test steers: it drops the offsets in `drop`, holds those in
 * `hold` until `release`, and passes the rest. Declared reliable, so the hub
 * runs no periodic position check: a gap is found only when a later
 * publication arrives, exactly when the test lets it.
 */
class GatedBroker extends InterceptingBroker {
  readonly name = 'gated';
  readonly delivery: Delivery = 'reliable';
  readonly drop = new Set<number>();
  readonly hold = new Set<number>();
  private readonly held: Publication[] = [];

  protected intercept(publication: Publication): void {
    if (this.drop.has(publication.offset)) return;
    if (this.hold.has(publication.offset)) this.held.push(publication);
    else this.emit(publication);
  }

  heldOffsets(): number[] {
    return this.held.map((p) => p.offset);
  }

  release(): void {
    for (const publication of this.held.splice(0)) this.emit(publication);
  }
}

describe('a gap found while the store cannot be read', { skip: postgresSkip }, () => {
  let database: TestDatabase;
  let proxy: TcpProxy;

  before(async () => {
    database = await createTestDatabase();
    const target = new URL(database.url);
    proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
  });
  after(async () => {
    await proxy?.close();
    await database?.drop();
  });

  test('the hub keeps retrying the fill and skips nothing: every offset once, in order, once the store is back', async () => {
    let gate: GatedBroker | undefined;
    const server = await startServer(
      {
        DATABASE_URL: throughProxy(database.url, proxy),
        RATE_LIMIT_PER_SEC: '100000',
        RATE_LIMIT_BURST: '100000',
        LOG_LEVEL: 'info',
      },
      {
        captureLogs: true,
        wrapBroker: (inner) => {
          gate = new GatedBroker(inner);
          return gate;
        },
      },
    );
    try {
      const broker = gate as GatedBroker;
      const logged = (text: string) => server.logs.some((line) => line.includes(text));
      const channel = 'room:gap-outage';
      const readers: TestSocket[] = [];
      for (const user of ['r1', 'r2', 'r3']) {
        const socket = await server.ws('/ws', { token: await server.token(user) });
        await socket.ok({ type: 'subscribe', channel });
        readers.push(socket);
      }
      const writer = await server.ws('/ws', { token: await server.token('writer') });
      const publish = (n: number) => writer.ok({ type: 'publish', channel, data: n });
      const received = (reader: TestSocket) => reader.messages(channel).map((m) => m.offset);
      const reach = (offset: number) =>
        Promise.all(
          readers.map((r) => r.next((f) => f.type === 'message' && f.message.offset === offset, 10_000, `${offset}`)),
        );

      for (let n = 1; n <= 5; n++) await publish(n);
      await reach(5);

      // 6 is lost on the way, 7 is late: both are stored, the hub has seen neither.
      broker.drop.add(6);
      broker.hold.add(7);
      assert.equal((await publish(6)).offset, 6);
      assert.equal((await publish(7)).offset, 7);
      assert.deepEqual(broker.heldOffsets(), [7]);

      // The store goes away; then 7 arrives and reveals the gap at 6, which cannot be read now.
      proxy.cut();
      broker.release();
      await waitUntil(() => logged('could not fill an offset gap from the store'), 'the fill of the gap to fail');
      for (const reader of readers) {
        assert.deepEqual(received(reader), range(1, 5), 'nothing past the gap is delivered while it is open');
      }

      proxy.restore();
      await reach(7);
      assert.ok(logged('filled the offset gap after retrying'), 'the retry filled it');
      for (let n = 8; n <= 20; n++) await publish(n);
      await reach(20);
      await writer.ok({ type: 'ping' });
      for (const reader of readers) {
        assert.deepEqual(received(reader), range(1, 20), 'every offset exactly once, in order');
        assert.deepEqual(
          reader.messages(channel).map((m) => m.data),
          range(1, 20),
        );
      }
    } finally {
      proxy.restore();
      await server.close();
    }
  });
});

describe('two instances on PostgreSQL and Redis behind a faulty broker', { skip: postgresSkip || redisSkip }, () => {
  let database: TestDatabase;
  const prefix = uniqueRedisPrefix('faults');
  const servers: TestServer[] = [];
  const faulty: FaultyBroker[] = [];

  before(async () => {
    database = await createTestDatabase();
    const seed = Number(process.env.FAULT_SEED ?? 20261201);
    // One after the other: both migrate the same database.
    for (const [i, instance] of ['a', 'b'].entries()) {
      servers.push(
        await startServer(
          {
            DATABASE_URL: database.url,
            REDIS_URL: REDIS_TEST_URL,
            REDIS_KEY_PREFIX: prefix,
            INSTANCE_ID: instance,
            RATE_LIMIT_PER_SEC: '100000',
            RATE_LIMIT_BURST: '100000',
            SHUTDOWN_DRAIN_MS: '0',
          },
          {
            // Faults on the receiving side of each instance's Redis subscription.
            wrapBroker: (inner) => {
              const broker = new FaultyBroker(inner, random(seed + i));
              faulty.push(broker);
              return broker;
            },
          },
        ),
      );
    }
  });
  after(async () => {
    for (const server of servers) await server.close();
    await database?.drop();
    await cleanupRedisPrefix(prefix);
  });

  test('subscribers on both instances get every offset exactly once, in order', async (t) => {
    const [a, b] = servers as [TestServer, TestServer];
    const channel = 'room:lossy-cluster';
    const readers: TestSocket[] = [];
    for (const [i, server] of [a, b, a, b].entries()) {
      const socket = await server.ws('/ws', { token: await server.token(`reader${i}`) });
      await socket.ok({ type: 'subscribe', channel });
      readers.push(socket);
    }
    const writers = [
      await a.ws('/ws', { token: await a.token('writer-a') }),
      await b.ws('/ws', { token: await b.token('writer-b') }),
    ];
    const total = 600;
    // Rounds of 40, alternating instances: both publish into the channel at once.
    for (let start = 1; start <= total; start += 40) {
      const round = [];
      for (let n = start; n < start + 40 && n <= total; n++) {
        round.push((writers[n % 2] as TestSocket).ok({ type: 'publish', channel, data: n }));
      }
      await Promise.all(round);
    }
    // A lost last message has no successor: each instance's position check (every 2 s) finds it.
    for (const reader of readers) {
      await reader.next((f) => f.type === 'message' && f.message.offset === total, 15_000, `offset ${total}`);
    }
    for (const writer of writers) await writer.ok({ type: 'ping' });
    const orders = new Set<string>();
    for (const reader of readers) {
      const messages = reader.messages(channel);
      assert.deepEqual(
        messages.map((m) => m.offset),
        range(1, total),
        'contiguous, no gap, no duplicate',
      );
      orders.add(messages.map((m) => m.data).join(','));
    }
    assert.equal(orders.size, 1, 'both instances delivered the same messages at the same offsets');
    const counts = { dropped: 0, delayed: 0, duplicated: 0 };
    for (const broker of faulty) {
      counts.dropped += broker.counts.dropped;
      counts.delayed += broker.counts.delayed;
      counts.duplicated += broker.counts.duplicated;
    }
    t.diagnostic(`dropped ${counts.dropped}, delayed ${counts.delayed}, duplicated ${counts.duplicated}`);
    assert.ok(counts.dropped > 40 && counts.delayed > 40 && counts.duplicated > 10, 'faults were injected');
    assert.ok(
      faulty.every((broker) => broker.counts.dropped > 0),
      'each instance lost publications',
    );
  });
});
