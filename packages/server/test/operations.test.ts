import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { freePort, waitReady } from '../../../deploy/local-cluster.ts';
import { TokenService } from '../src/auth/tokens.ts';
import { startServer, TEST_SECRET, type TestServer, TestSocket } from './helpers.ts';

const serverEntry = new URL('../src/main.ts', import.meta.url).pathname;

/**
 * Starts a real process, connects 20 sockets with publishes in flight, sends
 * `signal`, and checks every step of the drain (docs/operations.md).
 */
async function drainsOn(signal: 'SIGTERM' | 'SIGINT'): Promise<void> {
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
    // When each close frame arrives, before the close handshake completes ('close' comes a round trip later).
    const closeFrameAt: number[] = [];
    for (const s of sockets) {
      (s.ws as unknown as { _receiver: NodeJS.EventEmitter })._receiver.once('conclude', () =>
        closeFrameAt.push(Date.now()),
      );
    }
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
    child.kill(signal);

    // Not ready at once, before any socket is sent away: the balancer gets to see it first.
    let notReadyAt: number | undefined;
    while (Date.now() - signalledAt < drainMs / 2) {
      const response = await fetch(`${url}/readyz`).catch(() => undefined);
      if (response?.status === 503) {
        notReadyAt = Date.now();
        break;
      }
    }
    assert.ok(notReadyAt !== undefined, '/readyz answered 503 during the drain');
    assert.equal(closeFrameAt.length, 0, 'no close frame had arrived when /readyz answered 503');
    await assert.rejects(TestSocket.connect(`ws://127.0.0.1:${port}/ws`), /503|ECONNREFUSED|socket hang up/);

    assert.deepEqual(await Promise.all(closes), new Array(20).fill(1001));
    assert.equal(closeFrameAt.length, 20);
    assert.ok(
      notReadyAt < Math.min(...closeFrameAt),
      `/readyz 503 at +${notReadyAt - signalledAt} ms, first 1001 at +${Math.min(...closeFrameAt) - signalledAt} ms`,
    );
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
    assert.ok(
      logs.some((l) => l.includes('shutting down') && l.includes(signal)),
      `the shutdown line names ${signal}`,
    );
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
}

test('SIGTERM drains: not ready first, new sockets refused, closes 1001 spread out, writes flushed, exit 0', () =>
  drainsOn('SIGTERM'));

test('SIGINT drains the same way and exits 0', () => drainsOn('SIGINT'));

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

test("GET /metrics on a SQLite file: the checkpointer's holds of the commits, and none on an in-memory store", async () => {
  const dir = await mkdtemp(join(tmpdir(), 'parley-metrics-'));
  const server = await startServer({ DATABASE_URL: `sqlite:${join(dir, 'parley.db')}` });
  const memory = await startServer();
  try {
    const before = await server.http('GET', '/metrics');
    assert.match(before.text, /^parley_sqlite_log_holds_total\{[^}]*\} 0$/m);
    assert.match(before.text, /^parley_sqlite_log_held_seconds_total\{[^}]*\} 0$/m);
    // Two holds as the checkpointer records them (a real one needs some 64 MB of log: checkpointer.test.ts).
    const holds = server.parley.ctx.database.checkpointer?.holds as { count: number; totalMs: number };
    holds.count += 2;
    holds.totalMs += 30;
    const after = await scrape(server);
    assert.equal(after('parley_sqlite_log_holds_total'), 2);
    assert.equal(after('parley_sqlite_log_held_seconds_total'), 0.03);
    assert.doesNotMatch((await memory.http('GET', '/metrics')).text, /parley_sqlite_log_holds_total/);
  } finally {
    await server.close();
    await memory.close();
    await rm(dir, { recursive: true, force: true });
  }
});

/** Scrapes /metrics; the returned function reads one sample (0 when the series does not exist yet). */
async function scrape(server: TestServer): Promise<(name: string, labels?: Record<string, string>) => number> {
  const response = await server.http('GET', '/metrics');
  assert.equal(response.status, 200);
  const samples = response.text
    .split('\n')
    .map((line) => /^([a-z_:]+)(?:\{([^}]*)\})? (\S+)$/.exec(line))
    .filter((match) => match !== null)
    .map((match) => ({
      name: match[1],
      labels: Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]])),
      value: Number(match[3]),
    }));
  return (name, labels = {}) =>
    samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value ?? 0;
}

test('GET /metrics: frames and bytes in and out move by exactly what went over the socket', async () => {
  const server = await startServer();
  try {
    const socket = await server.ws('/ws', { token: await server.token('svc', 'service') });
    await socket.welcome();
    let framesReceived = 0;
    let bytesReceived = 0;
    socket.ws.on('message', (data) => {
      framesReceived++;
      bytesReceived += (data as Buffer).length;
    });
    const before = await scrape(server);
    // Non-ASCII both ways: bytes are UTF-8 bytes on the wire, not string lengths.
    const TEXT = 'héllo ✓ — ünïcode';
    const frames = [
      '{"type":"subscribe","channel":"topic:bytes","id":1}',
      `{"type":"publish","channel":"topic:bytes","data":"${TEXT}","id":2}`,
      '{"type":"history","channel":"topic:bytes","id":3}',
    ];
    for (const [i, frame] of frames.entries()) {
      const answer = socket.waitFor((f) => f.id === i + 1);
      socket.ws.send(frame);
      assert.equal((await answer).type, 'reply', frame);
    }
    await socket.next((f) => f.type === 'message');
    const history = socket.frames.find((f) => f.id === 3);
    assert.equal(history?.result.messages[0].data, TEXT);
    const after = await scrape(server);
    const delta = (name: string) => after(name) - before(name);
    assert.equal(delta('parley_frames_in_total'), 3);
    assert.equal(
      delta('parley_bytes_in_total'),
      frames.reduce((sum, f) => sum + Buffer.byteLength(f), 0),
    );
    assert.equal(framesReceived, 4, 'three replies and one message');
    assert.equal(delta('parley_frames_out_total'), framesReceived);
    assert.equal(delta('parley_bytes_out_total'), bytesReceived);
  } finally {
    await server.close();
  }
});

test('GET /metrics: closes by code count the 1013 of MAX_CONNECTIONS and the 4008 of the rate limit', async () => {
  const server = await startServer({ MAX_CONNECTIONS: '2', RATE_LIMIT_PER_SEC: '1', RATE_LIMIT_BURST: '3' });
  try {
    const first = await server.ws('/ws', { token: await server.token('m1') });
    await first.welcome();
    const flooder = await server.ws('/ws', { token: await server.token('m2') });
    await flooder.welcome();
    const before = await scrape(server);

    const refused = await server.ws('/ws', { token: await server.token('m3') });
    assert.equal((await refused.closed).code, 1013);
    const afterRefusal = await scrape(server);
    assert.equal(
      afterRefusal('parley_closes_total', { code: '1013' }) - before('parley_closes_total', { code: '1013' }),
      1,
    );

    // BURST (3) pass, then more than BURST refused in a row: 4008. Bounded: 20 frames at most.
    for (let id = 1; id <= 20; id++) flooder.send({ type: 'ping', id });
    assert.equal((await flooder.closed).code, 4008);
    const after = await scrape(server);
    assert.equal(after('parley_closes_total', { code: '4008' }) - before('parley_closes_total', { code: '4008' }), 1);
    assert.ok(after('parley_rate_limited_total') - before('parley_rate_limited_total') >= 4);
    assert.equal(after('parley_closes_total', { code: '1013' }), afterRefusal('parley_closes_total', { code: '1013' }));
    assert.deepEqual(await first.ok({ type: 'ping' }), {}, 'the other connection is untouched');
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
