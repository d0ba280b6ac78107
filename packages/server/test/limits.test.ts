import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import WebSocket from 'ws';
import { startServer, type TestServer, type TestSocket } from './helpers.ts';

async function withServer(env: Record<string, string>, fn: (server: TestServer) => Promise<void>): Promise<void> {
  const server = await startServer(env);
  try {
    await fn(server);
  } finally {
    await server.close();
  }
}

async function signedIn(server: TestServer, user: string): Promise<TestSocket> {
  const socket = await server.ws('/ws', { token: await server.token(user) });
  await socket.welcome();
  return socket;
}

describe('connection limits', () => {
  test('MAX_CONNECTIONS: at the limit all stay; one more is closed 1013', () =>
    withServer({ MAX_CONNECTIONS: '3' }, async (server) => {
      const open = [await signedIn(server, 'a'), await signedIn(server, 'b'), await signedIn(server, 'c')];
      const extra = await server.ws('/ws', { token: await server.token('d') });
      assert.equal((await extra.closed).code, 1013);
      for (const socket of open) assert.deepEqual(await socket.ok({ type: 'ping' }), {});
      open[0]?.close();
      await open[0]?.closed;
      await waitFor(() => server.parley.gateway.connections.size === 2, 'the closed socket to be forgotten');
      const again = await signedIn(server, 'd');
      assert.deepEqual(await again.ok({ type: 'ping' }), {}, 'a freed slot is usable');
    }));

  test('MAX_CONNECTIONS_PER_USER: the newest above it is closed 1013, other users unaffected', () =>
    withServer({ MAX_CONNECTIONS_PER_USER: '2' }, async (server) => {
      const first = await signedIn(server, 'alice');
      const second = await signedIn(server, 'alice');
      const third = await server.ws('/ws', { token: await server.token('alice') });
      assert.equal((await third.closed).code, 1013);
      assert.equal(
        third.frames.some((f) => f.type === 'welcome'),
        false,
      );
      assert.deepEqual(await first.ok({ type: 'ping' }), {});
      assert.deepEqual(await second.ok({ type: 'ping' }), {});
      const bob = await signedIn(server, 'bob');
      assert.deepEqual(await bob.ok({ type: 'ping' }), {});
      // The count also applies to the auth-frame path, and frees up on close.
      second.close();
      await second.closed;
      await waitFor(() => server.parley.gateway.connections.size === 2, 'alice to have one connection');
      const byFrame = await server.ws('/ws');
      byFrame.send({ type: 'auth', token: await server.token('alice') });
      await byFrame.welcome();
    }));

  test('MAX_SUBSCRIPTIONS: at the limit passes; one more is rate_limited', () =>
    withServer({ MAX_SUBSCRIPTIONS: '2' }, async (server) => {
      const socket = await signedIn(server, 'sam');
      await socket.ok({ type: 'subscribe', channel: 'room:one' });
      await socket.ok({ type: 'subscribe', channel: 'room:two' });
      const third = await socket.request({ type: 'subscribe', channel: 'room:three' });
      assert.equal(third.error.code, 'rate_limited');
      await socket.ok({ type: 'unsubscribe', channel: 'room:one' });
      await socket.ok({ type: 'subscribe', channel: 'room:three' });
    }));
});

describe('rate limit (token bucket per connection)', () => {
  test('a burst at RATE_LIMIT_BURST passes; the next frame is rate_limited with its id; going on closes 4008', () =>
    withServer({ RATE_LIMIT_PER_SEC: '1', RATE_LIMIT_BURST: '5' }, async (server) => {
      const socket = await server.ws('/ws', { token: await server.token('flood') });
      await socket.welcome();
      for (let id = 1; id <= 6; id++) socket.send({ type: 'ping', id });
      for (let id = 1; id <= 5; id++) assert.equal((await socket.next((f) => f.id === id)).type, 'reply');
      const refused = await socket.next((f) => f.id === 6);
      assert.equal(refused.type, 'error');
      assert.equal(refused.error.code, 'rate_limited');
      // More than BURST refused frames in a row: the socket is closed.
      for (let id = 7; id <= 12; id++) socket.send({ type: 'ping', id });
      assert.equal((await socket.closed).code, 4008);
      assert.equal(server.parley.ctx.metrics.stats.rateLimited, 6);
    }));

  test('the bucket refills at RATE_LIMIT_PER_SEC', () =>
    withServer({ RATE_LIMIT_PER_SEC: '20', RATE_LIMIT_BURST: '2' }, async (server) => {
      const socket = await signedIn(server, 'steady');
      // One frame every 100 ms is under 20/s: none is refused over 15 frames.
      for (let i = 0; i < 15; i++) {
        assert.deepEqual(await socket.ok({ type: 'ping' }), {});
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }));
});

describe('heartbeats', () => {
  test('a peer that does not answer pings is dropped and leaves presence; a live one stays', () =>
    withServer({ HEARTBEAT_MS: '100' }, async (server) => {
      const watcher = await signedIn(server, 'watcher');
      await watcher.ok({ type: 'subscribe', channel: 'room:hb' });
      let pings = 0;
      watcher.ws.on('ping', () => pings++);

      const { token } = await server.parley.ctx.tokens.issue('silent', 'user');
      const silent = new WebSocket(`${server.wsUrl}/ws`, {
        headers: { authorization: `Bearer ${token}` },
        autoPong: false,
      });
      await once(silent, 'open');
      const subscribed = new Promise<void>((resolve) =>
        silent.on('message', (data) => {
          if (JSON.parse(String(data)).id === 1) resolve();
        }),
      );
      silent.send(JSON.stringify({ type: 'subscribe', channel: 'room:hb', id: 1 }));
      await subscribed;
      await watcher.next((f) => f.type === 'join' && f.user === 'silent');
      const closed = once(silent, 'close');
      await watcher.next((f) => f.type === 'leave' && f.user === 'silent', 3000, 'silent to leave');
      const [code] = await closed;
      assert.equal(code, 1006, 'terminated, not closed politely');
      assert.ok(pings >= 2, `the watcher answered ${pings} pings and is still here`);
      assert.deepEqual(await watcher.ok({ type: 'ping' }), {});
    }));
});

describe('slow consumers', () => {
  test('a reader that stops reading is closed 4009 instead of growing memory; others keep receiving', () =>
    withServer({ RATE_LIMIT_PER_SEC: '100000', RATE_LIMIT_BURST: '100000' }, async (server) => {
      const channel = 'room:firehose';
      const gc = (globalThis as { gc?: () => void }).gc;
      const fast = await signedIn(server, 'fast');
      await fast.ok({ type: 'subscribe', channel });
      // From here the fast reader only counts, so the test's own memory stays flat.
      let received = 0;
      let inOrder = true;
      fast.ws.removeAllListeners('message');
      fast.ws.on('message', (data) => {
        const frame = JSON.parse(String(data));
        if (frame.type !== 'message') return;
        received++;
        if (frame.message.offset !== received) inOrder = false;
      });
      const slow = await signedIn(server, 'slow');
      await slow.ok({ type: 'subscribe', channel });
      const slowConnection = [...server.parley.gateway.connections].find((c) => c.user === 'slow');
      const slowSocket = (slowConnection as unknown as { ws: { bufferedAmount: number } }).ws;
      // Stop reading: the kernel buffers fill, then the server's send buffer grows.
      (slow.ws as unknown as { _socket: { pause(): void } })._socket.pause();
      let peakBuffered = 0;
      const sampler = setInterval(() => {
        peakBuffered = Math.max(peakBuffered, slowSocket.bufferedAmount);
      }, 2);

      gc?.();
      const heapBefore = process.memoryUsage().heapUsed;
      const writer = await signedIn(server, 'writer');
      writer.ws.removeAllListeners('message');
      const payload = 'x'.repeat(32 * 1024);
      const total = 1200; // about 38 MiB, ten times the 4 MiB bound
      for (let sent = 0; sent < total; ) {
        for (let k = 0; k < 20; k++) writer.send({ type: 'publish', channel, data: { payload } });
        sent += 20;
        await waitFor(() => received >= sent, `the fast reader to get ${sent}`, 30000);
      }
      clearInterval(sampler);
      assert.equal(received, total, 'the fast reader got everything');
      assert.ok(inOrder, 'in order');
      await waitFor(() => (server.parley.ctx.metrics.stats.closes.get(4009) ?? 0) === 1, 'a 4009 close');
      await waitFor(() => server.parley.gateway.connections.size === 2, 'the slow socket to be released');
      const bound = 4 * 1024 * 1024 + 64 * 1024;
      assert.ok(peakBuffered <= bound, `the slow socket buffered at most ${peakBuffered} bytes`);
      gc?.();
      const grew = process.memoryUsage().heapUsed - heapBefore;
      assert.ok(grew < 16 * 1024 * 1024, `heap grew by ${(grew / 1048576).toFixed(1)} MiB for 38 MiB published`);
    }));
});

describe('compression', () => {
  test('COMPRESSION=on negotiates permessage-deflate and compresses large frames', () =>
    withServer({ COMPRESSION: 'on' }, async (server) => {
      const socket = await signedIn(server, 'zip');
      assert.match(socket.ws.extensions, /permessage-deflate/);
      await socket.ok({ type: 'subscribe', channel: 'room:zip' });
      const socketBytes = () => (socket.ws as unknown as { _socket: { bytesRead: number } })._socket.bytesRead;
      const before = socketBytes();
      await socket.ok({ type: 'publish', channel: 'room:zip', data: 'a'.repeat(50_000) });
      await socket.next((f) => f.type === 'message');
      const received = socketBytes() - before;
      assert.ok(received < 20_000, `two 50 kB frames arrived as ${received} bytes`);
    }));

  test('COMPRESSION=off (default) does not negotiate it', () =>
    withServer({}, async (server) => {
      const socket = await signedIn(server, 'plain');
      assert.equal(socket.ws.extensions, '');
    }));
});

async function waitFor(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
