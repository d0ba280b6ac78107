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
import { makeClient, Network, Recorder, range } from './support.ts';

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

  test('SIGKILL of the instance a subscriber and a publisher are on: both move, zero lost, zero duplicated', async () => {
    const channel = 'room:client-failover';
    const url = `${cluster.url.replace(/^http/, 'ws')}/ws`;
    const token = (user: string) => async () => (await tokens.issue(user, 'user')).token;
    const subscriber = makeClient(clients, { url, token: token('reader'), commandTimeoutMs: 30_000 });
    const seen = new Recorder(subscriber);
    subscriber.connect();
    await subscriber.subscribe(channel);
    const victimId = seen.welcomes[0]?.instance;
    const victim = cluster.instances.find((instance) => instance.id === victimId);
    assert.ok(victim, `the subscriber's instance ${victimId} is one of the cluster's`);

    // nginx sends each new connection to the instance with the fewest (least_conn): publishers that
    // land elsewhere stay connected there, so the next one lands on the subscriber's instance.
    const network = await Network.create();
    let publisher: ParleyClient | undefined;
    let published: Recorder | undefined;
    for (let attempt = 0; attempt < 4 && !publisher; attempt++) {
      const candidate = makeClient(clients, {
        url,
        token: token('writer'),
        commandTimeoutMs: 30_000,
        WebSocket: network.WebSocket,
      });
      const recorder = new Recorder(candidate);
      candidate.connect();
      await recorder.until(() => recorder.welcomes.length === 1, 'a publisher welcome');
      if (recorder.welcomes[0]?.instance === victimId) {
        publisher = candidate;
        published = recorder;
      }
    }
    assert.ok(publisher && published, `a publisher connected to ${victimId}`);

    // The victim dies as the reply to n=101 reaches the publisher: stored, its reply (and those of the
    // batch still on their way) lost, so the publisher must re-send them, with the SDK's own keys.
    const resend = 101;
    let killed = false;
    network.dropIncoming = (frame) => {
      if (frame.type !== 'reply' || (published?.welcomes.length ?? 0) > 1) return false;
      if (!killed && frame.result?.data?.n === resend) {
        killed = true;
        victim.process.kill('SIGKILL');
      }
      return killed;
    };
    const total = 300;
    const stored: StoredMessage[] = [];
    const writer = publisher;
    const flow = (async () => {
      for (let n = 1; n <= total; n += 10) {
        const batch = range(Math.min(10, total - n + 1), n).map((k) => writer.publish(channel, { n: k }));
        stored.push(...(await Promise.all(batch)));
      }
    })();

    await flow;
    assert.ok(killed, 'the victim was killed mid-flow');
    await victim.exited;
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
    assert.notEqual(published.welcomes.at(-1)?.instance, victimId, 'and so did the publisher');
    assert.deepEqual(seen.recoveryFailed, []);
    const sent = network.sentOfType('publish').filter((frame) => frame.data.n === resend);
    assert.equal(sent.length, 2, `n=${resend} was stored, its reply lost, and re-sent to the other instance`);
    assert.equal(sent[0]?.idempotencyKey, sent[1]?.idempotencyKey);

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
