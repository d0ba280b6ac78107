/**
 * The load generator's bare WebSocket client against a real `ws` server (and,
 * for what `ws` would never send, a hand-written upgrade on a plain HTTP
 * server): every frame arrives whole and in order however the reads cut the
 * stream, pings are answered, close codes are kept, bad upgrades refused.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { after, test } from 'node:test';
import { type WebSocket, WebSocketServer } from 'ws';
import { openRawClient, PROTOCOL_ERROR, type RawClient } from '../src/raw-client.ts';

const servers: Array<WebSocketServer | Server> = [];
after(() => {
  for (const server of servers) server.close();
});

async function wsServer(onConnection: (ws: WebSocket, url: string) => void): Promise<string> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  servers.push(wss);
  await once(wss, 'listening');
  wss.on('connection', (ws, request) => onConnection(ws, request.url ?? '/'));
  return `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`;
}

/** A server that answers every upgrade with `respond(key, socket)`. */
async function upgradeServer(respond: (key: string, socket: Socket) => void): Promise<string> {
  const server = createServer((_request, response) => response.writeHead(404).end());
  servers.push(server);
  server.on('upgrade', (request, socket: Socket) => respond(String(request.headers['sec-websocket-key']), socket));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function acceptFor(key: string): string {
  return createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
}

/** Collects messages as strings; `received(n)` resolves once n have come, `closed` with the close code. */
function collector() {
  const messages: string[] = [];
  const order: string[] = [];
  let client: RawClient | undefined;
  let waiting: { count: number; resolve: () => void } | undefined;
  let resolveClosed: (code: number) => void = () => {};
  const closed = new Promise<number>((resolve) => {
    resolveClosed = resolve;
  });
  return {
    messages,
    /** 'open' and 'message' in the order they happened. */
    order,
    closed,
    get client(): RawClient {
      assert.ok(client, 'not open');
      return client;
    },
    received(count: number): Promise<void> {
      if (messages.length >= count) return Promise.resolve();
      return new Promise((resolve) => {
        waiting = { count, resolve };
      });
    },
    options: {
      timeoutMs: 5000,
      onOpen: (opened: RawClient) => {
        client = opened;
        order.push('open');
        opened.onClose = resolveClosed;
      },
      onMessage: (data: Buffer, start: number, end: number) => {
        order.push('message');
        messages.push(data.toString('utf8', start, end));
        if (waiting && messages.length >= waiting.count) waiting.resolve();
      },
    },
  };
}

test('frames of every length arrive whole and in order, however the reads cut them', { timeout: 20_000 }, async () => {
  // Sizes around each header form (7-bit, 16-bit, 64-bit lengths), many of them, so that
  // reads end inside headers and payloads; 1 MiB is larger than the shared read buffer.
  const sizes: number[] = [];
  for (let i = 0; i < 3000; i++) sizes.push([0, 1, 125, 126, 127, 200, 65535, 65536][i % 8]!);
  sizes.push(1024 * 1024);
  const expected = sizes.map((size, i) => `${i}:`.padEnd(size, 'x'));
  const url = await wsServer((ws) => {
    for (const text of expected) ws.send(text);
  });
  const c = collector();
  await openRawClient(url, c.options);
  await c.received(expected.length);
  assert.equal(c.messages.length, expected.length);
  for (let i = 0; i < expected.length; i++) assert.equal(c.messages[i], expected[i], `message ${i}`);
  c.client.terminate();
});

test('a message sent with the upgrade response reaches the handler after onOpen', async () => {
  const url = await wsServer((ws) => ws.send('welcome'));
  const c = collector();
  await openRawClient(url, c.options);
  await c.received(1);
  assert.deepEqual(c.order, ['open', 'message']);
  assert.equal(c.messages[0], 'welcome');
  c.client.terminate();
});

test('sends masked text frames; the path, query and headers reach the server', async () => {
  const seen: string[] = [];
  const url = await wsServer((ws, path) => {
    ws.on('message', (data) => {
      seen.push(String(data));
      ws.send(`${path} ${String(data)}`);
    });
  });
  const wss = servers.at(-1) as WebSocketServer;
  const headers = once(wss, 'headers');
  const c = collector();
  await openRawClient(`${url}/ws?room=r1`, { ...c.options, headers: { authorization: 'Bearer t0ken' } });
  c.client.send('hello');
  c.client.send('é'.repeat(200));
  await c.received(2);
  assert.deepEqual(c.messages, ['/ws?room=r1 hello', `/ws?room=r1 ${'é'.repeat(200)}`]);
  assert.deepEqual(seen, ['hello', 'é'.repeat(200)]);
  const [, request] = (await headers) as [string[], { headers: Record<string, string> }];
  assert.equal(request.headers.authorization, 'Bearer t0ken');
  c.client.terminate();
});

test('answers a ping with a pong carrying its payload', async () => {
  let pong: Promise<unknown[]> | undefined;
  const url = await wsServer((ws) => {
    pong = once(ws, 'pong');
    ws.ping('are-you-there');
  });
  const c = collector();
  await openRawClient(url, c.options);
  assert.ok(pong);
  const [payload] = await pong;
  assert.equal(String(payload), 'are-you-there');
  c.client.terminate();
});

test("keeps the server's close code, and 1006 when the connection just drops", async () => {
  const closing = await wsServer((ws) => ws.close(4001, 'token expired'));
  const c = collector();
  await openRawClient(closing, c.options);
  assert.equal(await c.closed, 4001);

  const dropping = await wsServer((ws) => ws.terminate());
  const d = collector();
  await openRawClient(dropping, d.options);
  assert.equal(await d.closed, 1006);
});

test('a masked or fragmented frame from the server ends the connection with 1002', async () => {
  for (const frame of [
    Buffer.from([0x81, 0x82, 1, 2, 3, 4, 0x69 ^ 1, 0x69 ^ 2]), // masked
    Buffer.from([0x01, 0x02, 0x68, 0x69]), // a first fragment (FIN clear)
  ]) {
    const url = await upgradeServer((key, socket) => {
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptFor(key)}\r\n\r\n`,
      );
      socket.write(frame);
    });
    const c = collector();
    await openRawClient(url, c.options);
    assert.equal(await c.closed, PROTOCOL_ERROR);
    assert.deepEqual(c.messages, []);
  }
});

test('refuses an upgrade that is not 101, or whose accept is wrong', async () => {
  const refusing = await upgradeServer((_key, socket) => {
    socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n');
  });
  await assert.rejects(openRawClient(refusing, collector().options), /upgrade refused: HTTP 401/);

  const lying = await upgradeServer((_key, socket) => {
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bm9wZQ==\r\n\r\n',
    );
  });
  await assert.rejects(openRawClient(lying, collector().options), /wrong Sec-WebSocket-Accept/);
});

test('gives up on an upgrade that is never answered', async () => {
  const silent = await upgradeServer(() => {});
  await assert.rejects(openRawClient(silent, { ...collector().options, timeoutMs: 200 }), /upgrade timed out/);
});
