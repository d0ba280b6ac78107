import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, Migrator, SqliteDialect } from 'kysely';
import type { Logger } from 'pino';
import { ParleyError } from '../errors.ts';
import { SqliteCheckpointer } from './checkpointer.ts';
import { migrationProvider } from './migrations/index.ts';
import type { Tables } from './schema.ts';
import { SqliteMessageStore } from './sqlite.ts';
import type { MessageStore, MessageStoreOptions } from './store.ts';

/** The database behind every repository and the message store. */
export interface Database {
  readonly kind: 'sqlite' | 'postgres';
  readonly db: Kysely<Tables>;
  readonly messages: MessageStore;
  /** SQLite on a file: the thread that checkpoints its write-ahead log. */
  readonly checkpointer?: SqliteCheckpointer | undefined;
  close(): Promise<void>;
}

/** Opens the database named by DATABASE_URL and brings its schema up to date. */
export async function openDatabase(url: string, log?: Logger, options: MessageStoreOptions = {}): Promise<Database> {
  if (url.startsWith('sqlite:')) return openSqlite(url.slice('sqlite:'.length), options, log);
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    // Loaded only when used, so an embedded instance never loads pg.
    const { openPostgres } = await import('./postgres.ts');
    return openPostgres(url, log, options);
  }
  throw new ParleyError('bad_request', `DATABASE_URL "${url.split(':')[0]}:…" is not sqlite: or postgres://`);
}

async function openSqlite(path: string, options: MessageStoreOptions, log?: Logger): Promise<Database> {
  const memory = path === ':memory:';
  if (!memory) mkdirSync(dirname(resolve(path)), { recursive: true });
  const sqlite = new BetterSqlite3(memory ? ':memory:' : path);
  // WAL lets readers run beside the writer; NORMAL syncs at checkpoints only,
  // which WAL keeps crash-safe (a power cut may lose the last commits, never corrupt).
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma('foreign_keys = ON');
  const db = new Kysely<Tables>({ dialect: new SqliteDialect({ database: sqlite }) });
  await migrate(db);
  const messages = new SqliteMessageStore(sqlite, options);
  // An in-memory database has no log to checkpoint.
  const checkpointer = memory ? undefined : new SqliteCheckpointer(sqlite, path, { log, writes: messages });
  return {
    kind: 'sqlite',
    db,
    messages,
    checkpointer,
    async close() {
      await messages.close();
      await checkpointer?.stop();
      await db.destroy();
    },
  };
}

export async function migrate(db: Kysely<Tables>): Promise<void> {
  const migrator = new Migrator({ db, provider: migrationProvider });
  const { error } = await migrator.migrateToLatest();
  if (error) throw error;
}
