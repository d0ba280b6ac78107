/**
 * Socket.IO 4 as an application would run it for this job: WebSocket
 * transport only, the room taken from the handshake query (`?room=r1`), and
 * a `publish` event re-emitted as `message` to the room with
 * `io.to(room).emit` (Socket.IO encodes a broadcast once for all sockets).
 * With REDIS_URL, @socket.io/redis-adapter joins the instances.
 *
 *   PORT=0 HOST=127.0.0.1 [REDIS_URL=redis://… REDIS_PREFIX=…] node --import tsx socketio-server.ts
 */
import { createServer } from 'node:http';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { Server } from 'socket.io';

const port = Number(process.env.PORT ?? 0);
const host = process.env.HOST ?? '127.0.0.1';
const redisUrl = process.env.REDIS_URL || undefined;
const prefix = process.env.REDIS_PREFIX ?? 'socket.io';

const http = createServer((request, response) => {
  response.writeHead(request.url === '/readyz' ? 200 : 404).end();
});
const io = new Server(http, {
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  httpCompression: false,
});

if (redisUrl) {
  const pub = new Redis(redisUrl);
  const sub = pub.duplicate();
  io.adapter(createAdapter(pub, sub, { key: prefix }));
}

io.on('connection', (socket) => {
  const room = socket.handshake.query.room;
  if (typeof room === 'string' && room !== '') void socket.join(room);
  socket.on('publish', (data: { room?: unknown }) => {
    if (data && typeof data.room === 'string') io.to(data.room).emit('message', data);
  });
});

http.listen(port, host, () => {
  const address = http.address();
  process.stdout.write(
    `${JSON.stringify({ ready: true, port: typeof address === 'object' ? address?.port : port })}\n`,
  );
});
