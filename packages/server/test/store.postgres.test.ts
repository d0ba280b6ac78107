import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import pg from 'pg';
import { ParleyError } from '../src/errors.ts';
import { type Database, openDatabase } from '../src/store/database.ts';
import {
  BATCH_SQL,
  CONNECT_TIMEOUT_MS,
  openPostgres,
  PostgresMessageStore,
  QUERY_TIMEOUT_MS,
} from '../src/store/postgres.ts';
import type { AppendResult, MessageStore } from '../src/store/store.ts';
import { type Frame, startServer, type TestServer, type TestSocket, waitUntil } from './helpers.ts';
import { createTestDatabase, postgresSkipReason, type TestDatabase } from './support/postgres.ts';
import { startTcpProxy, type TcpProxy, throughProxy } from './support/tcp-proxy.ts';

/**
 * What only PostgreSQL has to show: several instances writing one channel
 * at once, group commit, and an unreachable database. The MessageStore
 * contract itself runs in store.conformance.test.ts.
 */
const skip = await postgresSkipReason();

const channel = (label: string) => `room:${label}-${randomUUID().slice(0, 8)}`;
const seq = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const isIncreasing = (values: number[]) => values.every((value, i) => i === 0 || value > (values[i - 1] as number));

function isUnavailable(error: unknown): true {
  assert.ok(error instanceof ParleyError, `expected a ParleyError, got ${String(error)}`);
  assert.equal(error.code, 'unavailable');
  return true;
}

function pgStore(database: Database): PostgresMessageStore {
  assert.ok(database.messages instanceof PostgresMessageStore);
  return database.messages;
}

/** Yields to the event loop so the appends issued so far go out as a batch. */
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  Plans?: PlanNode[];
}

/** The reads of `relation` in an EXPLAIN (FORMAT JSON) row: "<node type> <index>". */
function scansOf(row: { 'QUERY PLAN': Array<{ Plan: PlanNode }> }, relation: string): string[] {
  const scans: string[] = [];
  const walk = (node: PlanNode): void => {
    if (node['Relation Name'] === relation && node['Node Type'] !== 'ModifyTable') {
      scans.push(`${node['Node Type']} ${node['Index Name'] ?? ''}`.trim());
    }
    for (const child of node.Plans ?? []) walk(child);
  };
  walk((row['QUERY PLAN'][0] as { Plan: PlanNode }).Plan);
  return scans;
}

/** BATCH_SQL's parameters for `n` appends to one channel. */
function batchValues(n: number, ch: string, keys: boolean, retain: number | null): unknown[] {
  const array = (value: (i: number) => unknown) => Array.from({ length: n }, (_, i) => value(i));
  const now = Date.now();
  return [
    array((i) => i),
    array(() => ch),
    array(() => 'alice'),
    array((i) => String(i)),
    array((i) => (keys ? `new-${i}` : null)),
    array(() => randomUUID()),
    array(() => retain),
    now,
    now - 600_000,
  ];
}

describe('PostgreSQL message store', { skip }, () => {
  let testDatabase: TestDatabase;
  const open: Database[] = [];
  const openStore = async (url = testDatabase.url) => {
    const database = await openDatabase(url);
    open.push(database);
    return database;
  };

  before(async () => {
    testDatabase = await createTestDatabase();
  });
  after(async () => {
    for (const database of open) await database.close();
    await testDatabase?.drop();
  });

  it('migrates once when several instances start together, and they share one epoch', async () => {
    const fresh = await createTestDatabase();
    try {
      const databases = await Promise.all(Array.from({ length: 4 }, () => openPostgres(fresh.url)));
      try {
        const epochs = new Set(databases.map((database) => database.messages.epoch));
        assert.equal(epochs.size, 1);
        const [first] = databases;
        assert.ok(first);
        const rows = await first.db.selectFrom('meta').selectAll().execute();
        assert.equal(rows.length, 1, 'one epoch row');
      } finally {
        for (const database of databases) await database.close();
      }
    } finally {
      await fresh.drop();
    }
  });

  it('(a) two instances appending to one channel at once get offsets 1..1000, each in its call order', async () => {
    const a = pgStore(await openStore());
    const b = pgStore(await openStore());
    const ch = channel('two-instances');
    const issued: Record<'a' | 'b', Array<Promise<AppendResult>>> = { a: [], b: [] };
    // 100 rounds of 5 + 5: within a round both stores have batches in flight together, and
    // each round starts after the last one committed, so every round's offsets come after
    // the other instance's previous round: the two must interleave, whoever wins each race.
    for (let round = 0; round < 100; round++) {
      const batch: Array<Promise<AppendResult>> = [];
      for (let k = 0; k < 5; k++) {
        const fromA = a.append({ channel: ch, from: 'alice', data: { store: 'a', round, k } });
        const fromB = b.append({ channel: ch, from: 'bob', data: { store: 'b', round, k } });
        issued.a.push(fromA);
        issued.b.push(fromB);
        batch.push(fromA, fromB);
      }
      if (round % 2 === 1) await Promise.all(batch);
      else await nextTurn();
    }
    const fromA = (await Promise.all(issued.a)).map((r) => r.message.offset);
    const fromB = (await Promise.all(issued.b)).map((r) => r.message.offset);
    assert.deepEqual(
      [...fromA, ...fromB].sort((x, y) => x - y),
      seq(1, 1000),
      'exactly 1..1000: no gap, no duplicate',
    );
    assert.ok(isIncreasing(fromA), "a's appends are numbered in a's call order");
    assert.ok(isIncreasing(fromB), "b's appends are numbered in b's call order");
    assert.ok(
      fromA.some((offset, i) => i > 0 && offset - (fromA[i - 1] as number) > 1),
      'the two instances really interleaved',
    );
    assert.deepEqual(await a.position(ch), { offset: 1000, epoch: a.epoch });
    const stored = await b.range(ch, 0, 1000);
    assert.deepEqual(
      stored.map((m) => m.offset),
      seq(1, 1000),
    );
  });

  it('keeps offsets gap-free and idempotency keys exact when two instances append keyed messages at once', async (t) => {
    const a = pgStore(await openStore());
    const b = pgStore(await openStore());
    const ch = channel('keyed');
    const lockedBefore = a.stats.locked + b.stats.locked;
    const unique: Array<Promise<AppendResult>> = [];
    const contested: Array<[Promise<AppendResult>, Promise<AppendResult>]> = [];
    for (let round = 0; round < 40; round++) {
      for (let k = 0; k < 5; k++) {
        unique.push(a.append({ channel: ch, from: 'alice', data: 'a', idempotencyKey: `a-${round}-${k}` }));
        unique.push(b.append({ channel: ch, from: 'alice', data: 'b', idempotencyKey: `b-${round}-${k}` }));
      }
      // The same sender retrying one key through both instances at the same moment.
      contested.push([
        a.append({ channel: ch, from: 'carol', data: round, idempotencyKey: `same-${round}` }),
        b.append({ channel: ch, from: 'carol', data: round, idempotencyKey: `same-${round}` }),
      ]);
      await nextTurn();
    }
    const uniqueResults = await Promise.all(unique);
    assert.ok(uniqueResults.every((r) => !r.duplicate));
    for (const [first, second] of contested) {
      const results = await Promise.all([first, second]);
      assert.equal(results.filter((r) => !r.duplicate).length, 1, 'exactly one of the two is stored');
      assert.equal(results[0].message.id, results[1].message.id, 'both answer with the one stored message');
    }
    const total = 400 + 40;
    assert.deepEqual(await a.position(ch), { offset: total, epoch: a.epoch });
    const stored = await a.range(ch, 0, total);
    assert.deepEqual(
      stored.map((m) => m.offset),
      seq(1, total),
    );
    const lockedBatches = a.stats.locked + b.stats.locked - lockedBefore;
    // Informational: how often the optimistic statement lost the race and took the locked path.
    t.diagnostic(`keyed race: ${lockedBatches} batch(es) rewritten under explicit channel locks`);
  });

  it('(b) writes a burst of 2,000 appends in a few round trips', async (t) => {
    const store = pgStore(await openStore());
    const ch = channel('burst');
    await store.ping();
    const batchesBefore = store.stats.batches;
    const started = performance.now();
    const results = await Promise.all(
      Array.from({ length: 2000 }, (_, i) => store.append({ channel: ch, from: 'alice', data: { i } })),
    );
    const elapsed = performance.now() - started;
    const batches = store.stats.batches - batchesBefore;
    assert.deepEqual(
      results.map((r) => r.message.offset),
      seq(1, 2000),
    );
    assert.ok(batches <= 10, `2,000 appends took ${batches} batches`);
    t.diagnostic(
      `postgres: 2000 appends in ${elapsed.toFixed(0)} ms = ${Math.round(2000 / (elapsed / 1000))} appends/s, ${batches} batch(es)`,
    );
  });

  it('(b) for comparison only: the same burst on a SQLite file', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'parley-compare-'));
    const database = await openDatabase(`sqlite:${join(dir, 'parley.db')}`);
    try {
      const store: MessageStore = database.messages;
      const ch = channel('burst');
      const started = performance.now();
      const results = await Promise.all(
        Array.from({ length: 2000 }, (_, i) => store.append({ channel: ch, from: 'alice', data: { i } })),
      );
      const elapsed = performance.now() - started;
      assert.equal(results.at(-1)?.message.offset, 2000);
      t.diagnostic(
        `sqlite file: 2000 appends in ${elapsed.toFixed(0)} ms = ${Math.round(2000 / (elapsed / 1000))} appends/s`,
      );
    } finally {
      await database.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('looks idempotency keys up by primary key, also before the table has statistics', async () => {
    // A new database, never analyzed, whose keys table grew fast: as a plain join the planner read
    // every key of the window through the ts index for every batch (50 ms for 512 appends).
    const fresh = await createTestDatabase();
    const database = await openPostgres(fresh.url);
    const client = new pg.Client({ connectionString: fresh.url });
    try {
      const ch = channel('keys');
      for (let i = 0; i < 30_000; i += 1000) {
        await Promise.all(
          Array.from({ length: 1000 }, (_, j) =>
            database.messages.append({ channel: ch, from: 'alice', data: i + j, idempotencyKey: `key-${i + j}` }),
          ),
        );
      }
      await client.connect();
      // Planned with these values bound, as each batch is; EXPLAIN alone runs nothing.
      const explained = await client.query(`EXPLAIN (FORMAT JSON) ${BATCH_SQL}`, batchValues(512, ch, true, null));
      assert.deepEqual(scansOf(explained.rows[0], 'idempotency_keys'), ['Index Scan idempotency_keys_pk']);
    } finally {
      await client.end().catch(() => undefined);
      await database.close();
      await fresh.drop();
    }
  });

  it('trims a retained channel through its primary-key range, not by reading the whole table', async () => {
    // With retain (topic: and user: channels) the trim was a join the planner ran as a scan of every
    // message of every channel, for every batch holding such a channel (30 ms at 60,000 rows).
    const fresh = await createTestDatabase();
    const database = await openPostgres(fresh.url);
    const client = new pg.Client({ connectionString: fresh.url });
    try {
      // Thirty users' notification channels, each holding the 1,000 messages it retains.
      const users = Array.from(
        { length: 30 },
        (_, u) => `user:${channel('u').slice('room:'.length).replace(/-/g, '_')}${u}`,
      );
      for (const user of users) {
        await Promise.all(
          Array.from({ length: 1000 }, (_, i) =>
            database.messages.append({ channel: user, from: 'alice', data: i, retain: 1000 }),
          ),
        );
      }
      await client.connect();
      await client.query('ANALYZE');
      // A batch of 512 appends to eight of them.
      const values = batchValues(512, '', false, 1000);
      values[1] = Array.from({ length: 512 }, (_, i) => users[i % 8]);
      const explained = await client.query(`EXPLAIN (FORMAT JSON) ${BATCH_SQL}`, values);
      const scans = scansOf(explained.rows[0], 'messages');
      assert.ok(scans.length > 0, 'the plan reads messages');
      for (const scan of scans) assert.match(scan, /^(Index Scan messages_pk|Bitmap Heap Scan|Tid Scan)$/);
      assert.ok(!scans.includes('Seq Scan'), `messages read by ${scans.join(', ')}`);
      const kept = await client.query('SELECT count(*) AS n FROM messages WHERE channel = $1', [users[0]]);
      assert.deepEqual(kept.rows[0], { n: '1000' });
    } finally {
      await client.end().catch(() => undefined);
      await database.close();
      await fresh.drop();
    }
  });

  it('positions() reads many channels at once, 0 for unknown ones', async () => {
    const store = pgStore(await openStore());
    const [x, y, z] = [channel('px'), channel('py'), channel('pz')];
    await Promise.all([
      store.append({ channel: x, from: 'a', data: 1 }),
      store.append({ channel: x, from: 'a', data: 2 }),
      store.append({ channel: y, from: 'a', data: 3 }),
    ]);
    const positions = await store.positions([x, y, z]);
    assert.deepEqual([...positions.entries()].sort(), [
      [x, 2],
      [y, 1],
      [z, 0],
    ]);
    assert.deepEqual(await store.positions([]), new Map());
  });

  it('rejects with unavailable, fast, when PostgreSQL cannot be reached at start', async () => {
    const started = Date.now();
    await assert.rejects(openDatabase('postgres://postgres@127.0.0.1:1/parley_nowhere'), isUnavailable);
    assert.ok(Date.now() - started < CONNECT_TIMEOUT_MS + 2000);
  });
});

describe('PostgreSQL behind a failing network', { skip }, () => {
  let testDatabase: TestDatabase;
  let proxy: TcpProxy;
  let proxiedUrl: string;
  /** How long a call may take to fail: a refused connection fails at once, a hung one after the timeouts. */
  const failWithin = QUERY_TIMEOUT_MS + 2000;

  before(async () => {
    testDatabase = await createTestDatabase();
    const target = new URL(testDatabase.url);
    proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
    proxiedUrl = throughProxy(testDatabase.url, proxy);
  });
  beforeEach(() => proxy.restore());
  after(async () => {
    await proxy?.close();
    await testDatabase?.drop();
  });

  it('(c) the store rejects with unavailable while cut off, and recovers by itself', async () => {
    const database = await openDatabase(proxiedUrl);
    try {
      const store = database.messages;
      const ch = channel('fault');
      assert.equal((await store.append({ channel: ch, from: 'alice', data: 1 })).message.offset, 1);
      proxy.cut();
      for (const call of [
        () => store.append({ channel: ch, from: 'alice', data: 'lost' }),
        () => store.position(ch),
        () => store.positions([ch]),
        () => store.range(ch, 0, 10),
        () => store.history(ch, undefined, 10),
        () => store.ping(),
        () => database.db.selectFrom('rooms').selectAll().execute(),
      ]) {
        const started = Date.now();
        await assert.rejects(call(), isUnavailable);
        assert.ok(Date.now() - started < failWithin, `failed within ${failWithin} ms`);
      }
      proxy.restore();
      await waitUntil(
        () =>
          store.ping().then(
            () => true,
            () => false,
          ),
        'the store to answer again',
        15_000,
      );
      const next = await store.append({ channel: ch, from: 'alice', data: 2 });
      assert.equal(next.message.offset, 2, 'offsets continue with no gap');
      assert.deepEqual(
        (await store.range(ch, 0, 10)).map((m) => m.data),
        [1, 2],
      );
    } finally {
      await database.close();
    }
  });

  it('(c) a server on it answers 503 / unavailable while cut off, and recovers by itself', async () => {
    let server: TestServer | undefined;
    let socket: TestSocket | undefined;
    try {
      server = await startServer({ DATABASE_URL: proxiedUrl });
      const token = await server.token('alice');
      socket = await server.ws('/ws', { token });
      await socket.welcome();
      const subscribed = await socket.ok({ type: 'subscribe', channel: 'room:x' });
      assert.equal(subscribed.offset, 0);
      const first = await socket.ok({ type: 'publish', channel: 'room:x', data: { text: 'before' } });
      assert.equal(first.offset, 1);
      const posted = await server.http('POST', '/rooms/x/messages', { token, body: { data: { text: 'http' } } });
      assert.equal(posted.status, 201);
      assert.equal(posted.body.offset, 2);
      assert.equal((await server.http('GET', '/readyz')).status, 200);

      proxy.cut();
      const ready = await server.http('GET', '/readyz');
      assert.equal(ready.status, 503);
      const failed = await socket.request({ type: 'publish', channel: 'room:x', data: { text: 'lost' } }, failWithin);
      assert.equal(failed.type, 'error');
      assert.equal(failed.error.code, 'unavailable');
      const refused = await server.http('POST', '/rooms/x/messages', { token, body: { data: { text: 'lost' } } });
      assert.equal(refused.status, 503);
      assert.equal(refused.body.error.code, 'unavailable');
      assert.equal(typeof refused.body.error.message, 'string');

      proxy.restore();
      await waitUntil(
        async () => (await (server as TestServer).http('GET', '/readyz')).status === 200,
        '/readyz 200',
        15_000,
      );
      const after = await socket.ok({ type: 'publish', channel: 'room:x', data: { text: 'after' } });
      assert.equal(after.offset, 3, 'offsets continue with no gap');
      const pushed = await socket.next(
        (f: Frame) => f.type === 'message' && f.message.offset === 3,
        5000,
        'the push of offset 3',
      );
      assert.equal(pushed.message.data.text, 'after');
      const history = await server.http('GET', '/rooms/x/messages', { token });
      assert.equal(history.status, 200);
      assert.deepEqual(
        history.body.messages.map((m: { offset: number }) => m.offset),
        [1, 2, 3],
      );
    } finally {
      socket?.terminate();
      await server?.close();
    }
  });
});
