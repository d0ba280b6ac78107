import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, beforeEach, describe, it } from 'node:test';
import { ParleyError } from '../src/errors.ts';
import { type Database, openDatabase } from '../src/store/database.ts';
import {
  type AppendInput,
  IDEMPOTENCY_WINDOW_MS,
  type MessageStore,
  type MessageStoreOptions,
  type StoredMessage,
} from '../src/store/store.ts';
import { createTestDatabase, postgresSkipReason, type TestDatabase } from './support/postgres.ts';

/**
 * The MessageStore contract (src/store/store.ts), run against every backend.
 * The tests below use only the MessageStore interface; a backend is one entry
 * in `backends`.
 */
export interface StoreFixture {
  store: MessageStore;
  /**
   * Durable backends only: closes the store and opens the same database
   * again, returning the new store (`cleanup` then releases that one).
   */
  reopen?(): Promise<MessageStore>;
  /** Releases everything `open` created (files, databases). */
  cleanup(): Promise<void>;
}

export interface StoreBackend {
  name: string;
  /** A reason to skip this backend (its server is not configured, say); falsy runs it. */
  skip?: string | false | undefined;
  /** Whether history outlives the process; the reopen test runs only then. */
  durable: boolean;
  /** A fresh, empty store: each call is a new database with its own epoch (`options` apply to reopens too). */
  open(options?: MessageStoreOptions): Promise<StoreFixture>;
}

const sqliteFile: StoreBackend = {
  name: 'sqlite file',
  durable: true,
  async open(options) {
    const dir = await mkdtemp(join(tmpdir(), 'parley-store-'));
    const url = `sqlite:${join(dir, 'parley.db')}`;
    let database: Database = await openDatabase(url, undefined, options);
    return {
      store: database.messages,
      async reopen() {
        await database.close();
        database = await openDatabase(url, undefined, options);
        return database.messages;
      },
      async cleanup() {
        await database.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  },
};

const sqliteMemory: StoreBackend = {
  name: 'sqlite :memory:',
  durable: false,
  async open(options) {
    const database = await openDatabase('sqlite::memory:', undefined, options);
    return { store: database.messages, cleanup: () => database.close() };
  },
};

/**
 * Each open is a database of its own on the shared server
 * (PARLEY_TEST_POSTGRES_URL). Creating and dropping one costs ~150 ms, so a
 * few are created ahead, and drops run in the background until the file ends.
 */
const postgresSkip = await postgresSkipReason();
const spareDatabases: Array<Promise<TestDatabase>> = [];
const drops = new Set<Promise<void>>();
const takeDatabase = (): Promise<TestDatabase> => {
  while (spareDatabases.length < 3) {
    const created = createTestDatabase();
    created.catch(() => undefined);
    spareDatabases.push(created);
  }
  return spareDatabases.shift() as Promise<TestDatabase>;
};
after(async () => {
  for (const spare of spareDatabases.splice(0)) drops.add(spare.then((unused) => unused.drop()));
  await Promise.all(drops);
});

const postgres: StoreBackend = {
  name: 'postgres',
  skip: postgresSkip,
  durable: true,
  async open(options) {
    const testDatabase = await takeDatabase();
    let database: Database = await openDatabase(testDatabase.url, undefined, options);
    return {
      store: database.messages,
      async reopen() {
        await database.close();
        database = await openDatabase(testDatabase.url, undefined, options);
        return database.messages;
      },
      async cleanup() {
        await database.close();
        const dropped = testDatabase.drop();
        drops.add(dropped);
      },
    };
  },
};

const backends: StoreBackend[] = [sqliteFile, sqliteMemory, postgres];

/** A channel name no other test uses, so backends whose data outlives a test stay isolated. */
const channel = (label: string) => `room:${label}-${randomUUID().slice(0, 8)}`;

const isUnavailable = (error: unknown) => {
  assert.ok(error instanceof ParleyError, `expected a ParleyError, got ${String(error)}`);
  assert.equal(error.code, 'unavailable');
  return true;
};

async function appendMany(store: MessageStore, ch: string, count: number, extra: Partial<AppendInput> = {}) {
  const messages: StoredMessage[] = [];
  for (let i = 1; i <= count; i++) {
    const { message } = await store.append({ channel: ch, from: 'alice', data: { n: i }, ...extra });
    messages.push(message);
  }
  return messages;
}

const offsets = (messages: StoredMessage[]) => messages.map((m) => m.offset);
const seq = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

for (const backend of backends) {
  describe(`MessageStore conformance: ${backend.name}`, { skip: backend.skip || false }, () => {
    let fx: StoreFixture;
    let store: MessageStore;

    beforeEach(async () => {
      fx = await backend.open();
      store = fx.store;
    });
    afterEach(async () => {
      await fx.cleanup();
    });

    it('reports offset 0 and the store epoch for an empty channel', async () => {
      assert.equal(typeof store.epoch, 'string');
      assert.ok(store.epoch.length > 0);
      assert.deepEqual(await store.position(channel('empty')), { offset: 0, epoch: store.epoch });
    });

    it('numbers appends 1, 2, 3… per channel, independently', async () => {
      const a = channel('a');
      const b = channel('b');
      const results = [];
      for (const ch of [a, a, b, a, b]) results.push(await store.append({ channel: ch, from: 'alice', data: ch }));
      assert.deepEqual(
        results.map((r) => [r.message.channel, r.message.offset, r.duplicate]),
        [
          [a, 1, false],
          [a, 2, false],
          [b, 1, false],
          [a, 3, false],
          [b, 2, false],
        ],
      );
      for (const { message } of results) {
        assert.equal(message.epoch, store.epoch);
        assert.equal(message.from, 'alice');
      }
      assert.deepEqual(await store.position(a), { offset: 3, epoch: store.epoch });
      assert.deepEqual(await store.position(b), { offset: 2, epoch: store.epoch });
    });

    it('gives 1,000 concurrent appends over 3 channels gap-free offsets, resolved in offset order', async () => {
      const channels = [channel('c0'), channel('c1'), channel('c2')];
      const resolvedOrder = new Map<string, number[]>(channels.map((ch) => [ch, []]));
      const results = await Promise.all(
        Array.from({ length: 1000 }, (_, i) => {
          const ch = channels[i % 3] as string;
          return store.append({ channel: ch, from: `user${i % 7}`, data: { i } }).then((result) => {
            resolvedOrder.get(ch)?.push(result.message.offset);
            return result;
          });
        }),
      );
      assert.equal(new Set(results.map((r) => r.message.id)).size, 1000, 'ids are unique');
      for (const [index, ch] of channels.entries()) {
        const count = index === 0 ? 334 : 333;
        const mine = results.filter((r) => r.message.channel === ch);
        assert.equal(mine.length, count);
        assert.deepEqual(
          mine.map((r) => r.message.offset).sort((x, y) => x - y),
          seq(1, count),
          'unique and gap-free',
        );
        assert.deepEqual(resolvedOrder.get(ch), seq(1, count), 'resolved in offset order');
        // Appends issued in one order are numbered in that order.
        assert.deepEqual(
          mine.map((r) => r.message.offset),
          seq(1, count),
        );
        assert.deepEqual(await store.position(ch), { offset: count, epoch: store.epoch });
        const stored = await store.range(ch, 0, count);
        assert.deepEqual(offsets(stored), seq(1, count));
        assert.deepEqual(
          stored.map((m) => m.id),
          mine.map((r) => r.message.id),
        );
      }
    });

    it('range(after, upTo) returns after < offset <= upTo, oldest first', async () => {
      const ch = channel('range');
      const other = channel('other');
      const written = await appendMany(store, ch, 10);
      await appendMany(store, other, 3);
      assert.deepEqual(await store.range(ch, 0, 10), written);
      assert.deepEqual(offsets(await store.range(ch, 3, 6)), [4, 5, 6]);
      assert.deepEqual(offsets(await store.range(ch, 8, 100)), [9, 10]);
      assert.deepEqual(offsets(await store.range(ch, 9, 10)), [10]);
      assert.deepEqual(await store.range(ch, 5, 5), []);
      assert.deepEqual(await store.range(ch, 10, 20), []);
      assert.deepEqual(await store.range(ch, 0, 0), []);
      assert.deepEqual(await store.range(channel('nothing'), 0, 10), []);
    });

    it('history returns the latest N oldest first, with hasMore exact at the edges', async () => {
      const ch = channel('history');
      const written = await appendMany(store, ch, 10);
      assert.deepEqual(await store.history(ch, undefined, 10), { messages: written, hasMore: false });
      assert.deepEqual(await store.history(ch, undefined, 11), { messages: written, hasMore: false });
      const latest9 = await store.history(ch, undefined, 9);
      assert.deepEqual(offsets(latest9.messages), seq(2, 10));
      assert.equal(latest9.hasMore, true);
      const latest3 = await store.history(ch, undefined, 3);
      assert.deepEqual(latest3.messages, written.slice(7));
      assert.equal(latest3.hasMore, true);
    });

    it('history `before` is exclusive', async () => {
      const ch = channel('before');
      await appendMany(store, ch, 10);
      const page = await store.history(ch, 5, 3);
      assert.deepEqual(offsets(page.messages), [2, 3, 4]);
      assert.equal(page.hasMore, true);
      const edge = await store.history(ch, 4, 3);
      assert.deepEqual(offsets(edge.messages), [1, 2, 3]);
      assert.equal(edge.hasMore, false, 'nothing older than offset 1');
      const short = await store.history(ch, 3, 5);
      assert.deepEqual(offsets(short.messages), [1, 2]);
      assert.equal(short.hasMore, false);
      assert.deepEqual(await store.history(ch, 1, 5), { messages: [], hasMore: false });
      const beyond = await store.history(ch, 100, 5);
      assert.deepEqual(offsets(beyond.messages), [6, 7, 8, 9, 10]);
      assert.equal(beyond.hasMore, true);
      const all = await store.history(ch, 11, 10);
      assert.deepEqual(offsets(all.messages), seq(1, 10));
      assert.equal(all.hasMore, false);
    });

    it('history with limit 1 pages one message at a time', async () => {
      const ch = channel('limit1');
      await appendMany(store, ch, 3);
      const pages: Array<[number[], boolean]> = [];
      let before: number | undefined;
      for (;;) {
        const page = await store.history(ch, before, 1);
        pages.push([offsets(page.messages), page.hasMore]);
        if (!page.hasMore) break;
        before = page.messages[0]?.offset;
      }
      assert.deepEqual(pages, [
        [[3], true],
        [[2], true],
        [[1], false],
      ]);
    });

    it('history of an empty channel is empty', async () => {
      assert.deepEqual(await store.history(channel('none'), undefined, 50), { messages: [], hasMore: false });
      assert.deepEqual(await store.history(channel('none'), 10, 50), { messages: [], hasMore: false });
    });

    it('round-trips any JSON value as data', async () => {
      const ch = channel('data');
      const values: unknown[] = [
        { text: 'hello' },
        {},
        'a string',
        '',
        0,
        42,
        -1.5,
        1e21,
        true,
        false,
        null,
        [],
        [1, 'two', null, false, { three: [3] }],
        { a: { b: { c: { d: [1, [2, [3, { e: 'deep' }]]] } } } },
        { text: 'héllo wörld, 世界, emoji 🎉👍🏽, rtl مرحبا, "quotes" \\ back\nslash \t tab \u0000 nul \u2028' },
        '🎉',
      ];
      const appended = [];
      for (const data of values) appended.push((await store.append({ channel: ch, from: 'ünï-cødé', data })).message);
      const stored = await store.range(ch, 0, values.length);
      for (const [i, data] of values.entries()) {
        assert.deepEqual(appended[i]?.data, data, `append result ${i}`);
        assert.deepEqual(stored[i]?.data, data, `stored ${i}`);
        assert.equal(stored[i]?.from, 'ünï-cødé');
      }
      assert.deepEqual(stored, appended);
      assert.deepEqual((await store.history(ch, undefined, 100)).messages, appended);
    });

    it('stamps an ISO 8601 ts and a unique id', async () => {
      const ch = channel('meta');
      const before = Date.now();
      const messages = await Promise.all(
        Array.from({ length: 20 }, (_, i) => store.append({ channel: ch, from: 'bob', data: i })),
      );
      const after = Date.now();
      const ids = new Set<string>();
      for (const { message } of messages) {
        assert.equal(typeof message.id, 'string');
        assert.ok(message.id.length > 0);
        ids.add(message.id);
        assert.match(message.ts, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
        assert.equal(new Date(message.ts).toISOString(), message.ts);
        const time = Date.parse(message.ts);
        assert.ok(time >= before - 1000 && time <= after + 1000, `ts ${message.ts} is now`);
      }
      assert.equal(ids.size, 20);
      const read = await store.range(ch, 0, 20);
      assert.deepEqual(
        read.map((m) => [m.id, m.ts]),
        messages.map(({ message }) => [message.id, message.ts]),
      );
    });

    it('returns the first message for a repeated idempotency key and stores nothing new', async () => {
      const ch = channel('idem');
      const first = await store.append({ channel: ch, from: 'alice', data: { v: 1 }, idempotencyKey: 'k1' });
      assert.equal(first.duplicate, false);
      const again = await store.append({ channel: ch, from: 'alice', data: { v: 2 }, idempotencyKey: 'k1' });
      assert.equal(again.duplicate, true);
      assert.deepEqual(again.message, first.message);
      assert.deepEqual(await store.position(ch), { offset: 1, epoch: store.epoch });
      assert.deepEqual(await store.range(ch, 0, 10), [first.message]);
      // Another key stores normally.
      const other = await store.append({ channel: ch, from: 'alice', data: { v: 3 }, idempotencyKey: 'k2' });
      assert.equal(other.duplicate, false);
      assert.equal(other.message.offset, 2);
    });

    it('deduplicates a repeated idempotency key within one batch', async () => {
      const ch = channel('idem-batch');
      const [a, b, c] = await Promise.all([
        store.append({ channel: ch, from: 'alice', data: 'first', idempotencyKey: 'same' }),
        store.append({ channel: ch, from: 'alice', data: 'second', idempotencyKey: 'same' }),
        store.append({ channel: ch, from: 'alice', data: 'unkeyed' }),
      ]);
      assert.equal(a?.duplicate, false);
      assert.equal(b?.duplicate, true);
      assert.deepEqual(b?.message, a?.message);
      assert.equal(a?.message.data, 'first');
      assert.equal(c?.duplicate, false);
      assert.equal(c?.message.offset, 2);
      assert.deepEqual(await store.position(ch), { offset: 2, epoch: store.epoch });
      assert.deepEqual(
        (await store.range(ch, 0, 10)).map((m) => m.data),
        ['first', 'unkeyed'],
      );
    });

    it('scopes idempotency keys to sender and channel', async () => {
      const ch = channel('scope');
      const elsewhere = channel('scope-other');
      const alice = await store.append({ channel: ch, from: 'alice', data: 'a', idempotencyKey: 'key' });
      const bob = await store.append({ channel: ch, from: 'bob', data: 'b', idempotencyKey: 'key' });
      const otherChannel = await store.append({ channel: elsewhere, from: 'alice', data: 'c', idempotencyKey: 'key' });
      assert.equal(bob.duplicate, false);
      assert.equal(bob.message.offset, 2);
      assert.notEqual(bob.message.id, alice.message.id);
      assert.equal(otherChannel.duplicate, false);
      assert.equal(otherChannel.message.offset, 1);
      assert.equal(otherChannel.message.channel, elsewhere);
      assert.deepEqual(await store.position(ch), { offset: 2, epoch: store.epoch });
      assert.deepEqual(await store.position(elsewhere), { offset: 1, epoch: store.epoch });
      // Each scope still deduplicates on its own.
      const bobAgain = await store.append({ channel: ch, from: 'bob', data: 'b2', idempotencyKey: 'key' });
      assert.equal(bobAgain.duplicate, true);
      assert.deepEqual(bobAgain.message, bob.message);
    });

    it('keeps an idempotency key after retention trimmed its message (PROTOCOL §3)', async () => {
      const ch = channel('idem-trim');
      const first = await store.append({ channel: ch, from: 'alice', data: 'keyed', idempotencyKey: 'k', retain: 3 });
      await appendMany(store, ch, 10, { retain: 3 });
      assert.deepEqual(offsets((await store.history(ch, undefined, 100)).messages), [9, 10, 11], 'offset 1 is gone');
      const retry = await store.append({ channel: ch, from: 'alice', data: 'retry', idempotencyKey: 'k', retain: 3 });
      assert.equal(retry.duplicate, true);
      assert.deepEqual(retry.message, first.message, 'the first stored message, although trimmed');
      assert.deepEqual(await store.position(ch), { offset: 11, epoch: store.epoch }, 'nothing new was stored');
      // Also when the retry comes in one batch with more trimming appends.
      const [again] = await Promise.all([
        store.append({ channel: ch, from: 'alice', data: 'retry 2', idempotencyKey: 'k', retain: 3 }),
        ...Array.from({ length: 5 }, (_, i) => store.append({ channel: ch, from: 'bob', data: i, retain: 3 })),
      ]);
      assert.equal(again?.duplicate, true);
      assert.deepEqual(again?.message, first.message);
      assert.deepEqual(await store.position(ch), { offset: 16, epoch: store.epoch });
    });

    it('keeps the key of a message trimmed in the batch that stored it', async () => {
      const ch = channel('idem-trim-batch');
      const [keyed] = await Promise.all([
        store.append({ channel: ch, from: 'alice', data: 'keyed', idempotencyKey: 'k', retain: 2 }),
        ...Array.from({ length: 4 }, (_, i) => store.append({ channel: ch, from: 'alice', data: i, retain: 2 })),
      ]);
      assert.equal(keyed?.message.offset, 1);
      assert.deepEqual(offsets(await store.range(ch, 0, 10)), [4, 5]);
      const retry = await store.append({ channel: ch, from: 'alice', data: 'retry', idempotencyKey: 'k' });
      assert.equal(retry.duplicate, true);
      assert.deepEqual(retry.message, keyed?.message);
    });

    it('keeps only the newest `retain` messages, offsets unchanged', async () => {
      const ch = channel('retain');
      const unlimited = channel('unlimited');
      await appendMany(store, ch, 12, { retain: 5 });
      await appendMany(store, unlimited, 12);
      assert.deepEqual(await store.position(ch), { offset: 12, epoch: store.epoch });
      const page = await store.history(ch, undefined, 100);
      assert.deepEqual(offsets(page.messages), [8, 9, 10, 11, 12]);
      assert.equal(page.hasMore, false);
      assert.deepEqual(offsets(await store.range(ch, 0, 12)), [8, 9, 10, 11, 12]);
      assert.deepEqual(
        page.messages.map((m) => m.data),
        [8, 9, 10, 11, 12].map((n) => ({ n })),
      );
      // The next append continues the numbering.
      const next = await store.append({ channel: ch, from: 'alice', data: 13, retain: 5 });
      assert.equal(next.message.offset, 13);
      assert.deepEqual(offsets((await store.history(ch, undefined, 100)).messages), [9, 10, 11, 12, 13]);
      assert.deepEqual(offsets((await store.history(unlimited, undefined, 100)).messages), seq(1, 12));
    });

    it('applies retain to appends committed together', async () => {
      const ch = channel('retain-batch');
      await Promise.all(
        Array.from({ length: 12 }, (_, i) => store.append({ channel: ch, from: 'alice', data: i, retain: 5 })),
      );
      assert.deepEqual(await store.position(ch), { offset: 12, epoch: store.epoch });
      assert.deepEqual(offsets((await store.history(ch, undefined, 100)).messages), [8, 9, 10, 11, 12]);
    });

    it('frees an idempotency key once IDEMPOTENCY_WINDOW_MS has passed', async () => {
      let now = Date.parse('2026-01-01T12:00:00.000Z');
      const timed = await backend.open({ now: () => now });
      try {
        const clocked = timed.store;
        const ch = channel('idem-window');
        const first = await clocked.append({ channel: ch, from: 'alice', data: 1, idempotencyKey: 'k' });
        assert.equal(first.message.ts, '2026-01-01T12:00:00.000Z', 'the injected clock stamps the message');
        now += IDEMPOTENCY_WINDOW_MS - 1;
        const inside = await clocked.append({ channel: ch, from: 'alice', data: 2, idempotencyKey: 'k' });
        assert.equal(inside.duplicate, true, 'one millisecond before the window ends');
        assert.deepEqual(inside.message, first.message);
        now += 1;
        const after = await clocked.append({ channel: ch, from: 'alice', data: 3, idempotencyKey: 'k' });
        assert.equal(after.duplicate, false, 'the window has passed: a new message');
        assert.equal(after.message.offset, 2);
        assert.equal(after.message.data, 3);
        // The key now answers with the new message, for a new window.
        now += IDEMPOTENCY_WINDOW_MS - 1;
        const retry = await clocked.append({ channel: ch, from: 'alice', data: 4, idempotencyKey: 'k' });
        assert.equal(retry.duplicate, true);
        assert.deepEqual(retry.message, after.message);
        // Far later (expired keys pruned meanwhile), the key is free again; other keys are unaffected.
        now += 5 * IDEMPOTENCY_WINDOW_MS;
        const other = await clocked.append({ channel: ch, from: 'alice', data: 5, idempotencyKey: 'other' });
        assert.equal(other.duplicate, false);
        const late = await clocked.append({ channel: ch, from: 'alice', data: 6, idempotencyKey: 'k' });
        assert.equal(late.duplicate, false);
        assert.deepEqual(offsets(await clocked.range(ch, 0, 10)), [1, 2, 3, 4]);
      } finally {
        await timed.cleanup();
      }
    });

    const durableIt = backend.durable ? it : () => undefined;
    durableIt('keeps its epoch and history when the same database is reopened', async () => {
      assert.ok(fx.reopen, 'a durable backend can reopen');
      const ch = channel('durable');
      const written = await appendMany(store, ch, 3);
      const epoch = store.epoch;
      store = await fx.reopen();
      assert.equal(store.epoch, epoch);
      assert.deepEqual(await store.position(ch), { offset: 3, epoch });
      assert.deepEqual(await store.range(ch, 0, 3), written);
      const next = await store.append({ channel: ch, from: 'alice', data: 'after reopen' });
      assert.equal(next.message.offset, 4);
      assert.equal(next.message.epoch, epoch);
    });

    it('has a new epoch for a new database', async () => {
      const other = await backend.open();
      try {
        assert.notEqual(other.store.epoch, store.epoch);
      } finally {
        await other.cleanup();
      }
    });

    it('flushes pending appends on close, then rejects with unavailable', async () => {
      const ch = channel('close');
      const pending = store.append({ channel: ch, from: 'alice', data: 'in flight' });
      await store.close();
      const { message } = await pending;
      assert.equal(message.offset, 1);
      await assert.rejects(store.append({ channel: ch, from: 'alice', data: 'too late' }), isUnavailable);
      await assert.rejects(store.ping(), isUnavailable);
      await store.close(); // idempotent
      if (fx.reopen) {
        store = await fx.reopen();
        assert.deepEqual(await store.position(ch), { offset: 1, epoch: store.epoch });
      }
    });

    it('ping resolves while the database answers', async () => {
      await store.ping();
    });
  });
}
