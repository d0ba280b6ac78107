/**
 * Sign-in throttling for `POST /auth/token` (PROTOCOL §4: "429 once wrong
 * passwords are hammered").
 *
 * - 5 failed sign-ins for one username within 15 minutes lock that username.
 * - 20 failed sign-ins from one client address within 15 minutes lock that
 *   address. An IPv6 client counts as its /64, since one host usually owns
 *   the whole prefix.
 * - The 15 minutes start at the first failure; a lock lasts until they end.
 *   While locked, every attempt gets 429 `rate_limited` with `Retry-After`
 *   (seconds until the lock ends), even with the right password, and is not
 *   counted.
 * - Only failures count. A successful sign-in clears that username's
 *   failures, not the address's (or one valid account would let an attacker
 *   reset the address limit at will).
 * - An attempt counts as a failure from the moment it starts until its
 *   password checks out, so a burst of parallel guesses cannot all slip in
 *   before the first one has failed.
 *
 * Counters live in memory, per instance: with several instances behind a
 * load balancer an attacker gets the limits once per instance. Anyone can
 * lock a username for 15 minutes by failing on purpose; that is the price of
 * stopping password guessing against it.
 */
export const LOGIN_LIMITS = {
  windowMs: 15 * 60 * 1000,
  maxFailuresPerUsername: 5,
  maxFailuresPerAddress: 20,
  /** Most usernames and most addresses tracked at once; past it the oldest entries are dropped. */
  maxEntries: 100_000,
} as const;

export interface LoginLimiterOptions {
  windowMs?: number;
  maxFailuresPerUsername?: number;
  maxFailuresPerAddress?: number;
  maxEntries?: number;
  now?: () => number;
}

interface Entry {
  failures: number;
  /** When this window ends, ms since the epoch. */
  resetAt: number;
}

/**
 * Failures per key within a fixed window that starts at the first failure.
 * Every window has the same length and the Map keeps insertion order, so the
 * oldest entry is always first and expires first: sweeping stops at the first
 * live entry, and dropping the first is dropping the oldest.
 */
class FailureCounter {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    private readonly maxEntries: number,
  ) {}

  /** When the lock on `key` ends, or undefined when it is not locked. */
  lockedUntil(key: string, now: number): number | undefined {
    const entry = this.live(key, now);
    return entry && entry.failures >= this.limit ? entry.resetAt : undefined;
  }

  fail(key: string, now: number): void {
    this.sweep(now);
    const entry = this.live(key, now);
    if (entry) {
      entry.failures++;
      return;
    }
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    this.entries.set(key, { failures: 1, resetAt: now + this.windowMs });
  }

  /** Takes back one failure counted ahead of time. */
  refund(key: string, now: number): void {
    const entry = this.live(key, now);
    if (entry && entry.failures > 0) entry.failures--;
  }

  clear(key: string): void {
    this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }

  private live(key: string, now: number): Entry | undefined {
    const entry = this.entries.get(key);
    if (entry && entry.resetAt <= now) {
      this.entries.delete(key);
      return undefined;
    }
    return entry;
  }

  private sweep(now: number): void {
    for (const [key, entry] of this.entries) {
      if (entry.resetAt > now) break;
      this.entries.delete(key);
    }
  }
}

export class LoginLimiter {
  private readonly usernames: FailureCounter;
  private readonly addresses: FailureCounter;
  private readonly now: () => number;

  constructor(options: LoginLimiterOptions = {}) {
    const windowMs = options.windowMs ?? LOGIN_LIMITS.windowMs;
    const maxEntries = options.maxEntries ?? LOGIN_LIMITS.maxEntries;
    this.usernames = new FailureCounter(
      options.maxFailuresPerUsername ?? LOGIN_LIMITS.maxFailuresPerUsername,
      windowMs,
      maxEntries,
    );
    this.addresses = new FailureCounter(
      options.maxFailuresPerAddress ?? LOGIN_LIMITS.maxFailuresPerAddress,
      windowMs,
      maxEntries,
    );
    this.now = options.now ?? Date.now;
  }

  /**
   * Call before checking a password. When the username or the address is
   * locked, returns the seconds until the lock ends and counts nothing.
   * Otherwise counts the attempt as a failure, to be taken back by
   * `succeeded`, and returns undefined.
   */
  attempt(username: string, address: string): number | undefined {
    const now = this.now();
    const key = addressKey(address);
    const until = Math.max(this.usernames.lockedUntil(username, now) ?? 0, this.addresses.lockedUntil(key, now) ?? 0);
    if (until > now) return Math.max(1, Math.ceil((until - now) / 1000));
    this.usernames.fail(username, now);
    this.addresses.fail(key, now);
    return undefined;
  }

  /** The password of an `attempt` was right: forget the username's failures and take back the address's one. */
  succeeded(username: string, address: string): void {
    this.usernames.clear(username);
    this.addresses.refund(addressKey(address), this.now());
  }

  /** How many usernames and addresses are tracked (for tests and metrics). */
  get tracked(): { usernames: number; addresses: number } {
    return { usernames: this.usernames.size, addresses: this.addresses.size };
  }
}

/** The key an address is counted under: an IPv4 address as is, an IPv6 one as its /64. */
export function addressKey(address: string): string {
  const ip = address.split('%')[0] ?? address;
  if (!ip.includes(':')) return ip;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped?.[1]) return mapped[1];
  const [head = '', tail] = ip.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  // A trailing dotted IPv4 (`64:ff9b::192.0.2.1`) fills two groups.
  const tailGroups =
    tail === undefined || tail === '' ? [] : tail.split(':').flatMap((g) => (g.includes('.') ? ['0', '0'] : [g]));
  const missing = Math.max(0, 8 - headGroups.length - tailGroups.length);
  const groups = [...headGroups, ...Array<string>(missing).fill('0'), ...tailGroups];
  const prefix = groups.slice(0, 4).map((group) => (Number.parseInt(group, 16) || 0).toString(16));
  return `${prefix.join(':')}::/64`;
}
