export interface BackoffOptions {
  initialMs?: number;
  maxMs?: number;
}

export const DEFAULT_BACKOFF = { initialMs: 500, maxMs: 30_000 } as const;

/**
 * Exponential backoff with full jitter: a uniform delay in [0, min(max, initial·2^attempt)).
 * Full jitter spreads a crowd of clients that lost the same server, so they do not all
 * come back in the same instant.
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  const initialMs = options.initialMs ?? DEFAULT_BACKOFF.initialMs;
  const maxMs = options.maxMs ?? DEFAULT_BACKOFF.maxMs;
  // 2^attempt overflows to Infinity long before it matters; the cap keeps it finite.
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.max(0, attempt));
  return Math.floor(random() * ceiling);
}

/** The wait after close 1001 (server shutting down): the contract's random 0–5 s. */
export const GOING_AWAY_MAX_MS = 5000;
