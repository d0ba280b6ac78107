/** A message as stored and as sent on the wire (PROTOCOL §3, "A message M"). */
export interface StoredMessage {
  id: string;
  channel: string;
  offset: number;
  epoch: string;
  from: string;
  data: unknown;
  /** ISO 8601 */
  ts: string;
}

export interface AppendInput {
  channel: string;
  from: string;
  data: unknown;
  /** Scoped to (channel, from); remembered for IDEMPOTENCY_WINDOW_MS. */
  idempotencyKey?: string | undefined;
  /** Keep only the newest `retain` messages of the channel; unset keeps all. */
  retain?: number | undefined;
}

export interface AppendResult {
  message: StoredMessage;
  /** true when the idempotency key matched: nothing new was stored. */
  duplicate: boolean;
  /**
   * `JSON.stringify(message.data)`, when the store made it anyway (to store
   * it): the caller builds the message's JSON around it (`messageJson`)
   * instead of stringifying the data a second time.
   */
  dataJson?: string;
}

export interface ChannelPosition {
  /** Latest offset in the channel, 0 when it has none. */
  offset: number;
  epoch: string;
}

export interface HistoryPage {
  /** Oldest first. */
  messages: StoredMessage[];
  hasMore: boolean;
}

export const IDEMPOTENCY_WINDOW_MS = 10 * 60 * 1000;
/** How often a store deletes the idempotency keys older than the window (they are ignored anyway). */
export const KEY_PRUNE_INTERVAL_MS = 60 * 1000;

export interface MessageStoreOptions {
  /**
   * The clock (ms since the epoch) that stamps messages and judges the
   * idempotency window; tests move it instead of waiting ten minutes.
   */
  now?: (() => number) | undefined;
}

/**
 * Durable, ordered message history per channel.
 *
 * The contract every implementation keeps (tested by
 * test/store.conformance.test.ts on each backend):
 * - `append` is atomic: a message gets the channel's next offset (1, 2, 3…,
 *   no gap, no reuse), and appends resolve in offset order per channel, also
 *   when several processes share the store.
 * - Appends called one after another by one process are numbered in call
 *   order, without awaiting each: a connection queues its publishes in the
 *   order received and relies on this for "stored in the order sent".
 * - Appends given in one event-loop turn may be committed together (group
 *   commit); each still resolves with its own message.
 * - An `idempotencyKey` seen from the same sender in the same channel within
 *   IDEMPOTENCY_WINDOW_MS returns the first message with `duplicate: true`,
 *   also when `retain` has trimmed that message from the history since (keys
 *   are kept apart from the messages and expire by age only). After the
 *   window the key is free: the next append with it stores a new message.
 * - `epoch` changes only when the history is lost (a new database).
 * - Any failure to reach the database rejects with ParleyError `unavailable`.
 */
export interface MessageStore {
  readonly epoch: string;
  append(input: AppendInput): Promise<AppendResult>;
  position(channel: string): Promise<ChannelPosition>;
  /** Latest offsets of several channels in one round trip (0 for a channel without messages). */
  positions(channels: string[]): Promise<Map<string, number>>;
  /** Messages with `after < offset <= upTo`, oldest first. */
  range(channel: string, after: number, upTo: number): Promise<StoredMessage[]>;
  /** Up to `limit` messages before `before` (exclusive; latest when unset or null), oldest first. */
  history(channel: string, before: number | null | undefined, limit: number): Promise<HistoryPage>;
  /** Resolves when the database answers; rejects otherwise. */
  ping(): Promise<void>;
  /** Flushes pending appends, then releases the database. */
  close(): Promise<void>;
}
