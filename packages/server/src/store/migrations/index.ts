import { randomUUID } from 'node:crypto';
import { type Kysely, type Migration, type MigrationProvider, sql } from 'kysely';

/**
 * Migrations in code, so they ship inside the package and run the same on
 * SQLite and PostgreSQL. Never edit one that has been released: add the next.
 */
const migrations: Record<string, Migration> = {
  '0001_initial': {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('meta')
        .addColumn('key', 'text', (c) => c.primaryKey())
        .addColumn('value', 'text', (c) => c.notNull())
        .execute();
      // The epoch names this store's history; a new database is a new epoch.
      await db.insertInto('meta').values({ key: 'epoch', value: randomUUID() }).execute();

      await db.schema
        .createTable('users')
        .addColumn('username', 'text', (c) => c.primaryKey())
        .addColumn('password_hash', 'text', (c) => c.notNull())
        .addColumn('role', 'text', (c) => c.notNull().defaultTo('user'))
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('refresh_tokens')
        .addColumn('token_hash', 'text', (c) => c.primaryKey())
        .addColumn('username', 'text', (c) => c.notNull())
        .addColumn('role', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('used_at', 'bigint')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('refresh_tokens_username').on('refresh_tokens').column('username').execute();

      await db.schema
        .createTable('rooms')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('is_private', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('creator', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('room_members')
        .addColumn('room', 'text', (c) => c.notNull())
        .addColumn('username', 'text', (c) => c.notNull())
        .addColumn('added_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('room_members_pk', ['room', 'username'])
        .execute();
      await db.schema.createIndex('room_members_username').on('room_members').column('username').execute();

      await db.schema
        .createTable('tasks')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('title', 'text', (c) => c.notNull())
        .addColumn('description', 'text', (c) => c.notNull().defaultTo(''))
        .addColumn('done', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('channels')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('last_seq', 'bigint', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('messages')
        .addColumn('channel', 'text', (c) => c.notNull())
        .addColumn('seq', 'bigint', (c) => c.notNull())
        .addColumn('id', 'text', (c) => c.notNull())
        .addColumn('sender', 'text', (c) => c.notNull())
        .addColumn('data', 'text', (c) => c.notNull())
        .addColumn('ts', 'bigint', (c) => c.notNull())
        .addColumn('idem_key', 'text')
        .addPrimaryKeyConstraint('messages_pk', ['channel', 'seq'])
        .execute();
      // Idempotency look-ups only ever concern rows that carry a key.
      await sql`CREATE INDEX messages_idem ON messages (channel, sender, idem_key) WHERE idem_key IS NOT NULL`.execute(
        db,
      );
    },
  },
  '0002_idempotency_keys': {
    async up(db: Kysely<any>) {
      // Keys lived on their message row, so trimming a channel's history
      // (retain) forgot them inside their window: a retry could store a
      // second copy. They now have a table of their own, pruned by age
      // only, holding what is needed to answer a retry with the first message.
      await db.schema
        .createTable('idempotency_keys')
        .addColumn('channel', 'text', (c) => c.notNull())
        .addColumn('sender', 'text', (c) => c.notNull())
        .addColumn('idem_key', 'text', (c) => c.notNull())
        .addColumn('seq', 'bigint', (c) => c.notNull())
        .addColumn('id', 'text', (c) => c.notNull())
        .addColumn('data', 'text', (c) => c.notNull())
        .addColumn('ts', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('idempotency_keys_pk', ['channel', 'sender', 'idem_key'])
        .execute();
      await db.schema.createIndex('idempotency_keys_ts').on('idempotency_keys').column('ts').execute();
      // Carry over the keys still inside their window (the latest use of each).
      const since = Date.now() - 10 * 60 * 1000;
      await sql`
        INSERT INTO idempotency_keys (channel, sender, idem_key, seq, id, data, ts)
        SELECT m.channel, m.sender, m.idem_key, m.seq, m.id, m.data, m.ts FROM messages m
        WHERE m.idem_key IS NOT NULL AND m.ts > ${since}
          AND m.seq = (SELECT max(o.seq) FROM messages o
                       WHERE o.channel = m.channel AND o.sender = m.sender AND o.idem_key = m.idem_key)`.execute(db);
      // messages.idem_key (and its partial index, which only keyed rows enter) is no longer
      // written or read. Both stay for now, so that an instance of the previous release still
      // running during a rolling deploy can insert and look keys up; a later migration drops them.
    },
  },
};

export const migrationProvider: MigrationProvider = {
  async getMigrations() {
    return migrations;
  },
};
