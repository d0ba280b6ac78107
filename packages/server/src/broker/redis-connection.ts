import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { ParleyError } from '../errors.ts';

/**
 * Opening the Redis connections of the broker (broker/redis.ts) and of the
 * presence store (presence/redis.ts), with the options both rely on. The
 * only module besides those two that imports ioredis.
 *
 * Every connection fails fast while Redis is away instead of queueing:
 * commands sent while it is not ready reject at once (no offline queue) and
 * commands in flight when it drops reject at once (no retry, no resend).
 * ioredis reconnects by itself with a capped, jittered backoff.
 */

/** How long start-up waits for Redis before giving up. */
export const REDIS_CONNECT_TIMEOUT_MS = 5000;
/** Upper bound of the reconnect backoff. */
export const REDIS_MAX_BACKOFF_MS = 2000;

/** Reconnect delay after the `attempt`-th consecutive failure: 50 ms doubling up to the cap, with jitter. */
export function reconnectDelay(attempt: number): number {
  const base = Math.min(REDIS_MAX_BACKOFF_MS, 50 * 2 ** Math.min(attempt, 16));
  return Math.round(base / 2 + Math.random() * (base / 2));
}

/** The URL without its password, for logs and errors. */
export function redactRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return 'redis://…';
  }
}

export interface OpenRedisOptions {
  url: string;
  /** Shows in CLIENT LIST as `parley-<role>`. */
  role: string;
  log: Logger;
  connectTimeoutMs?: number | undefined;
}

/**
 * Connects and resolves once the connection is ready; rejects with an error
 * naming REDIS_URL when Redis cannot be reached within the timeout.
 */
export async function openRedis(options: OpenRedisOptions): Promise<Redis> {
  const timeoutMs = options.connectTimeoutMs ?? REDIS_CONNECT_TIMEOUT_MS;
  const client = new Redis(options.url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    autoResubscribe: false,
    connectTimeout: Math.min(timeoutMs, 2000),
    keepAlive: 10_000,
    disableClientInfo: true,
    connectionName: `parley-${options.role}`,
    retryStrategy: reconnectDelay,
  });
  let lastError: Error | undefined;
  // Without a listener an 'error' event would crash the process; connection
  // errors repeat on every reconnect attempt, so they are only kept for the
  // start-up message. Lost and restored connections are logged by the owners.
  client.on('error', (error: Error) => {
    lastError = error;
    options.log.debug({ err: error, role: options.role }, 'redis error');
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      new Promise<void>((resolve) => client.once('ready', () => resolve())),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const reason = lastError ? ` (${lastError.message})` : '';
          reject(
            new Error(
              `REDIS_URL: cannot reach Redis at ${redactRedisUrl(options.url)} within ${timeoutMs / 1000} s${reason}`,
            ),
          );
        }, timeoutMs);
      }),
      client.connect().catch(() => new Promise<never>(() => {})),
    ]);
  } catch (error) {
    client.disconnect();
    throw error;
  } finally {
    clearTimeout(timer);
  }
  return client;
}

/** Closes a connection: QUIT when it is up (pending replies arrive first), else drop it. */
export async function closeRedis(client: Redis): Promise<void> {
  if (client.status === 'ready') {
    try {
      await client.quit();
      return;
    } catch {
      // Fall through to a hard disconnect.
    }
  }
  client.disconnect();
}

/** The error a backend method rejects with while Redis cannot be used. */
export function redisUnavailable(cause?: unknown): ParleyError {
  const detail = cause instanceof Error ? `: ${cause.message}` : '';
  const error = new ParleyError('unavailable', `Redis is unavailable${detail}`);
  if (cause !== undefined) (error as Error & { cause?: unknown }).cause = cause;
  return error;
}
