import { randomUUID } from 'node:crypto';
import {
  Kysely,
  type PostgresCursor,
  PostgresDialect,
  type PostgresPool,
  type PostgresPoolClient,
  type PostgresQueryResult,
  sql,
} from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import { ParleyError } from '../errors.ts';
import { type Database, migrate } from './database.ts';
import type { Tables } from './schema.ts';
import {
  type AppendInput,
  type AppendResult,
  type ChannelPosition,
  type HistoryPage,
  IDEMPOTENCY_WINDOW_MS,
  KEY_PRUNE_INTERVAL_MS,
  type MessageStore,
  type MessageStoreOptions,
  type StoredMessage,
} from './store.ts';

/** Waiting for a connection (new, or free in the pool) longer than this is `unavailable`. */
export const CONNECT_TIMEOUT_MS = 3000;
/** Server side: a statement running longer is cancelled (SQLSTATE 57014). */
export const STATEMENT_TIMEOUT_MS = 5000;
/** Client side: no answer within this (a black-holed network) fails the query and discards the connection. */
export const QUERY_TIMEOUT_MS = 6000;
/** Connections per instance, shared by the message store and the repositories. */
export const POOL_SIZE = 10;
/** Most appends written by one statement; the rest wait for the next batch. */
export const MAX_BATCH = 1000;
/** Attempts of one statement that fails with a deadlock or serialization failure. */
const MAX_ATTEMPTS = 5;
/** Session advisory lock held around migrations, so concurrent starts migrate one at a time. */
const MIGRATION_LOCK_KEY = '7023541187342360117';

// ---------------------------------------------------------------------------
// Errors: what "the database is unreachable" looks like

const SQLSTATE = /^[0-9A-Z]{5}$/;
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
/** pg's own messages for a dead or timed-out connection (they carry no code). */
const DRIVER_FAILURE =
  /Connection terminated|Query read timeout|timeout exceeded when trying to connect|not queryable|Client was closed|Connection ended/i;
/** Deadlock and serialization failure: the statement may simply be run again. */
const RETRYABLE = new Set(['40001', '40P01']);

type Failure = 'connection' | 'transient' | 'other';

function codeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** The SQLSTATE of a pg error, also when it is the cause of a ParleyError. */
export function sqlState(error: unknown): string | undefined {
  const own = codeOf(error);
  if (own !== undefined && SQLSTATE.test(own)) return own;
  if (error instanceof ParleyError) return sqlState(error.cause);
  return undefined;
}

/**
 * `connection`: the connection is dead or hung and must be discarded;
 * `transient`: the server refused for now (shutting down, overloaded, timed
 * out, deadlock); `other`: an ordinary SQL error (a unique violation, say),
 * which callers handle themselves.
 */
function classify(error: unknown): Failure {
  const code = codeOf(error);
  if (code !== undefined && NETWORK_CODES.has(code)) return 'connection';
  if (code !== undefined && SQLSTATE.test(code)) {
    // 08: connection exception; 57P01-03: shutting down / cannot connect now; 25P03: idle-in-transaction timeout.
    if (code.startsWith('08') || code.startsWith('57P') || code === '25P03') return 'connection';
    // 53: out of resources (too many connections); 57014: statement_timeout; 55P03: lock timeout; 58: system error.
    if (code.startsWith('53') || code.startsWith('58') || code === '57014' || code === '55P03' || RETRYABLE.has(code)) {
      return 'transient';
    }
    return 'other';
  }
  return error instanceof Error && DRIVER_FAILURE.test(error.message) ? 'connection' : 'other';
}

/** The connection failed or none could be made (not merely a slow or refused statement). */
function isUnreachable(error: unknown): boolean {
  if (classify(error) === 'connection') return true;
  return error instanceof ParleyError && error.cause !== undefined && classify(error.cause) === 'connection';
}

function unavailable(message: string, cause: unknown): ParleyError {
  const error = new ParleyError('unavailable', message);
  error.cause = cause;
  return error;
}

// ---------------------------------------------------------------------------
// The pool, as the store and Kysely see it

/** A query's result, the slice of pg's that is used here. */
export interface PgResult<R> {
  rows: R[];
  rowCount: number | null;
}

/** The slice of a pg pool client the message store uses (structural, as Kysely does). */
export interface PgClient {
  query<R>(text: string, values?: readonly unknown[]): Promise<PgResult<R>>;
  /** `query` as a named prepared statement: parsed and planned once per connection. */
  queryPrepared<R>(name: string, text: string, values: readonly unknown[]): Promise<PgResult<R>>;
  release(): void;
}

/** The slice of a pool the message store uses. */
export interface PgPool {
  connect(): Promise<PgClient>;
}

/**
 * A pg Pool whose failures to reach PostgreSQL surface as ParleyError
 * `unavailable` (so every route and command answers 503 / `unavailable`, never
 * 500), and whose connections are discarded when they break. Ordinary SQL
 * errors (23505…) pass through unchanged for the repositories to handle.
 * Kysely and the message store share it.
 */
class GuardedPool implements PostgresPool, PgPool {
  private readonly clients = new WeakMap<pg.PoolClient, GuardedClient>();

  constructor(readonly pool: pg.Pool) {}

  async connect(): Promise<GuardedClient> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (cause) {
      throw unavailable('PostgreSQL is unreachable', cause);
    }
    let guarded = this.clients.get(client);
    if (!guarded) {
      const created = new GuardedClient(client);
      // pg emits 'error' on a connection that breaks while checked out and
      // not running a query; the pool listens only to idle ones.
      client.on('error', (error) => {
        created.broken = error;
      });
      guarded = created;
      this.clients.set(client, created);
    }
    guarded.broken = undefined;
    return guarded;
  }

  /** One query on a pooled connection. */
  async query<R>(text: string, values?: readonly unknown[]): Promise<PgResult<R>> {
    const client = await this.connect();
    try {
      return await client.query<R>(text, values);
    } finally {
      client.release();
    }
  }

  end(): Promise<void> {
    return this.pool.end();
  }
}

class GuardedClient implements PgClient, PostgresPoolClient {
  /** Set when this connection failed: it is then destroyed on release instead of reused. */
  broken: Error | undefined;

  constructor(private readonly client: pg.PoolClient) {}

  query<R>(text: string, values?: readonly unknown[]): Promise<PostgresQueryResult<R>>;
  // Kysely's interface also has a cursor overload; no cursor is configured, so it is never called.
  query<R>(cursor: PostgresCursor<R>): PostgresCursor<R>;
  query<R>(
    text: string | PostgresCursor<R>,
    values?: readonly unknown[],
  ): Promise<PostgresQueryResult<R>> | PostgresCursor<R> {
    if (typeof text !== 'string') throw new TypeError('cursors are not supported');
    return this.run<R>(text, values);
  }

  queryPrepared<R>(name: string, text: string, values: readonly unknown[]): Promise<PostgresQueryResult<R>> {
    return this.run<R>(text, values, name);
  }

  private async run<R>(
    text: string,
    values: readonly unknown[] | undefined,
    name?: string,
  ): Promise<PostgresQueryResult<R>> {
    try {
      const params = values as unknown[] | undefined;
      const result =
        name === undefined ? this.client.query(text, params) : this.client.query({ name, text, values: params });
      return (await result) as unknown as PostgresQueryResult<R>;
    } catch (error) {
      const failure = classify(error);
      if (failure === 'other') throw error;
      if (failure === 'connection') this.broken = error instanceof Error ? error : new Error(String(error));
      throw unavailable(
        failure === 'connection' ? 'lost the connection to PostgreSQL' : 'PostgreSQL did not complete the query',
        error,
      );
    }
  }

  release(): void {
    // pg's pool destroys a client released with an error.
    this.client.release(this.broken);
  }
}

// ---------------------------------------------------------------------------
// Opening

/** int8 (bigint, count(*)) as a number, as SQLite returns it: every value here (ms, offsets) is below 2^53. */
const INT8_OID = 20;
function parseInt8(text: string): number | string {
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : text;
}
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary'
      ? parseInt8
      : pg.types.getTypeParser(oid, format ?? 'text')) as typeof pg.types.getTypeParser,
};

/**
 * Opens a PostgreSQL database: migrates it (under an advisory lock, so
 * several instances starting together take turns) and returns the Kysely
 * handle and the message store over one pool.
 */
export async function openPostgres(url: string, log?: Logger, options: MessageStoreOptions = {}): Promise<Database> {
  const epoch = await migrateWithLock(url);
  const pool = new pg.Pool({
    connectionString: url,
    max: POOL_SIZE,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    statement_timeout: STATEMENT_TIMEOUT_MS,
    query_timeout: QUERY_TIMEOUT_MS,
    // A session that dies mid-transaction must not hold channel locks for long.
    idle_in_transaction_session_timeout: 2 * STATEMENT_TIMEOUT_MS,
    keepAlive: true,
    application_name: 'parley',
    types,
  });
  // An idle connection that breaks (PostgreSQL restarted, network cut) is
  // dropped by the pool; without a listener the error would crash the process.
  pool.on('error', (error) => log?.warn({ err: error }, 'an idle PostgreSQL connection failed; the pool replaces it'));
  const guarded = new GuardedPool(pool);
  const db = new Kysely<Tables>({ dialect: new PostgresDialect({ pool: guarded }) });
  const messages = new PostgresMessageStore(guarded, epoch, log, options);
  return {
    kind: 'postgres',
    db,
    messages,
    async close() {
      await messages.close();
      await db.destroy();
    },
  };
}

/**
 * Runs the migrations on a connection of its own, without the statement
 * timeouts of the main pool (a migration or the wait for another instance's
 * may take longer), holding a session advisory lock: Kysely's own lock is
 * taken only after it has created its bookkeeping tables, which concurrent
 * `CREATE TABLE IF NOT EXISTS` can fail on. Returns the store's epoch.
 */
async function migrateWithLock(url: string): Promise<string> {
  const pool = new pg.Pool({
    connectionString: url,
    max: 1,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    application_name: 'parley-migrate',
  });
  pool.on('error', () => undefined);
  const db = new Kysely<Tables>({ dialect: new PostgresDialect({ pool }) });
  try {
    return await db.connection().execute(async (conn) => {
      await sql`SELECT pg_advisory_lock(${MIGRATION_LOCK_KEY}::bigint)`.execute(conn);
      try {
        await migrate(conn);
        const row = await conn.selectFrom('meta').select('value').where('key', '=', 'epoch').executeTakeFirst();
        if (!row) throw new Error('store is not migrated: meta.epoch is missing');
        return row.value;
      } finally {
        await sql`SELECT pg_advisory_unlock(${MIGRATION_LOCK_KEY}::bigint)`.execute(conn);
      }
    });
  } catch (cause) {
    if (classify(cause) === 'other') throw cause;
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw unavailable(`cannot reach PostgreSQL to migrate it: ${reason}`, cause);
  } finally {
    await db.destroy();
  }
}

// ---------------------------------------------------------------------------
// The message store

/**
 * One batch of appends in one statement. Parameters: $1 ord (index in the
 * batch) · $2 channel · $3 sender · $4 data (JSON text) · $5 idempotency key ·
 * $6 id · $7 retain, as parallel arrays; $8 now (ms); $9 start of the
 * idempotency window (ms).
 *
 * - `dup`: keyed appends whose key the sender already used in the channel
 *   within the window answer with that first message and take no offset.
 *   Keys are rows of `idempotency_keys` (one per channel, sender and key,
 *   holding the first message), so trimming the history does not forget them.
 *   The look-up is one primary-key probe per append, by construction: as a
 *   plain join, a planner without fresh statistics (a new or fast-growing
 *   table) took the `ts` index instead and read every key of the window for
 *   every batch (50 ms for 512 appends over 60,000 keys). LIMIT 1 keeps the
 *   LATERAL subquery from being flattened back into that join.
 * - `up`: each channel's `last_seq` grows by its count of new messages. The
 *   row lock it takes (in channel order, so two instances never deadlock)
 *   serializes writers of a channel across instances, and in READ COMMITTED
 *   the increment applies to the latest committed value: offsets are
 *   gap-free and unique with any number of writers.
 * - A channel with keyed appends is updated only if its `last_seq` is still
 *   the one this statement's snapshot saw (`snap`): otherwise another writer
 *   committed after the snapshot was taken, and the key check above may have
 *   missed its message. Such a channel is left out of `up` and of the
 *   result; the caller writes those appends again under explicit row locks.
 * - `keys` records the key of each new keyed message (in the same statement:
 *   no extra round trip). A row already there for the key is an expired one
 *   (a live one would have made the append a `dup`), so it is taken over.
 *   It joins `up`, so a channel left out there records no key either.
 * - `ins` skips the messages that `retain` would drop at once, and `del`
 *   trims older ones, in the same statement: retention costs no extra round
 *   trip. `del` sees this statement's snapshot, so rows another instance
 *   committed meanwhile are trimmed by the channel's next batch instead.
 *   It reads each trimmed channel's range of the primary key, by
 *   construction: as a join, the planner (expecting 200 channels in `counts`)
 *   scanned the whole messages table for every batch with a retained
 *   channel in it (30 ms at 60,000 rows). OFFSET 0 keeps the LATERAL
 *   subquery from being flattened back into that join.
 * - The result has one row per append written (id null: new, at `seq`) or
 *   found duplicate (the stored message).
 *
 * Exported for the tests that read its plan.
 */
export const BATCH_SQL = `
WITH input AS (
  SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[])
    AS t(ord, channel, sender, data, idem_key, id, retain)
), dup AS (
  SELECT i.ord, k.seq, k.id, k.data, k.ts
  FROM input i
  CROSS JOIN LATERAL (
    SELECT k.seq, k.id, k.data, k.ts FROM idempotency_keys k
    WHERE k.channel = i.channel AND k.sender = i.sender AND k.idem_key = i.idem_key AND k.ts > $9::bigint
    LIMIT 1
  ) k
  WHERE i.idem_key IS NOT NULL
), fresh AS (
  SELECT i.*, row_number() OVER (PARTITION BY i.channel ORDER BY i.ord) AS rn
  FROM input i WHERE NOT EXISTS (SELECT 1 FROM dup d WHERE d.ord = i.ord)
), counts AS (
  SELECT channel, count(*) AS n, bool_or(idem_key IS NOT NULL) AS keyed,
    (array_agg(retain ORDER BY ord DESC) FILTER (WHERE retain IS NOT NULL))[1] AS retain
  FROM fresh GROUP BY channel
), snap AS (
  SELECT c.name, c.last_seq FROM channels c WHERE c.name IN (SELECT channel FROM counts WHERE keyed)
), up AS (
  INSERT INTO channels AS c (name, last_seq)
  SELECT channel, n FROM counts ORDER BY channel
  ON CONFLICT (name) DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq
  WHERE NOT EXISTS (SELECT 1 FROM counts k WHERE k.channel = c.name AND k.keyed)
     OR c.last_seq = (SELECT s.last_seq FROM snap s WHERE s.name = c.name)
  RETURNING c.name, c.last_seq
), keys AS (
  INSERT INTO idempotency_keys (channel, sender, idem_key, seq, id, data, ts)
  SELECT f.channel, f.sender, f.idem_key, u.last_seq - k.n + f.rn, f.id, f.data, $8::bigint
  FROM fresh f JOIN counts k ON k.channel = f.channel JOIN up u ON u.name = f.channel
  WHERE f.idem_key IS NOT NULL
  ON CONFLICT (channel, sender, idem_key) DO UPDATE
  SET seq = EXCLUDED.seq, id = EXCLUDED.id, data = EXCLUDED.data, ts = EXCLUDED.ts
), ins AS (
  INSERT INTO messages (channel, seq, id, sender, data, ts)
  SELECT f.channel, u.last_seq - k.n + f.rn, f.id, f.sender, f.data, $8::bigint
  FROM fresh f JOIN counts k ON k.channel = f.channel JOIN up u ON u.name = f.channel
  WHERE k.retain IS NULL OR f.rn > k.n - k.retain
), del AS (
  DELETE FROM messages m
  WHERE m.ctid = ANY (ARRAY(
    SELECT old.ctid FROM counts k JOIN up u ON u.name = k.channel
    CROSS JOIN LATERAL (
      SELECT o.ctid FROM messages o WHERE o.channel = k.channel AND o.seq <= u.last_seq - k.retain OFFSET 0
    ) old
    WHERE k.retain IS NOT NULL
  ))
)
SELECT f.ord, u.last_seq - k.n + f.rn AS seq, NULL::text AS id, NULL::text AS data, NULL::bigint AS ts
FROM fresh f JOIN counts k ON k.channel = f.channel JOIN up u ON u.name = f.channel
UNION ALL
SELECT d.ord, d.seq, d.id, d.data, d.ts FROM dup d`;

/**
 * BATCH_SQL runs as a named prepared statement: PostgreSQL parses and plans
 * its CTEs once per connection instead of on every batch. Measured here, a
 * lone append went from 1.5–1.8 ms to 0.5–0.8 ms a round trip, and Node's
 * side from ~450 to ~300 µs of CPU. (Behind PgBouncer in transaction mode
 * this needs PgBouncer 1.21+ with `max_prepared_statements` set.)
 */
const BATCH_STATEMENT = 'parley_append_batch_v4';

/**
 * Locks the channel rows (creating missing ones at 0) in name order, inside
 * the transaction of the slow path. The no-op update is what takes the lock
 * also on a row another transaction has just inserted.
 */
const LOCK_CHANNELS_SQL = `
INSERT INTO channels AS c (name, last_seq)
SELECT name, 0 FROM unnest($1::text[]) AS t(name) ORDER BY name
ON CONFLICT (name) DO UPDATE SET last_seq = c.last_seq`;

interface BatchRow {
  ord: number;
  seq: number | string;
  id: string | null;
  data: string | null;
  ts: number | string | null;
}

interface MessageRow {
  seq: number | string;
  id: string;
  sender: string;
  data: string;
  ts: number | string;
}

interface PendingAppend {
  input: AppendInput;
  resolve(result: AppendResult): void;
  reject(error: unknown): void;
}

/** Counters for tests and metrics. */
export interface PostgresStoreStats {
  /** Batches written (one statement each, unless retried or conflicted). */
  batches: number;
  /** Appends accepted into batches. */
  appends: number;
  /** Statements run again after a deadlock or serialization failure. */
  retries: number;
  /** Batches that had to write some channels again under explicit locks (keyed appends raced another instance). */
  locked: number;
}

const columns = 'seq, id, sender, data, ts';

/**
 * The shared message store: any number of instances on one PostgreSQL.
 *
 * Group commit: appends are queued, and one batch is written at a time by a
 * single statement (BATCH_SQL) while the next batch accumulates. A lone
 * append waits one event-loop turn and one round trip; a burst costs one
 * round trip per batch of up to MAX_BATCH. Batches are written and resolved
 * in call order, so call order is offset order per channel.
 */
export class PostgresMessageStore implements MessageStore {
  readonly epoch: string;
  readonly stats: PostgresStoreStats = { batches: 0, appends: 0, retries: 0, locked: 0 };
  private pending: PendingAppend[] = [];
  private flushScheduled = false;
  private writer: Promise<void> | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;
  private readonly now: () => number;
  /** When the writer next deletes expired idempotency keys, and the deletion running. */
  private nextKeyPrune = 0;
  private pruning: Promise<void> | undefined;

  constructor(
    private readonly pool: PgPool,
    epoch: string,
    private readonly log?: Logger,
    options: MessageStoreOptions = {},
  ) {
    this.epoch = epoch;
    this.now = options.now ?? Date.now;
  }

  append(input: AppendInput): Promise<AppendResult> {
    if (this.closed) return Promise.reject(new ParleyError('unavailable', 'the message store is closed'));
    return new Promise((resolve, reject) => {
      this.pending.push({ input, resolve, reject });
      if (!this.flushScheduled && !this.writer) {
        this.flushScheduled = true;
        // Wait one turn, so the appends of this turn go out together.
        setImmediate(() => {
          this.flushScheduled = false;
          void this.startWriter();
        });
      }
    });
  }

  /** Writes batches until the queue is empty; one writer at a time. */
  private startWriter(): Promise<void> {
    if (this.writer) return this.writer;
    if (this.pending.length === 0) return Promise.resolve();
    // writeAll always awaits before its `finally` clears `writer`, so this assignment comes first.
    this.writer = this.writeAll();
    return this.writer;
  }

  private async writeAll(): Promise<void> {
    try {
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, MAX_BATCH);
        await this.writeBatch(batch);
      }
    } finally {
      this.writer = undefined;
    }
  }

  /** Resolves or rejects every append of the batch; never throws. */
  private async writeBatch(batch: PendingAppend[]): Promise<void> {
    this.stats.batches += 1;
    this.stats.appends += batch.length;
    const now = this.now();
    this.pruneKeys(now);
    // A key used earlier in this batch: that append answers for it (its row is not in the table yet).
    const leaders: number[] = [];
    const leaderOf = new Map<number, number>();
    const firstWithKey = new Map<string, number>();
    for (const [i, { input }] of batch.entries()) {
      if (input.idempotencyKey !== undefined) {
        const scoped = `${input.channel}\u0000${input.from}\u0000${input.idempotencyKey}`;
        const leader = firstWithKey.get(scoped);
        if (leader !== undefined) {
          leaderOf.set(i, leader);
          continue;
        }
        firstWithKey.set(scoped, i);
      }
      leaders.push(i);
    }
    const results: Array<AppendResult | undefined> = new Array(batch.length);
    let failure: unknown;
    try {
      const conflicted = await this.attempt(batch, leaders, results, now, false);
      if (conflicted.length > 0) {
        this.stats.locked += 1;
        const left = await this.attempt(batch, conflicted, results, now, true);
        if (left.length > 0) throw new Error('appends conflicted although their channels were locked');
      }
    } catch (error) {
      failure = error;
      this.log?.warn({ err: error }, 'message store batch failed');
    }
    // Made only on failure: an Error's stack trace is the dearest thing a successful batch would build.
    let error: ParleyError | undefined;
    const failed = (): ParleyError => {
      error ??= failure instanceof ParleyError ? failure : unavailable('the message store failed to write', failure);
      return error;
    };
    // Appends committed before a failure keep their offsets: they are stored.
    for (const [i, item] of batch.entries()) {
      const leader = leaderOf.get(i);
      const result = leader === undefined ? results[i] : results[leader];
      if (!result) item.reject(failed());
      else item.resolve(leader === undefined ? result : { message: result.message, duplicate: true });
    }
    // PostgreSQL is unreachable: what queued meanwhile fails now too, rather
    // than one batch per connect timeout while the queue grows.
    if (failure !== undefined && isUnreachable(failure)) {
      for (const item of this.pending.splice(0)) item.reject(failed());
    }
  }

  /** Runs the batch statement for `todo`, again on deadlock/serialization failure; returns the appends left out. */
  private async attempt(
    batch: PendingAppend[],
    todo: number[],
    results: Array<AppendResult | undefined>,
    now: number,
    locked: boolean,
  ): Promise<number[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.runBatch(batch, todo, results, now, locked);
      } catch (error) {
        const state = sqlState(error);
        if (state === undefined || !RETRYABLE.has(state) || attempt >= MAX_ATTEMPTS) throw error;
        this.stats.retries += 1;
        // A short random pause, so the writers that collided do not collide again.
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 5 * attempt));
      }
    }
  }

  private async runBatch(
    batch: PendingAppend[],
    todo: number[],
    results: Array<AppendResult | undefined>,
    now: number,
    locked: boolean,
  ): Promise<number[]> {
    const ords: number[] = [];
    const channels: string[] = [];
    const senders: string[] = [];
    const data: string[] = [];
    const keys: Array<string | null> = [];
    const ids: string[] = [];
    const retains: Array<number | null> = [];
    for (const [ord, i] of todo.entries()) {
      const { input } = batch[i] as PendingAppend;
      ords.push(ord);
      channels.push(input.channel);
      senders.push(input.from);
      data.push(JSON.stringify(input.data === undefined ? null : input.data));
      keys.push(input.idempotencyKey ?? null);
      ids.push(randomUUID());
      retains.push(input.retain ?? null);
    }
    const values = [ords, channels, senders, data, keys, ids, retains, now, now - IDEMPOTENCY_WINDOW_MS];

    const client = await this.pool.connect();
    let rows: BatchRow[];
    try {
      if (locked) {
        await client.query('BEGIN');
        try {
          await client.query(LOCK_CHANNELS_SQL, [[...new Set(channels)].sort()]);
          rows = (await client.queryPrepared<BatchRow>(BATCH_STATEMENT, BATCH_SQL, values)).rows;
          await client.query('COMMIT');
        } catch (error) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw error;
        }
      } else {
        rows = (await client.queryPrepared<BatchRow>(BATCH_STATEMENT, BATCH_SQL, values)).rows;
      }
    } finally {
      client.release();
    }

    const ts = new Date(now).toISOString();
    for (const row of rows) {
      const i = todo[row.ord] as number;
      const { input } = batch[i] as PendingAppend;
      if (row.id === null) {
        const message: StoredMessage = {
          id: ids[row.ord] as string,
          channel: input.channel,
          offset: Number(row.seq),
          epoch: this.epoch,
          from: input.from,
          data: input.data === undefined ? null : input.data,
          ts,
        };
        results[i] = { message, duplicate: false, dataJson: data[row.ord] as string };
      } else {
        const stored = { seq: row.seq, id: row.id, sender: input.from, data: row.data ?? 'null', ts: row.ts ?? 0 };
        results[i] = { message: this.toMessage(input.channel, stored), duplicate: true };
      }
    }
    return todo.filter((i) => results[i] === undefined);
  }

  /**
   * Expired keys are ignored by BATCH_SQL; deleting them once a minute per
   * instance keeps the table to about one window of keys. It runs on a
   * connection of its own beside the writer, so no batch waits for it.
   */
  private pruneKeys(now: number): void {
    if (now < this.nextKeyPrune || this.pruning) return;
    this.nextKeyPrune = now + KEY_PRUNE_INTERVAL_MS;
    this.pruning = (async () => {
      try {
        const client = await this.pool.connect();
        try {
          await client.query('DELETE FROM idempotency_keys WHERE ts <= $1', [now - IDEMPOTENCY_WINDOW_MS]);
        } finally {
          client.release();
        }
      } catch (error) {
        // The next prune catches up; an outage is reported by the batches themselves.
        this.log?.debug({ err: error }, 'could not prune expired idempotency keys');
      } finally {
        this.pruning = undefined;
      }
    })();
  }

  private toMessage(channel: string, row: MessageRow): StoredMessage {
    return {
      id: row.id,
      channel,
      offset: Number(row.seq),
      epoch: this.epoch,
      from: row.sender,
      data: JSON.parse(row.data),
      ts: new Date(Number(row.ts)).toISOString(),
    };
  }

  private async read<R>(text: string, values: readonly unknown[]): Promise<R[]> {
    if (this.closed) throw new ParleyError('unavailable', 'the message store is closed');
    let client: PgClient;
    try {
      client = await this.pool.connect();
    } catch (error) {
      throw error instanceof ParleyError ? error : unavailable('PostgreSQL is unreachable', error);
    }
    try {
      return (await client.query<R>(text, values)).rows;
    } catch (error) {
      throw error instanceof ParleyError ? error : unavailable('the message store failed to read', error);
    } finally {
      client.release();
    }
  }

  async position(channel: string): Promise<ChannelPosition> {
    const rows = await this.read<{ last_seq: number | string }>('SELECT last_seq FROM channels WHERE name = $1', [
      channel,
    ]);
    return { offset: rows[0] ? Number(rows[0].last_seq) : 0, epoch: this.epoch };
  }

  async positions(channels: string[]): Promise<Map<string, number>> {
    const result = new Map<string, number>(channels.map((channel) => [channel, 0]));
    if (channels.length === 0) return result;
    const rows = await this.read<{ name: string; last_seq: number | string }>(
      'SELECT name, last_seq FROM channels WHERE name = ANY($1::text[])',
      [channels],
    );
    for (const row of rows) result.set(row.name, Number(row.last_seq));
    return result;
  }

  async range(channel: string, after: number, upTo: number): Promise<StoredMessage[]> {
    const rows = await this.read<MessageRow>(
      `SELECT ${columns} FROM messages WHERE channel = $1 AND seq > $2 AND seq <= $3 ORDER BY seq`,
      [channel, after, upTo],
    );
    return rows.map((row) => this.toMessage(channel, row));
  }

  async history(channel: string, before: number | null | undefined, limit: number): Promise<HistoryPage> {
    const rows =
      before == null
        ? await this.read<MessageRow>(`SELECT ${columns} FROM messages WHERE channel = $1 ORDER BY seq DESC LIMIT $2`, [
            channel,
            limit + 1,
          ])
        : await this.read<MessageRow>(
            `SELECT ${columns} FROM messages WHERE channel = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3`,
            [channel, before, limit + 1],
          );
    const hasMore = rows.length > limit;
    if (hasMore) rows.pop();
    rows.reverse();
    return { messages: rows.map((row) => this.toMessage(channel, row)), hasMore };
  }

  async ping(): Promise<void> {
    await this.read('SELECT 1', []);
  }

  /** Writes what is queued, then refuses more; the pool itself is ended by the Database. */
  close(): Promise<void> {
    if (!this.closing) {
      this.closed = true;
      this.closing = this.startWriter().then(() => this.pruning);
    }
    return this.closing;
  }
}
