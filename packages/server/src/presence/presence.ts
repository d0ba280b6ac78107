export interface PresenceEntry {
  user: string;
  /** That user's connections subscribed to the channel. */
  connections: number;
}

/**
 * Who is subscribed to a channel, per user and connection.
 *
 * The contract every implementation keeps (test/presence.conformance.test.ts):
 * - `add` returns true exactly when the user had no connection in the
 *   channel before (a join); `remove` returns true exactly when it removed the
 *   user's last one (a leave). Adding a connection twice counts it once.
 * - `list` counts connections of every instance sharing the store; users
 *   are listed in name order.
 */
export interface PresenceStore {
  readonly name: string;
  add(channel: string, user: string, connectionId: string): Promise<boolean>;
  remove(channel: string, user: string, connectionId: string): Promise<boolean>;
  list(channel: string): Promise<PresenceEntry[]>;
  /**
   * Removes connections of instances that died without a word, in the given
   * channels, and returns the users that thereby left (their last connection
   * was among them). Each such leave is returned to exactly one caller.
   */
  reap(channels: string[]): Promise<Array<{ channel: string; user: string }>>;
  /** false while the store cannot reach its backend (Redis down) and after close; in-process: always true. /readyz reports it. */
  isReady(): boolean;
  close(): Promise<void>;
}
