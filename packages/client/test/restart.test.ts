import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { startServer, type TestServer } from '@parley/server/test-helpers';
import type { ParleyClient, StoredMessage } from '../src/index.ts';
import { freePort, makeClient, Network, Recorder, range, stateIs } from './support.ts';

const clients: ParleyClient[] = [];
let server: TestServer | undefined;
let dir: string | undefined;

after(async () => {
  for (const client of clients) client.close();
  await server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('the server stops and starts again while messages flow: every offset once, in order; retried publishes stored once', async () => {
  dir = await mkdtemp(join(tmpdir(), 'parley-client-restart-'));
  const env = {
    DATABASE_URL: `sqlite:${join(dir, 'p.db')}`,
    PORT: String(await freePort()),
    // Close every socket at once rather than spread over 10 s.
    SHUTDOWN_DRAIN_MS: '0',
    RATE_LIMIT_PER_SEC: '10000',
    RATE_LIMIT_BURST: '10000',
  };
  server = await startServer(env);
  const first = server;
  const url = `${server.wsUrl}/ws`;
  const channel = 'room:restart';
  // The restarted server has the same JWT secret, so the same tokens work on it.
  const subscriber = makeClient(clients, { url, token: await server.token('reader'), commandTimeoutMs: 30_000 });
  const network = await Network.create();
  const publisher = makeClient(clients, {
    url,
    token: await server.token('writer'),
    commandTimeoutMs: 30_000,
    WebSocket: network.WebSocket,
  });
  const seen = new Recorder(subscriber);
  const publisherLog = new Recorder(publisher);
  subscriber.connect();
  publisher.connect();
  await subscriber.subscribe(channel);

  // No key of the app's own: the SDK's is what makes a re-sent publish safe.
  const publish = (n: number) => publisher.publish(channel, { n });
  const results: Array<Promise<StoredMessage>> = [];
  for (const n of range(20)) results.push(publish(n));
  await Promise.all(results);
  await seen.reached(channel, 20);

  // The server goes down as the reply for n=30 arrives: 30 (at least) is stored with its reply lost,
  // later ones may or may not have been received.
  let stopped: Promise<void> | undefined;
  let restarted = false;
  network.dropIncoming = (frame) => {
    if (restarted || frame.type !== 'reply' || !(frame.result?.data?.n >= 30)) return false;
    stopped ??= first.close();
    return true;
  };
  for (const n of range(20, 21)) results.push(publish(n));
  await stateIs(publisher, 'reconnecting');
  assert.ok(stopped, 'the server was stopped mid-flow');
  await stopped;
  // Queued while there is no server at all.
  for (const n of range(10, 41)) results.push(publish(n));

  restarted = true;
  server = await startServer(env);
  const stored = await Promise.all(results);
  for (const n of range(10, 51)) results.push(publish(n));
  stored.push(...(await Promise.all(results.slice(50))));

  await seen.reached(channel, 60, 20_000);
  assert.deepEqual(seen.offsets(channel), range(60), 'the subscriber saw every offset once, in order');
  assert.deepEqual(
    seen.messages.map((m) => (m.data as { n: number }).n),
    range(60),
    'and every publish once, in the order published',
  );
  assert.deepEqual(
    stored.map((m) => m.offset),
    range(60),
    'each publish resolved with its own stored message',
  );
  assert.ok(seen.welcomes.length >= 2 && publisherLog.welcomes.length >= 2, 'both clients reconnected');
  const sentFor30 = network.sentOfType('publish').filter((frame) => frame.data.n === 30);
  assert.equal(sentFor30.length, 2, 'n=30 was stored, its reply lost, and re-sent after the restart');
  assert.equal(typeof sentFor30[0]?.idempotencyKey, 'string');
  assert.equal(sentFor30[0]?.idempotencyKey, sentFor30[1]?.idempotencyKey, 're-sent with the key the SDK gave it');
  const keys = network.sentOfType('publish').map((frame) => frame.idempotencyKey);
  assert.equal(new Set(keys).size, 60, 'one key per publish, reused only by its own re-sends');
  assert.deepEqual(seen.recoveryFailed, []);

  const page = await server.http('GET', '/rooms/restart/messages?limit=100', { token: await server.token('reader') });
  assert.equal(page.status, 200);
  assert.deepEqual(
    page.body.messages.map((m: StoredMessage) => (m.data as { n: number }).n),
    range(60),
    'history holds each publish once',
  );
});
