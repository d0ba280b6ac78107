import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { TEST_SECRET } from '@parley/server/test-helpers';
import { type LocalCluster, startLocalCluster } from '../../../deploy/local-cluster.ts';
import { TokenService } from '../../server/src/auth/tokens.ts';
import { createTestDatabase, postgresSkipReason, type TestDatabase } from '../../server/test/support/postgres.ts';
import {
  cleanupRedisPrefix,
  REDIS_TEST_URL,
  redisSkipReason,
  uniqueRedisPrefix,
} from '../../server/test/support/redis.ts';
import type { ParleyClient, StoredMessage } from '../src/index.ts';
import { makeClient, Recorder, range } from './support.ts';

function nginxSkipReason(): string | false {
  if (!spawnSync('nginx', ['-v']).error) return false;
  if (process.env.CI === 'true')
    throw new Error('nginx is not installed; CI=true, so the cluster test may not be skipped');
  return 'nginx is not installed';
}

const skip = (await postgresSkipReason()) || (await redisSkipReason()) || nginxSkipReason();

/**
 * Two real Parley processes on PostgreSQL and Redis behind nginx: the client
 * follows nginx to the surviving instance when its own is killed.
 */
describe('a client on a cluster', { skip }, () => {
  let cluster: LocalCluster;
  let database: TestDatabase;
  let prefix: string;
  const tokens = new TokenService({ secret: TEST_SECRET, accessTokenTtl: 3600 });
  const clients: ParleyClient[] = [];

  before(async () => {
    database = await createTestDatabase();
    prefix = uniqueRedisPrefix('client');
    cluster = await startLocalCluster({
      instances: 2,
      databaseUrl: database.url,
      redisUrl: REDIS_TEST_URL,
      env: {
        JWT_SECRET: TEST_SECRET,
        REDIS_KEY_PREFIX: prefix,
        RATE_LIMIT_PER_SEC: '10000',
        RATE_LIMIT_BURST: '10000',
        LOG_LEVEL: 'warn',
      },
    });
  });

  after(async () => {
    for (const client of clients) client.close();
    await cluster?.stop();
    await database?.drop();
    if (prefix) await cleanupRedisPrefix(prefix);
  });

  test('SIGKILL of the instance a subscriber is on: it moves to another, zero lost, zero duplicated', async () => {
    const channel = 'room:client-failover';
    const url = `${cluster.url.replace(/^http/, 'ws')}/ws`;
    const token = (user: string) => async () => (await tokens.issue(user, 'user')).token;
    const subscriber = makeClient(clients, { url, token: token('reader'), commandTimeoutMs: 30_000 });
    const publisher = makeClient(clients, { url, token: token('writer'), commandTimeoutMs: 30_000 });
    const seen = new Recorder(subscriber);
    subscriber.connect();
    publisher.connect();
    await subscriber.subscribe(channel);
    const victimId = seen.welcomes[0]?.instance;
    const victim = cluster.instances.find((instance) => instance.id === victimId);
    assert.ok(victim, `the subscriber's instance ${victimId} is one of the cluster's`);

    const total = 300;
    const stored: StoredMessage[] = [];
    const flow = (async () => {
      for (let n = 1; n <= total; n += 10) {
        const batch = range(Math.min(10, total - n + 1), n).map((k) =>
          publisher.publish(channel, { n: k }, { idempotencyKey: `failover-${k}` }),
        );
        stored.push(...(await Promise.all(batch)));
      }
    })();

    await seen.reached(channel, 100, 20_000);
    victim.process.kill('SIGKILL');
    await victim.exited;
    await flow;
    await seen.reached(channel, total, 30_000);

    assert.deepEqual(seen.offsets(channel), range(total), 'every offset once, in order');
    assert.deepEqual(
      seen.messages.map((m) => (m.data as { n: number }).n),
      range(total),
    );
    assert.deepEqual(
      stored.map((m) => m.offset),
      range(total),
      'each publish stored once, in order',
    );
    const moved = seen.welcomes.at(-1)?.instance;
    assert.ok(seen.welcomes.length >= 2, 'the subscriber reconnected');
    assert.notEqual(moved, victimId, 'through nginx, to another instance');
    assert.deepEqual(seen.recoveryFailed, []);

    const data: number[] = [];
    let before: number | undefined;
    // Three pages of 100, newest first; the bound only guards against a server that never says hasMore: false.
    for (let page = 0; page < 10; page++) {
      const result = await subscriber.history(channel, before === undefined ? { limit: 100 } : { before, limit: 100 });
      data.unshift(...result.messages.map((m) => (m.data as { n: number }).n));
      if (!result.hasMore) break;
      before = result.messages[0]?.offset;
    }
    assert.deepEqual(data, range(total), 'history holds each publish once');
  });
});
