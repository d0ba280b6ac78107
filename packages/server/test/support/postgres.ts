import { randomBytes } from 'node:crypto';
import pg from 'pg';

/**
 * PostgreSQL for tests. The machine's server (PARLEY_TEST_POSTGRES_URL, an
 * admin connection, default postgres://postgres@127.0.0.1:5432/postgres) is
 * shared with other runs and CI: every test creates its own database
 * `parley_test_<random>` and drops it after (WITH (FORCE)); nothing else on
 * the server is touched, and the server is never stopped. Tests that need
 * PostgreSQL to fail put a TCP proxy (tcp-proxy.ts) in front of it.
 */

export const POSTGRES_ADMIN_URL = process.env.PARLEY_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  /** A postgres:// URL of the new, empty database, for DATABASE_URL. */
  url: string;
  name: string;
  /** Drops the database, closing whatever connections are still open to it. Idempotent. */
  drop(): Promise<void>;
}

async function admin<T>(work: (client: pg.Client) => Promise<T>, url = POSTGRES_ADMIN_URL): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000, query_timeout: 30_000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Undefined when PostgreSQL at the admin URL answers within 3 s, else why not. */
export async function postgresUnreachable(url = POSTGRES_ADMIN_URL): Promise<string | undefined> {
  try {
    await admin((client) => client.query('SELECT 1'), url);
    return undefined;
  } catch (error) {
    return `PostgreSQL at ${redact(url)} is unreachable (${error instanceof Error ? error.message : String(error)})`;
  }
}

/**
 * The `skip` value of a PostgreSQL suite: a reason when PostgreSQL is
 * unreachable, false when it answers. In CI (CI=true) a skipped suite counts
 * as a failure, so there an unreachable PostgreSQL throws instead.
 */
export async function postgresSkipReason(url = POSTGRES_ADMIN_URL): Promise<string | false> {
  const reason = await postgresUnreachable(url);
  if (reason === undefined) return false;
  if (process.env.CI === 'true') throw new Error(`${reason}; CI=true, so the PostgreSQL tests may not be skipped`);
  return reason;
}

/** `url` with its path replaced by `/<name>`: the same server and credentials, another database. */
export function databaseUrl(name: string, base = POSTGRES_ADMIN_URL): string {
  const url = new URL(base);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Creates an empty database of its own; throws when PostgreSQL is unreachable (see postgresSkipReason). */
export async function createTestDatabase(base = POSTGRES_ADMIN_URL): Promise<TestDatabase> {
  const name = `parley_test_${randomBytes(6).toString('hex')}`;
  await admin((client) => client.query(`CREATE DATABASE ${name}`), base);
  let dropped: Promise<void> | undefined;
  return {
    url: databaseUrl(name, base),
    name,
    drop() {
      dropped ??= admin(async (client) => {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      }, base);
      return dropped;
    },
  };
}

function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(invalid URL)';
  }
}
