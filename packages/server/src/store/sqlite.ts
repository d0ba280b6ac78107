import { randomUUID } from 'node:crypto';
import { ParleyError } from '../errors.ts';
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

/** The slice of better-sqlite3 this store uses (structural, as Kysely does). */
export interface SqliteHandle {
  prepare(source: string): SqliteStatement;
  transaction<A extends unknown[], R>(fn: (...args: A) => R): { immediate(...args: A): R };
}
interface SqliteStatement {
  run(...params: unknown[]): { changes: number };
  get(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
}

interface MessageRow {
  seq: number;
  id: string;
  sender: string;
  data: string;
  ts: number;
}

interface KeyRow {
  seq: number;
  id: string;
  data: string;
  ts: number;
}

interface PendingAppend {
  input: AppendInput;
  resolve(result: AppendResult): void;
  reject(error: unknown): void;
}

/**
 * The embedded message store: one SQLite file (or `:memory:`), one instance.
 *
 * better-sqlite3 is synchronous, so an append is queued and every append of
 * one event-loop turn is written in a single transaction on the next
 * (group commit): under load a thousand publishes cost one commit, and a lone
 * publish waits one turn of the loop.
 */
export class SqliteMessageStore implements MessageStore {
  readonly epoch: string;
  private pending: PendingAppend[] = [];
  private flushScheduled = false;
  /** Commits held by the checkpointer while it empties the log (checkpointer.ts): appends queue meanwhile. */
  private held = false;
  private closed = false;
  private readonly now: () => number;
  /** When the write transaction next deletes expired idempotency keys. */
  private nextKeyPrune = 0;

  private readonly selectLastSeq: SqliteStatement;
  private readonly upsertChannel: SqliteStatement;
  private readonly insertMessage: SqliteStatement;
  private readonly selectByIdempotencyKey: SqliteStatement;
  private readonly claimIdempotencyKey: SqliteStatement;
  private readonly deleteExpiredKeys: SqliteStatement;
  private readonly deleteOlderThan: SqliteStatement;
  private readonly selectRange: SqliteStatement;
  private readonly selectLatest: SqliteStatement;
  private readonly selectBefore: SqliteStatement;
  private readonly selectOne: SqliteStatement;
  private readonly writeBatch: (batch: PendingAppend[]) => AppendResult[];

  constructor(sqlite: SqliteHandle, options: MessageStoreOptions = {}) {
    this.now = options.now ?? Date.now;
    const epochRow = sqlite.prepare("SELECT value FROM meta WHERE key = 'epoch'").get() as
      | { value: string }
      | undefined;
    if (!epochRow) throw new Error('store is not migrated: meta.epoch is missing');
    this.epoch = epochRow.value;

    const columns = 'seq, id, sender, data, ts';
    this.selectLastSeq = sqlite.prepare('SELECT last_seq FROM channels WHERE name = ?');
    this.upsertChannel = sqlite.prepare(
      'INSERT INTO channels (name, last_seq) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET last_seq = excluded.last_seq',
    );
    this.insertMessage = sqlite.prepare(
      'INSERT INTO messages (channel, seq, id, sender, data, ts) VALUES (?, ?, ?, ?, ?, ?)',
    );
    // Keys live in their own table, so trimming the history (retain) does not forget them.
    this.selectByIdempotencyKey = sqlite.prepare(
      'SELECT seq, id, data, ts FROM idempotency_keys WHERE channel = ? AND sender = ? AND idem_key = ? AND ts > ?',
    );
    // Claims a key for a new message: inserts it, or takes over an expired row (used before the
    // window's start, the last parameter). A live row is left alone: no change, the append is a retry.
    this.claimIdempotencyKey = sqlite.prepare(
      `INSERT INTO idempotency_keys (channel, sender, idem_key, seq, id, data, ts) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (channel, sender, idem_key) DO UPDATE
       SET seq = excluded.seq, id = excluded.id, data = excluded.data, ts = excluded.ts
       WHERE idempotency_keys.ts <= ?`,
    );
    this.deleteExpiredKeys = sqlite.prepare('DELETE FROM idempotency_keys WHERE ts <= ?');
    this.deleteOlderThan = sqlite.prepare('DELETE FROM messages WHERE channel = ? AND seq <= ?');
    this.selectRange = sqlite.prepare(
      `SELECT ${columns} FROM messages WHERE channel = ? AND seq > ? AND seq <= ? ORDER BY seq`,
    );
    this.selectLatest = sqlite.prepare(`SELECT ${columns} FROM messages WHERE channel = ? ORDER BY seq DESC LIMIT ?`);
    this.selectBefore = sqlite.prepare(
      `SELECT ${columns} FROM messages WHERE channel = ? AND seq < ? ORDER BY seq DESC LIMIT ?`,
    );
    this.selectOne = sqlite.prepare('SELECT 1');
    // IMMEDIATE takes the write lock up front, so a second process on the same
    // file waits (busy_timeout) instead of failing mid-batch on a stale snapshot.
    const transaction = sqlite.transaction((batch: PendingAppend[]) => this.write(batch));
    this.writeBatch = (batch) => transaction.immediate(batch);
  }

  append(input: AppendInput): Promise<AppendResult> {
    if (this.closed) return Promise.reject(new ParleyError('unavailable', 'the message store is closed'));
    return new Promise((resolve, reject) => {
      this.pending.push({ input, resolve, reject });
      if (!this.flushScheduled && !this.held) {
        this.flushScheduled = true;
        setImmediate(this.flush);
      }
    });
  }

  holdWrites(): void {
    this.held = true;
  }

  resumeWrites(): void {
    if (!this.held) return;
    this.held = false;
    if (this.pending.length > 0 && !this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    if (this.held) return;
    const batch = this.pending;
    if (batch.length === 0) return;
    this.pending = [];
    let results: AppendResult[];
    try {
      results = this.writeBatch(batch);
    } catch (cause) {
      const error = new ParleyError('unavailable', 'the message store failed to write');
      error.cause = cause;
      for (const item of batch) item.reject(error);
      return;
    }
    for (let i = 0; i < batch.length; i++) batch[i]?.resolve(results[i] as AppendResult);
  };

  /** Runs inside one transaction. */
  private write(batch: PendingAppend[]): AppendResult[] {
    const now = this.now();
    const ts = new Date(now).toISOString();
    const lastSeq = new Map<string, number>();
    const retain = new Map<string, number>();
    const results: AppendResult[] = new Array(batch.length);

    for (let i = 0; i < batch.length; i++) {
      const { channel, from, data, idempotencyKey } = (batch[i] as PendingAppend).input;
      let seq = lastSeq.get(channel);
      if (seq === undefined) {
        const row = this.selectLastSeq.get(channel) as { last_seq: number } | undefined;
        seq = row ? row.last_seq : 0;
      }
      seq += 1;
      const id = randomUUID();
      const value = data === undefined ? null : data;
      const json = JSON.stringify(value);
      // The key is claimed first, in one statement: a fresh key (nearly every one) costs no look-up.
      // A key used earlier in this same batch is already in the table: the transaction sees its own rows.
      if (
        idempotencyKey !== undefined &&
        this.claimIdempotencyKey.run(channel, from, idempotencyKey, seq, id, json, now, now - IDEMPOTENCY_WINDOW_MS)
          .changes === 0
      ) {
        results[i] = { message: this.findByKey(channel, from, idempotencyKey, now) as StoredMessage, duplicate: true };
        continue;
      }
      lastSeq.set(channel, seq);
      this.insertMessage.run(channel, seq, id, from, json, now);
      const message: StoredMessage = { id, channel, offset: seq, epoch: this.epoch, from, data: value, ts };
      const keep = (batch[i] as PendingAppend).input.retain;
      if (keep !== undefined) retain.set(channel, keep);
      results[i] = { message, duplicate: false, dataJson: json };
    }

    for (const [channel, seq] of lastSeq) this.upsertChannel.run(channel, seq);
    for (const [channel, keep] of retain) {
      const last = lastSeq.get(channel) as number;
      if (last > keep) this.deleteOlderThan.run(channel, last - keep);
    }
    // Expired keys are ignored by the look-up; deleting them once a minute, in
    // this same transaction, keeps the table to about one window of keys.
    if (now >= this.nextKeyPrune) {
      this.nextKeyPrune = now + KEY_PRUNE_INTERVAL_MS;
      this.deleteExpiredKeys.run(now - IDEMPOTENCY_WINDOW_MS);
    }
    return results;
  }

  private findByKey(channel: string, from: string, key: string, now: number): StoredMessage | undefined {
    const row = this.selectByIdempotencyKey.get(channel, from, key, now - IDEMPOTENCY_WINDOW_MS) as KeyRow | undefined;
    return row ? this.toMessage(channel, { ...row, sender: from }) : undefined;
  }

  private toMessage(channel: string, row: MessageRow): StoredMessage {
    return {
      id: row.id,
      channel,
      offset: row.seq,
      epoch: this.epoch,
      from: row.sender,
      data: JSON.parse(row.data),
      ts: new Date(row.ts).toISOString(),
    };
  }

  private read<T>(fn: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new ParleyError('unavailable', 'the message store is closed'));
    try {
      return Promise.resolve(fn());
    } catch (cause) {
      const error = new ParleyError('unavailable', 'the message store failed to read');
      error.cause = cause;
      return Promise.reject(error);
    }
  }

  position(channel: string): Promise<ChannelPosition> {
    return this.read(() => {
      const row = this.selectLastSeq.get(channel) as { last_seq: number } | undefined;
      return { offset: row ? row.last_seq : 0, epoch: this.epoch };
    });
  }

  positions(channels: string[]): Promise<Map<string, number>> {
    return this.read(() => {
      const result = new Map<string, number>();
      for (const channel of channels) {
        const row = this.selectLastSeq.get(channel) as { last_seq: number } | undefined;
        result.set(channel, row ? row.last_seq : 0);
      }
      return result;
    });
  }

  range(channel: string, after: number, upTo: number): Promise<StoredMessage[]> {
    return this.read(() =>
      (this.selectRange.all(channel, after, upTo) as MessageRow[]).map((row) => this.toMessage(channel, row)),
    );
  }

  history(channel: string, before: number | null | undefined, limit: number): Promise<HistoryPage> {
    return this.read(() => {
      const rows = (
        before == null ? this.selectLatest.all(channel, limit + 1) : this.selectBefore.all(channel, before, limit + 1)
      ) as MessageRow[];
      const hasMore = rows.length > limit;
      if (hasMore) rows.pop();
      rows.reverse();
      return { messages: rows.map((row) => this.toMessage(channel, row)), hasMore };
    });
  }

  ping(): Promise<void> {
    return this.read(() => {
      this.selectOne.get();
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.held = false;
    this.flush();
    this.closed = true;
  }
}
