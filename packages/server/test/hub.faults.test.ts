import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Broker, Publication, PublicationHandler } from '../src/broker/broker.ts';
import { startServer, type TestSocket } from './helpers.ts';

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
 * A broker that loses, delays (so reorders) and duplicates stored-message
 * publications, as Redis pub/sub may over a bad network. Ephemeral events pass.
 */
class FaultyBroker implements Broker {
  readonly name = 'faulty';
  readonly delivery = 'at-most-once' as const;
  readonly counts = { dropped: 0, delayed: 0, duplicated: 0 };
  private readonly handlers: PublicationHandler[] = [];
  protected readonly pending = new Set<NodeJS.Timeout>();

  constructor(
    private readonly inner: Broker,
    private readonly rand: () => number,
  ) {
    inner.onPublication((publication) => this.deliver(publication));
  }

  private deliver(publication: Publication): void {
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
  async close(): Promise<void> {
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
