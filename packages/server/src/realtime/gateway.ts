import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';
import type { AppContext } from '../app.ts';
import { tokenOf } from '../auth/http-auth.ts';
import { CloseCode } from './close-codes.ts';
import { Connection, type Route } from './connection.ts';
import { CorkBatch } from './outbound.ts';

/** How often token expiry is checked, for every connection at once. */
const EXPIRY_SWEEP_MS = 1000;
/** Granularity of the shutdown drain. */
const DRAIN_TICK_MS = 20;
/** How long closed sockets get to finish the close handshake at shutdown. */
const CLOSE_GRACE_MS = 3000;

function parseRoute(url: string): Route | undefined {
  const query = url.indexOf('?');
  const path = query >= 0 ? url.slice(0, query) : url;
  if (path === '/ws' || path === '/ws/') return { kind: 'ws' };
  const match = /^\/ws\/(rooms|notifications)\/([^/]+)\/?$/.exec(path);
  if (!match) return undefined;
  let name: string;
  try {
    name = decodeURIComponent(match[2] as string);
  } catch {
    return undefined;
  }
  return {
    kind: match[1] === 'rooms' ? 'room' : 'notifications',
    channel: `${match[1] === 'rooms' ? 'room' : 'topic'}:${name}`,
  };
}

function refuse(socket: Duplex, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  socket.end(
    `HTTP/1.1 ${status} ${code}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/**
 * Accepts WebSocket upgrades on /ws and its shortcuts, and owns what is per
 * instance rather than per socket: the connection limits, one heartbeat
 * timer and one token-expiry timer for all connections.
 */
export class Gateway {
  private readonly wss: WebSocketServer;
  readonly connections = new Set<Connection>();
  /** One per instance: every socket written to in a turn is uncorked once at its end. */
  readonly corks = new CorkBatch();
  private readonly perUser = new Map<string, number>();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private closing = false;

  constructor(private readonly ctx: AppContext) {
    const { config } = ctx;
    this.wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      maxPayload: config.maxMessageBytes,
      perMessageDeflate: config.compression
        ? {
            threshold: 1024,
            // Bounded memory per connection: a small window and no context kept between frames.
            serverNoContextTakeover: true,
            clientNoContextTakeover: true,
            serverMaxWindowBits: 12,
            concurrencyLimit: 10,
            zlibDeflateOptions: { memLevel: 4 },
          }
        : false,
    });
  }

  attach(server: Server): void {
    server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.upgrade(request, socket, head),
    );
    this.heartbeatTimer = setInterval(() => this.heartbeat(), this.ctx.config.heartbeatMs);
    this.heartbeatTimer.unref();
    this.expiryTimer = setInterval(() => this.sweepExpired(), EXPIRY_SWEEP_MS);
    this.expiryTimer.unref();
  }

  private upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const route = parseRoute(request.url ?? '/');
    if (!route) {
      refuse(socket, 404, 'not_found', 'no WebSocket endpoint here: use /ws');
      return;
    }
    if (this.closing || this.ctx.state.draining) {
      refuse(socket, 503, 'unavailable', 'this instance is shutting down');
      return;
    }
    // ws would answer a malformed handshake in plain text: answer it like every other error.
    const key = request.headers['sec-websocket-key'];
    if (
      request.headers.upgrade?.toLowerCase() !== 'websocket' ||
      typeof key !== 'string' ||
      !/^[+/0-9A-Za-z]{22}==$/.test(key) ||
      request.headers['sec-websocket-version'] !== '13'
    ) {
      refuse(socket, 400, 'bad_request', 'malformed WebSocket handshake (RFC 6455 §4.2.1)');
      return;
    }
    const origin = request.headers.origin;
    const allowed = this.ctx.config.allowedOrigins;
    if (allowed && origin !== undefined && !allowed.includes(origin)) {
      refuse(socket, 403, 'forbidden', 'origin not allowed');
      return;
    }
    const token = tokenOf(request.headers, request.url ?? '/');
    this.wss.handleUpgrade(request, socket, head, (ws: WebSocket) => {
      if (this.connections.size >= this.ctx.config.maxConnections) {
        ws.close(CloseCode.TRY_AGAIN_LATER, 'too many connections');
        return;
      }
      const connection = new Connection(ws, this.ctx, this, route, request, token);
      this.connections.add(connection);
      connection.start();
    });
  }

  /** Called once a connection knows its user; false when the user has too many. */
  admitUser(user: string): boolean {
    const count = this.perUser.get(user) ?? 0;
    if (count >= this.ctx.config.maxConnectionsPerUser) return false;
    this.perUser.set(user, count + 1);
    return true;
  }

  /** Called by a connection when its socket closed. */
  forget(connection: Connection, admittedUser: string | undefined): void {
    this.connections.delete(connection);
    if (admittedUser === undefined) return;
    const count = (this.perUser.get(admittedUser) ?? 1) - 1;
    if (count <= 0) this.perUser.delete(admittedUser);
    else this.perUser.set(admittedUser, count);
  }

  subscriptionCount(): number {
    let count = 0;
    for (const connection of this.connections) count += connection.subscriptionCount;
    return count;
  }

  private heartbeat(): void {
    for (const connection of this.connections) connection.heartbeat();
  }

  private sweepExpired(): void {
    const now = Date.now();
    for (const connection of this.connections) connection.checkExpiry(now);
  }

  /**
   * Graceful shutdown: refuses new sockets, then closes the open ones 1001 in
   * small batches spread evenly over `drainMs`, so a thousand clients do not
   * all reconnect in the same instant. Sockets still open `CLOSE_GRACE_MS`
   * after the last batch are cut.
   */
  async close(drainMs = this.ctx.config.shutdownDrainMs): Promise<void> {
    this.closing = true;
    clearInterval(this.heartbeatTimer);
    clearInterval(this.expiryTimer);
    const open = [...this.connections];
    const closed: Promise<void>[] = [];
    const batches = Math.max(1, Math.min(open.length, Math.floor(drainMs / DRAIN_TICK_MS)));
    const perBatch = Math.ceil(open.length / batches);
    for (let i = 0; i < open.length; i += perBatch) {
      if (i > 0) await new Promise((resolve) => setTimeout(resolve, drainMs / batches));
      for (const connection of open.slice(i, i + perBatch)) closed.push(connection.shutdown());
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(closed),
      new Promise((resolve) => {
        timer = setTimeout(resolve, CLOSE_GRACE_MS);
      }),
    ]);
    clearTimeout(timer);
    for (const connection of this.connections) connection.terminate();
    this.wss.close();
  }
}
