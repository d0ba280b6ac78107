/**
 * The `exp` claim (seconds since the epoch) of a JWT, read without verifying
 * the signature: the client only needs to know when to refresh, the server
 * does the verifying. Undefined when the token is not a JWT or has no numeric exp.
 */
export function decodeJwtExp(token: string): number | undefined {
  const payload = token.split('.')[1];
  if (payload === undefined || payload === '') return undefined;
  try {
    const base64 = payload
      .replace(/-/g, '+')
      .replace(/_/g, '/')
      .padEnd(Math.ceil(payload.length / 4) * 4, '=');
    // atob yields one char per byte; TextDecoder turns the UTF-8 bytes back into text (a `sub` may not be ASCII).
    const bytes = Uint8Array.from(atob(base64), (char) => char.charCodeAt(0));
    const claims: unknown = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof claims !== 'object' || claims === null) return undefined;
    const exp = (claims as { exp?: unknown }).exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp : undefined;
  } catch {
    return undefined;
  }
}

/** Below this, refreshes would follow each other in a tight loop when a getter keeps returning a short-lived token. */
export const MIN_REFRESH_DELAY_MS = 1000;

/**
 * How long to wait before refreshing a token that expires at `exp`: `marginMs`
 * before it, or halfway through its remaining life when the margin is longer
 * than that (so short-lived tokens are still refreshed once per half-life,
 * not continuously), never less than MIN_REFRESH_DELAY_MS.
 */
export function refreshDelay(exp: number, marginMs: number, now: number = Date.now()): number {
  const remaining = exp * 1000 - now;
  const delay = Math.max(remaining - marginMs, remaining / 2, MIN_REFRESH_DELAY_MS);
  // setTimeout fires at once for delays beyond 2^31-1 ms.
  return Math.min(Math.floor(delay), 2_147_483_647);
}
