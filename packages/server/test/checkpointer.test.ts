import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { sql } from 'kysely';
import { SqliteCheckpointer } from '../src/store/checkpointer.ts';
import { openDatabase } from '../src/store/database.ts';
import { SqliteMessageStore } from '../src/store/sqlite.ts';
import { waitUntil } from './helpers.ts';

test('a SQLite file is checkpointed by its own thread, not inside the commits', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'parley-checkpoint-'));
  const file = join(dir, 'parley.db');
  const database = await openDatabase(`sqlite:${file}`);
  try {
    assert.ok(database.checkpointer, 'a file database has a checkpointer');
    const { rows } = await sql<{ wal_autocheckpoint: number }>`PRAGMA wal_autocheckpoint`.execute(database.db);
    assert.deepEqual(rows, [{ wal_autocheckpoint: 0 }]);
    const before = statSync(file).size;
    // Some 3 MB of log: with automatic checkpoints off here, only the worker copies it into the file.
    for (let i = 0; i < 10; i++) {
      await Promise.all(
        Array.from({ length: 500 }, (_, j) =>
          database.messages.append({ channel: `room:r${j % 10}`, from: 'alice', data: { i, j } }),
        ),
      );
    }
    await waitUntil(() => statSync(file).size > before, 'the database file to take the checkpointed pages', 5000);
  } finally {
    await database.close();
    await rm(dir, { recursive: true, force: true });
  }
});

/**
 * A migrated SQLite file, its message store and a checkpointer with a small log
 * limit and a short interval, built from the parts (openDatabase fixes both).
 */
async function storeWithCheckpointer(limitBytes: number) {
  const dir = await mkdtemp(join(tmpdir(), 'parley-checkpoint-'));
  const file = join(dir, 'parley.db');
  await (await openDatabase(`sqlite:${file}`)).close();
  const sqlite = new BetterSqlite3(file);
  const store = new SqliteMessageStore(sqlite);
  const checkpointer = new SqliteCheckpointer(sqlite, file, { writes: store, limitBytes, everyMs: 10 });
  return {
    file,
    sqlite,
    store,
    checkpointer,
    /** One commit of 500 appends (group commit), resolved once stored. */
    commitRound: () =>
      Promise.all(
        Array.from({ length: 500 }, (_, j) =>
          store.append({ channel: `room:r${j % 10}`, from: 'alice', data: { j, text: 'x'.repeat(100) } }),
        ),
      ),
    async close() {
      await store.close();
      await checkpointer.stop();
      sqlite.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

test('under commits with no pause between them, the log starts again from its beginning and stays small', async () => {
  const limitBytes = 1024 * 1024;
  const { file, sqlite, checkpointer, commitRound, close } = await storeWithCheckpointer(limitBytes);
  const walSize = () => statSync(`${file}-wal`, { throwIfNoEntry: false })?.size ?? 0;
  try {
    let largest = 0;
    let stored = 0;
    const deadline = Date.now() + 20_000;
    // Each round is one commit of 500 (group commit) and the next begins as soon as it is stored.
    // Without the holds the log only grows: by tens of MB a second here.
    while (checkpointer.holds.count < 3) {
      assert.ok(Date.now() < deadline, `the checkpointer held the commits ${checkpointer.holds.count} times in 20 s`);
      stored += (await commitRound()).length;
      largest = Math.max(largest, walSize());
      assert.ok(largest < 16 * limitBytes, `the log reached ${largest} bytes, over 16 times the limit`);
    }
    // journal_size_limit: once started again, the file is cut back to the limit.
    await waitUntil(() => walSize() <= limitBytes, 'the log file cut back to its limit', 5000);
    // Held commits were delayed, never dropped: every channel's offsets run on without a gap.
    const { n, last } = sqlite.prepare('SELECT count(*) AS n, sum(last_seq) AS last FROM channels').get() as {
      n: number;
      last: number;
    };
    assert.equal(n, 10);
    assert.equal(last, stored);
    assert.equal(
      (sqlite.prepare('SELECT count(*) AS n FROM messages').get() as { n: number }).n,
      stored,
      'every append is stored once',
    );
  } finally {
    await close();
  }
});

test('while a reader elsewhere keeps the log from restarting, the checkpointer backs off instead of holding every pass', async () => {
  const { file, checkpointer, commitRound, close } = await storeWithCheckpointer(256 * 1024);
  // Another connection in a read transaction: SQLite may not copy past its snapshot nor restart the log.
  const reader = new BetterSqlite3(file, { readonly: true });
  reader.prepare('BEGIN').run();
  reader.prepare('SELECT count(*) FROM messages').get();
  try {
    const started = Date.now();
    // 1.5 s of back-to-back commits: some 150 passes of 10 ms, each finding the log over its limit.
    while (Date.now() - started < 1500) await commitRound();
    const { count } = checkpointer.holds;
    assert.ok(count >= 1, 'the log passed its limit, so the checkpointer tried');
    // Holds that restart nothing are spaced 1 s, 2 s, 4 s… apart.
    assert.ok(count <= 3, `held ${count} times in 1.5 s`);
  } finally {
    reader.prepare('COMMIT').run();
    reader.close();
    await close();
  }
});

test('an in-memory SQLite database has no checkpointer', async () => {
  const database = await openDatabase('sqlite::memory:');
  try {
    assert.equal(database.checkpointer, undefined);
  } finally {
    await database.close();
  }
});

test('when the checkpointer thread fails, automatic checkpoints come back on', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'parley-checkpoint-'));
  const pragmas: string[] = [];
  const warnings: string[] = [];
  const log = { warn: (_: unknown, message: string) => warnings.push(message) };
  try {
    // A directory cannot be opened as a database: the worker's connection throws.
    const checkpointer = new SqliteCheckpointer({ pragma: (s: string) => pragmas.push(s) }, dir, { log: log as never });
    await waitUntil(() => pragmas.includes('wal_autocheckpoint = 1000'), 'automatic checkpoints back on', 5000);
    assert.equal(pragmas[0], 'wal_autocheckpoint = 0');
    assert.match(warnings.join('\n'), /checkpointer failed/);
    await checkpointer.stop();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
