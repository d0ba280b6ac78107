import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from '../../../../deploy/local-cluster.ts';

/**
 * Redis for tests. The machine's Redis (REDIS_TEST_URL, default
 * 127.0.0.1:6379) is shared with other runs and CI: every test run uses
 * its own key prefix and deletes its keys after, never FLUSHALL. Tests that
 * stop Redis start their own server with `startRedisServer`.
 */

export const REDIS_TEST_URL = process.env.REDIS_TEST_URL ?? 'redis://127.0.0.1:6379';
export const REDIS_SERVER_BINARY = process.env.REDIS_SERVER_BINARY ?? '/usr/bin/redis-server';

/** A key prefix no other run uses; valid as REDIS_KEY_PREFIX. */
export function uniqueRedisPrefix(label = 'test'): string {
  return `parley-test:${label}:${process.pid}-${randomBytes(4).toString('hex')}:`;
}

/** A client that fails fast instead of retrying forever (tests wait on conditions, never on reconnects). */
export function testRedisClient(url = REDIS_TEST_URL): Redis {
  return new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    retryStrategy: () => null,
  });
}

/** Undefined when Redis at `url` answers PING within 2 s, else why not. */
export async function redisUnreachable(url = REDIS_TEST_URL): Promise<string | undefined> {
  const client = testRedisClient(url);
  let cause: Error | undefined;
  client.on('error', (error: Error) => {
    cause ??= error;
  });
  try {
    await client.connect();
    await client.ping();
    return undefined;
  } catch (error) {
    const reason = cause ?? error;
    return `Redis at ${url} is unreachable (${reason instanceof Error ? reason.message : String(reason)})`;
  } finally {
    client.disconnect();
  }
}

/**
 * The `skip` value of a Redis suite: a reason when Redis is unreachable,
 * false when it answers. In CI (CI=true) a skipped suite counts as a
 * failure, so there an unreachable Redis throws instead.
 */
export async function redisSkipReason(url = REDIS_TEST_URL): Promise<string | false> {
  const reason = await redisUnreachable(url);
  if (reason === undefined) return false;
  if (process.env.CI === 'true') throw new Error(`${reason}; CI=true, so the Redis tests may not be skipped`);
  return reason;
}

/** The `skip` value of a suite that starts its own redis-server (startRedisServer); throws in CI like redisSkipReason. */
export function redisServerSkipReason(): string | false {
  if (existsSync(REDIS_SERVER_BINARY)) return false;
  const reason = `${REDIS_SERVER_BINARY} is not installed (set REDIS_SERVER_BINARY)`;
  if (process.env.CI === 'true') throw new Error(`${reason}; CI=true, so the Redis tests may not be skipped`);
  return reason;
}

const escapeGlob = (text: string) => text.replace(/[*?[\]\\]/g, '\\$&');

/** Deletes every key starting with `prefix` (SCAN MATCH + UNLINK, bounded by the keys that exist). */
export async function cleanupRedisPrefix(prefix: string, url = REDIS_TEST_URL): Promise<number> {
  if (!prefix) throw new Error('cleanupRedisPrefix: an empty prefix would match every key');
  const client = testRedisClient(url);
  client.on('error', () => {});
  let deleted = 0;
  try {
    await client.connect();
    let cursor = '0';
    // SCAN ends when the cursor comes back to 0; the bound only guards against a server that misbehaves.
    for (let rounds = 0; rounds < 100_000; rounds++) {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${escapeGlob(prefix)}*`, 'COUNT', 1000);
      if (keys.length > 0) deleted += await client.unlink(...keys);
      cursor = next;
      if (cursor === '0') break;
    }
  } finally {
    client.disconnect();
  }
  return deleted;
}

/** Keys under `prefix` (for assertions that a test left nothing behind). */
export async function redisKeys(prefix: string, url = REDIS_TEST_URL): Promise<string[]> {
  const client = testRedisClient(url);
  client.on('error', () => {});
  const found: string[] = [];
  try {
    await client.connect();
    let cursor = '0';
    for (let rounds = 0; rounds < 100_000; rounds++) {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${escapeGlob(prefix)}*`, 'COUNT', 1000);
      found.push(...keys);
      cursor = next;
      if (cursor === '0') break;
    }
  } finally {
    client.disconnect();
  }
  return found;
}

export interface RedisServer {
  url: string;
  port: number;
  /** Stops the server (SIGTERM, SIGKILL after 5 s) and waits for it to exit. */
  stop(): Promise<void>;
  /** Starts it again on the same port (after `stop`, or stops it first), empty: nothing is persisted. */
  restart(): Promise<void>;
  /** Stops it for good and removes its directory. */
  close(): Promise<void>;
}

/** Resolves once Redis at `url` answers PING; rejects after `timeoutMs`. */
export async function waitForRedis(url: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (let attempt = 0; attempt < 1000 && Date.now() < deadline; attempt++) {
    const reason = await redisUnreachable(url);
    if (reason === undefined) return;
    last = reason;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`Redis at ${url} did not come up within ${timeoutMs} ms: ${last}`);
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * Starts this test's own redis-server on a free 127.0.0.1 port, persisting
 * nothing (`--save "" --appendonly no`), so it can be stopped and restarted
 * without touching the shared one. Only this process is ever killed.
 */
export async function startRedisServer(): Promise<RedisServer> {
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  const dir = mkdtempSync(join(tmpdir(), 'parley-redis-'));
  let child: ChildProcess | undefined;

  async function start(): Promise<void> {
    const proc = spawn(
      REDIS_SERVER_BINARY,
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
        '--daemonize',
        'no',
        '--loglevel',
        'warning',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    proc.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child = proc;
    running.add(proc);
    proc.once('exit', () => running.delete(proc));
    const exited = once(proc, 'exit').then(([code]) => {
      throw new Error(`redis-server on port ${port} exited with ${String(code)}: ${stderr.trim()}`);
    });
    exited.catch(() => {});
    await Promise.race([waitForRedis(url), exited]);
  }

  async function stop(): Promise<void> {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exit = once(proc, 'exit');
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
    await exit;
    clearTimeout(timer);
  }

  await start();
  return {
    url,
    port,
    async stop() {
      await stop();
    },
    async restart() {
      await stop();
      await start();
    },
    async close() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
