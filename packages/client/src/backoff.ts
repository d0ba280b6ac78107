export interface BackoffOptions {
  initialMs?: number;
  maxMs?: number;
  /**
   * A connection counts as healthy, and the next failure starts the backoff
   * over, once it has stayed up this long after its `welcome` (default
   * 10000). A shorter one (a server that closes 4008 or 4009 right after the
   * welcome) keeps the delays growing.
   */
  resetAfterMs?: number;
  /** The jitter source, uniform in [0, 1); default Math.random. */
  random?: () => number;
}

export const DEFAULT_BACKOFF = { initialMs: 500, maxMs: 30_000, resetAfterMs: 10_000 } as const;

/**
 * Exponential backoff with full jitter: a uniform delay in [0, min(max, initial·2^attempt)).
 * Full jitter spreads a crowd of clients that lost the same server, so they do not all
 * come back in the same instant.
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = {},
  random: () => number = options.random ?? Math.random,
): number {
  const initialMs = options.initialMs ?? DEFAULT_BACKOFF.initialMs;
  const maxMs = options.maxMs ?? DEFAULT_BACKOFF.maxMs;
  // 2^attempt overflows to Infinity long before it matters; the cap keeps it finite.
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.max(0, attempt));
  return Math.floor(random() * ceiling);
}

/**
 * The reconnect policy: how long to wait before the next attempt. The
 * attempt count goes back to 0 only after a connection stayed healthy for
 * `resetAfterMs`, not on every welcome: the server may close 4008, 4009 or
 * 1011 right after the welcome, and resetting there would turn "back off"
 * into a tight reconnect loop. Pure but for the clock, which a test injects.
 */
export class ReconnectBackoff {
  private attempt = 0;
  /** When the current connection got its welcome; undefined while not welcomed. */
  private welcomedAt: number | undefined;

  constructor(
    private readonly options: BackoffOptions = {},
    private readonly now: () => number = Date.now,
  ) {}

  /** Attempts counted since the last healthy connection. */
  get attempts(): number {
    return this.attempt;
  }

  /** A connection got its welcome. */
  welcomed(): void {
    this.welcomedAt = this.now();
  }

  /** The connection, or an attempt at one, failed: the delay before the next attempt. */
  next(): number {
    const resetAfterMs = this.options.resetAfterMs ?? DEFAULT_BACKOFF.resetAfterMs;
    if (this.welcomedAt !== undefined && this.now() - this.welcomedAt >= resetAfterMs) this.attempt = 0;
    this.welcomedAt = undefined;
    return backoffDelay(this.attempt++, this.options);
  }

  /** The app started over (`connect()`): the first retry is quick again. */
  reset(): void {
    this.attempt = 0;
    this.welcomedAt = undefined;
  }
}

/** The wait after close 1001 (server shutting down): the contract's random 0–5 s. */
export const GOING_AWAY_MAX_MS = 5000;
