/**
 * The baseline: the least a Node WebSocket broadcast server can do. Rooms
 * come from the query string (`/?room=r1`); a text frame `{"room","data"}`
 * is serialized once as `{"type":"message","room","data"}`, framed once, and
 * the same frame bytes are written to every socket of the room (one write per
 * socket, no batching). No auth, no storage, no heartbeat.
 *
 * With REDIS_URL it is two-instance capable the way Socket.IO's Redis adapter
 * is: local sockets are served at once, the frame is published on
 * `<REDIS_PREFIX><room>` and the other instances broadcast it to theirs.
 *
 *   PORT=0 HOST=127.0.0.1 [REDIS_URL=redis://… REDIS_PREFIX=…] node --import tsx ws-baseline.ts
 */
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { Socket } from 'node:net';
import { Redis } from 'ioredis';
import { WebSocketServer } from 'ws';

const port = Number(process.env.PORT ?? 0);
const host = process.env.HOST ?? '127.0.0.1';
const redisUrl = process.env.REDIS_URL || undefined;
const prefix = process.env.REDIS_PREFIX ?? 'ws-baseline:';
const instance = randomBytes(4).toString('hex');

/** An unmasked, final text frame (RFC 6455 §5.2). */
function textFrame(payload: Buffer): Buffer {
  const length = payload.length;
  const header = length < 126 ? 2 : length < 65536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(header + length);
  frame[0] = 0x81;
  if (length < 126) frame[1] = length;
  else if (length < 65536) {
    frame[1] = 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 127;
    frame.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
    frame.writeUInt32BE(length >>> 0, 6);
  }
  payload.copy(frame, header);
  return frame;
}

const rooms = new Map<string, Set<Socket>>();

function broadcast(room: string, payload: Buffer): void {
  const members = rooms.get(room);
  if (!members) return;
  const frame = textFrame(payload);
  for (const socket of members) socket.write(frame);
}

const pub = redisUrl ? new Redis(redisUrl) : undefined;
const sub = redisUrl ? new Redis(redisUrl) : undefined;
const tag = `${instance}|`;
sub?.on('messageBuffer', (channel: Buffer, message: Buffer) => {
  if (message.toString('latin1', 0, tag.length) === tag) return; // ours: already served locally
  const bar = message.indexOf(0x7c);
  broadcast(channel.toString().slice(prefix.length), message.subarray(bar + 1));
});

const http = createServer((request, response) => {
  response.writeHead(request.url === '/readyz' ? 200 : 404).end();
});
const wss = new WebSocketServer({ server: http, perMessageDeflate: false, clientTracking: false });

wss.on('connection', (ws, request) => {
  const room = new URL(request.url ?? '/', 'http://x').searchParams.get('room');
  const socket = (ws as unknown as { _socket: Socket })._socket;
  ws.on('error', () => {});
  if (room) {
    let members = rooms.get(room);
    if (!members) {
      members = new Set();
      rooms.set(room, members);
      void sub?.subscribe(`${prefix}${room}`);
    }
    members.add(socket);
    ws.on('close', () => members.delete(socket));
  }
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let parsed: { room?: unknown; data?: unknown };
    try {
      parsed = JSON.parse(String(data));
    } catch {
      return;
    }
    if (typeof parsed.room !== 'string') return;
    const out = Buffer.from(JSON.stringify({ type: 'message', room: parsed.room, data: parsed.data }));
    broadcast(parsed.room, out);
    if (pub) void pub.publish(`${prefix}${parsed.room}`, Buffer.concat([Buffer.from(tag), out]));
  });
});

http.listen(port, host, () => {
  const address = http.address();
  process.stdout.write(
    `${JSON.stringify({ ready: true, port: typeof address === 'object' ? address?.port : port })}\n`,
  );
});
