import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { freePort, waitReady } from '../../../deploy/local-cluster.ts';
import { TokenService } from '../src/auth/tokens.ts';
import { startServer, TEST_SECRET, TestSocket } from './helpers.ts';

const serverEntry = new URL('../src/main.ts', import.meta.url).pathname;

test('SIGTERM drains: not ready first, new sockets refused, closes 1001 spread out, writes flushed, exit 0', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'parley-drain-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const drainMs = 1500;
  const child = spawn(process.execPath, ['--import', 'tsx', serverEntry], {
    env: {
      ...process.env,
      HOST: '127.0.0.1',
      PORT: String(port),
      DATABASE_URL: `sqlite:${join(dir, 'parley.db')}`,
      JWT_SECRET: TEST_SECRET,
      SHUTDOWN_DRAIN_MS: String(drainMs),
      INSTANCE_ID: 'drain-test',
      RATE_LIMIT_PER_SEC: '10000',
      RATE_LIMIT_BURST: '10000',
      LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  child.stdout.on('data', (d) => output.push(String(d)));
  child.stderr.on('data', (d) => output.push(String(d)));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    await waitReady(url);
    const tokens = new TokenService({ secret: TEST_SECRET, accessTokenTtl: 600 });
    const sockets: TestSocket[] = [];
    for (let i = 0; i < 20; i++) {
      const { token } = await tokens.issue(`user${i}`, 'user');
      const socket = await TestSocket.connect(`ws://127.0.0.1:${port}/ws`, { token });
      await socket.welcome();
      await socket.ok({ type: 'subscribe', channel: 'room:drain' });
      sockets.push(socket);
    }
    const closedAt: number[] = [];
    const closes = sockets.map((s) =>
      s.closed.then((c) => {
        closedAt.push(Date.now());
        return c.code;
      }),
    );
    const writer = sockets[0] as TestSocket;
    const acknowledged: number[] = [];
    for (let i = 0; i < 50; i++) {
      writer.request({ type: 'publish', channel: 'room:drain', data: i }).then(
        (f) => f.type === 'reply' && acknowledged.push(f.result.offset),
        () => undefined,
      );
    }
    const signalledAt = Date.now();
    child.kill('SIGTERM');

    // Not ready at once, while sockets are still being closed.
    let sawNotReady = false;
    while (Date.now() - signalledAt < drainMs / 2) {
      const response = await fetch(`${url}/readyz`).catch(() => undefined);
      if (response?.status === 503) {
        sawNotReady = true;
        break;
      }
    }
    assert.ok(sawNotReady, '/readyz answered 503 during the drain');
    await assert.rejects(TestSocket.connect(`ws://127.0.0.1:${port}/ws`), /503|ECONNREFUSED|socket hang up/);

    assert.deepEqual(await Promise.all(closes), new Array(20).fill(1001));
    const spread = Math.max(...closedAt) - Math.min(...closedAt);
    assert.ok(spread >= drainMs / 2, `closes spread over ${spread} ms`);
    assert.equal(await exited, 0);
    assert.ok(Date.now() - signalledAt < drainMs + 5000, 'exited within the bound');

    const db = new BetterSqlite3(join(dir, 'parley.db'), { readonly: true });
    const stored = db.prepare("SELECT seq FROM messages WHERE channel = 'room:drain'").all() as Array<{ seq: number }>;
    db.close();
    const storedOffsets = new Set(stored.map((r) => r.seq));
    for (const offset of acknowledged) assert.ok(storedOffsets.has(offset), `acknowledged offset ${offset} is stored`);
    assert.equal(stored.length, 50, 'every queued publish was written before exit');

    const logs = output.join('').split('\n').filter(Boolean);
    const closeLines = logs.filter((l) => l.includes('connection closed'));
    assert.equal(closeLines.length, 20, 'one line per closed connection');
    const line = JSON.parse(closeLines[0] as string);
    assert.equal(line.instance, 'drain-test');
    assert.equal(line.code, 1001);
    assert.match(line.user, /^user\d+$/);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
});

test('GET /metrics: Prometheus text with the instance counters', async () => {
  const server = await startServer();
  try {
    const socket = await server.ws('/ws', { token: await server.token('metered') });
    await socket.welcome();
    await socket.ok({ type: 'subscribe', channel: 'room:m' });
    await socket.ok({ type: 'publish', channel: 'room:m', data: 1 });
    await socket.next((f) => f.type === 'message');
    const bad = await server.ws('/ws', { token: 'nope' });
    await bad.closed;
    const response = await server.http('GET', '/metrics');
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /text\/plain/);
    const value = (name: string) => {
      const match = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'm').exec(response.text);
      return match ? Number(match[1]) : undefined;
    };
    assert.equal(value('parley_connections'), 1);
    assert.equal(value('parley_subscriptions'), 1);
    assert.equal(value('parley_publishes_total'), 1);
    assert.equal(value('parley_deliveries_total'), 1);
    assert.ok((value('parley_frames_in_total') ?? 0) >= 2);
    assert.match(response.text, /parley_auth_failures_total\{reason="invalid"[^}]*\} 1/);
    assert.match(response.text, /parley_closes_total\{code="1008"[^}]*\} 1/);
    assert.match(response.text, /parley_delivery_latency_seconds_count\{[^}]*\} 1/);
    assert.match(response.text, /parley_store_append_seconds_count\{[^}]*\} 1/);
    assert.match(response.text, /nodejs_eventloop_lag_seconds/);
  } finally {
    await server.close();
  }
});

test('GET /metrics needs X-API-Key when SERVER_API_KEY is set', async () => {
  const server = await startServer({ SERVER_API_KEY: 'metrics-key-0123456789' });
  try {
    const without = await server.http('GET', '/metrics');
    assert.equal(without.status, 401);
    assert.equal(without.body.error.code, 'unauthorized');
    const wrong = await server.http('GET', '/metrics', { headers: { 'x-api-key': 'metrics-key-012345678X' } });
    assert.equal(wrong.status, 401);
    const right = await server.http('GET', '/metrics', { headers: { 'x-api-key': 'metrics-key-0123456789' } });
    assert.equal(right.status, 200);
  } finally {
    await server.close();
  }
});
