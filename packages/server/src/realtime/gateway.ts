import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type Server as WsServer } from 'ws';
import type { AppContext } from '../app.ts';
import { tokenOf } from '../auth/http-auth.ts';
import { CloseCode } from './close-codes.ts';
import { Connection, ConnectionSocket, type Route } from './connection.ts';
import { Heartbeats } from './heartbeat.ts';
import { EndOfTurn } from './outbound.ts';

/** How often token expiry is checked, for every connection at once. */
const EXPIRY_SWEEP_MS = 1000;
/** Granularity of the shutdown drain. */
const DRAIN_TICK_MS = 20;
/** How long closed sockets get to finish the close handshake at shutdown. */
const CLOSE_GRACE_MS = 3000;
/**
 * Longest wait, at shutdown, between /readyz turning 503 and the first 1001:
 * time for the load balancer to see it before clients come back. At most a
 * quarter of the drain, which the remaining closes are spread over.
 */
const READY_LEAD_MS = 2000;
/**
 * permessage-deflate compresses payloads of at least this many bytes (ws's
 * `threshold`): strictly above 1 KiB, as PROTOCOL §1 says.
 */
const COMPRESSION_THRESHOLD = 1025;

/** Shared by every plain /ws connection. */
const WS_ROUTE: Route = { kind: 'ws' };

function parseRoute(url: string): Route | undefined {
  const query = url.indexOf('?');
  const path = query >= 0 ? url.slice(0, query) : url;
  if (path === '/ws' || path === '/ws/') return WS_ROUTE;
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

/**
 * The upgrading socket's error handler. A module function, not a closure: a
 * closure made in `upgrade` would share its scope, and so keep the
 * IncomingMessage and its headers alive for the socket's whole life.
 */
function destroyOnError(this: Duplex): void {
  this.destroy();
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
  private readonly wss: WsServer<typeof ConnectionSocket>;
  readonly connections = new Set<Connection>();
  /** One per instance: every socket written to in a turn is uncorked once at its end. */
  readonly endOfTurn = new EndOfTurn();
  private readonly perUser = new Map<string, number>();
  /** One timer for all connections, each pinged once per HEARTBEAT_MS in a slice of its own. */
  private readonly heartbeats: Heartbeats<Connection>;
  private expiryTimer: NodeJS.Timeout | undefined;
  private closing = false;
  /** Wakes a shutdown pause when the last connection is gone. */
  private emptied: (() => void) | undefined;

  constructor(private readonly ctx: AppContext) {
    const { config } = ctx;
    this.heartbeats = new Heartbeats(config.heartbeatMs);
    this.wss = new WebSocketServer({
      WebSocket: ConnectionSocket,
      noServer: true,
      clientTracking: false,
      maxPayload: config.maxMessageBytes,
      perMessageDeflate: config.compression
        ? {
            threshold: COMPRESSION_THRESHOLD,
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
    this.heartbeats.start();
    this.expiryTimer = setInterval(() => this.sweepExpired(), EXPIRY_SWEEP_MS);
    this.expiryTimer.unref();
  }

  private upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', destroyOnError);
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
    this.wss.handleUpgrade(request, socket, head, (ws: ConnectionSocket) => {
      // ws handles the socket's errors from here on: one listener less for its whole life.
      socket.removeListener('error', destroyOnError);
      if (this.connections.size >= this.ctx.config.maxConnections) {
        // Counted and logged like every other close, though no Connection is made for it.
        this.ctx.metrics.stats.closed(CloseCode.TRY_AGAIN_LATER);
        this.ctx.log.info(
          {
            user: null,
            code: CloseCode.TRY_AGAIN_LATER,
            ip: request.socket.remoteAddress,
            reason: 'too many connections',
          },
          'connection closed',
        );
        ws.close(CloseCode.TRY_AGAIN_LATER, 'too many connections');
        // A peer that never answers the close handshake is cut off.
        setTimeout(() => ws.terminate(), 2000).unref();
        return;
      }
      const connection = new Connection(ws, this.ctx, this, route, token);
      this.connections.add(connection);
      this.heartbeats.add(connection);
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
    this.heartbeats.delete(connection);
    if (this.connections.size === 0) this.emptied?.();
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

  /** Waits `ms`, or less once no connection is left: nothing to wait for then. */
  private async pause(ms: number): Promise<void> {
    if (ms <= 0 || this.connections.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.emptied = resolve;
      timer = setTimeout(resolve, ms);
    });
    clearTimeout(timer);
    this.emptied = undefined;
  }

  private anyOpen(connections: Connection[], from: number): boolean {
    for (let i = from; i < connections.length; i++) {
      if (this.connections.has(connections[i] as Connection)) return true;
    }
    return false;
  }

  private sweepExpired(): void {
    const now = Date.now();
    for (const connection of this.connections) connection.checkExpiry(now);
  }

  /**
   * Graceful shutdown (the caller has already turned /readyz 503): refuses
   * new sockets, waits a lead of up to READY_LEAD_MS (a quarter of `drainMs`
   * at most) so the load balancer sees the instance as not ready before any
   * client is sent away, then closes the open sockets 1001 in small batches
   * spread evenly over the rest of `drainMs`, so a thousand clients do not
   * all reconnect in the same instant. Sockets still open `CLOSE_GRACE_MS`
   * after the last batch are cut: the whole takes at most
   * `drainMs + CLOSE_GRACE_MS`.
   */
  async close(drainMs = this.ctx.config.shutdownDrainMs): Promise<void> {
    this.closing = true;
    this.heartbeats.stop();
    clearInterval(this.expiryTimer);
    const lead = Math.min(READY_LEAD_MS, drainMs / 4);
    const spread = drainMs - lead;
    await this.pause(lead);
    const open = [...this.connections];
    const closed: Promise<void>[] = [];
    const batches = Math.max(1, Math.min(open.length, Math.floor(spread / DRAIN_TICK_MS)));
    const perBatch = Math.ceil(open.length / batches);
    for (let i = 0; i < open.length; i += perBatch) {
      if (i > 0) {
        // Nothing left to spread out (the rest closed by themselves meanwhile): no more waiting.
        if (!this.anyOpen(open, i)) break;
        await this.pause(spread / batches);
      }
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
