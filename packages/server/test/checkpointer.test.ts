import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { sql } from 'kysely';
import { SqliteCheckpointer } from '../src/store/checkpointer.ts';
import { openDatabase } from '../src/store/database.ts';
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
    const checkpointer = new SqliteCheckpointer({ pragma: (s: string) => pragmas.push(s) }, dir, log as never);
    await waitUntil(() => pragmas.includes('wal_autocheckpoint = 1000'), 'automatic checkpoints back on', 5000);
    assert.equal(pragmas[0], 'wal_autocheckpoint = 0');
    assert.match(warnings.join('\n'), /checkpointer failed/);
    await checkpointer.stop();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
