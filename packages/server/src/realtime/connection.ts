import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { type RawData, WebSocket } from 'ws';
import type { AppContext } from '../app.ts';
import { type Principal, TokenError } from '../auth/tokens.ts';
import type { ChannelName } from '../channels/names.ts';
import { ERROR_CODES, ParleyError } from '../errors.ts';
import { CloseCode } from './close-codes.ts';
import { errorText, replyText } from './frames.ts';
import type { Gateway } from './gateway.ts';
import type { Subscriber } from './hub.ts';
import { type Outbound, PING_FRAME, textFrame, textFrameOf } from './outbound.ts';
import { type Command, type CommandOf, looksLikeCommand, parseClientFrame } from './protocol.ts';
import { Subscriptions } from './subscriptions.ts';

export type Route = { kind: 'ws' } | { kind: 'room' | 'notifications'; channel: string };

/** Past this many unsent bytes a socket is too slow: closed 4009 rather than buffered without bound. */
export const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
/** Tolerance on `exp` for a live connection, as at verification. */
const CLOCK_SKEW_MS = 5000;
const EMPTY_RESULT = '{}';
/** Where a command queue starts when nothing is in it: one settled promise for all connections. */
const SETTLED: Promise<void> = Promise.resolve();
/** The rate limiter's clock starts here (see `lastRefill`). */
const CLOCK_ZERO = Date.now();
/** Shared by every send: a Buffer frame still goes out as text. */
const TEXT_FRAME = { binary: false } as const;
const OPEN = 1;
/** `ws`'s Sender writes straight through in this state (nothing of its own queued). */
const SENDER_IDLE = 0;

/** The slice of net.Socket used for pre-framed writes. */
interface RawSocket {
  cork(): void;
  uncork(): void;
  write(chunk: Buffer): boolean;
  readonly remoteAddress?: string | undefined;
}

type State = 'authenticating' | 'open' | 'closed';

/** The close code `ws` sends for each of its frame errors (its Receiver). */
const WS_ERROR_CLOSE_CODES: Record<string, number> = {
  WS_ERR_UNSUPPORTED_MESSAGE_LENGTH: CloseCode.TOO_LARGE,
  WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH: CloseCode.TOO_LARGE,
  WS_ERR_INVALID_UTF8: 1007,
  WS_ERR_TOO_MANY_BUFFERED_PARTS: CloseCode.POLICY,
  WS_ERR_EXPECTED_FIN: 1002,
  WS_ERR_EXPECTED_MASK: 1002,
  WS_ERR_INVALID_CLOSE_CODE: 1002,
  WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH: 1002,
  WS_ERR_INVALID_OPCODE: 1002,
  WS_ERR_UNEXPECTED_MASK: 1002,
  WS_ERR_UNEXPECTED_RSV_1: 1002,
  WS_ERR_UNEXPECTED_RSV_2_3: 1002,
};

/**
 * ws's Receiver keeps the chunks it has not parsed yet in an array that
 * keeps its capacity once emptied: some 150 bytes for every connection that
 * ever sent a frame. Swapped for a fresh empty array (no backing store) when
 * it is empty, on a pong: once a heartbeat interval, after what is for an
 * idle connection its only frame, so a busy socket does not trade it for an
 * allocation per frame.
 */
function releaseReceiveList(ws: WebSocket): void {
  const receiver = (ws as unknown as { _receiver?: { _buffers?: unknown } })._receiver;
  if (receiver && Array.isArray(receiver._buffers) && receiver._buffers.length === 0) receiver._buffers = [];
}

/**
 * The WebSocket class the gateway's server makes. It hands the events of its
 * socket straight to its Connection: no listener closures for every socket
 * (four of them, and the listener table, were a tenth of an idle
 * connection's memory) and no EventEmitter dispatch for every frame. Other
 * listeners, such as a shutdown waiting for 'close', still get theirs.
 */
export class ConnectionSocket extends WebSocket {
  connection: Connection | undefined;

  // ws emits at most two arguments: fixed parameters, not a rest array per frame.
  override emit(event: string | symbol, a?: unknown, b?: unknown): boolean {
    const connection = this.connection;
    if (connection !== undefined) {
      switch (event) {
        case 'message':
          connection.onFrame(a as RawData, b as boolean);
          return true;
        case 'pong':
          connection.onPong();
          return true;
        case 'error':
          connection.onSocketError(a as Error & { code?: string });
          return true;
        case 'close':
          connection.onClose(a as number);
          break;
      }
    } else if (event === 'error') {
      // Refused before it had a Connection (1013): it is being closed already.
      return false;
    }
    return super.emit(event, a, b);
  }
}

/**
 * One WebSocket: authentication, parsing, rate limiting and dispatch of
 * commands, and the socket's subscriptions. The hub pushes to it as a
 * `Subscriber`.
 */
export class Connection implements Subscriber {
  readonly id = randomUUID();
  private state: State = 'authenticating';
  private principal: Principal | undefined;
  private admittedUser: string | undefined;
  private authTimer: NodeJS.Timeout | undefined;
  /**
   * Frames that arrived while a token (upgrade or `auth` frame) was being
   * verified: already counted and rate limited, at most RATE_LIMIT_BURST.
   */
  private early: Array<{ data: RawData; isBinary: boolean }> | undefined;
  /** Active subscriptions. */
  private readonly subscriptions = new Subscriptions();
  /** Made by the first subscribe: an idle connection is a few hundred bytes lighter without it. */
  private subscribing: Set<string> | undefined;
  /**
   * Commands run one after another in the order received, so a client sees
   * the effect of each before the next. A publish counts as done once its
   * store append is queued, so a burst of publishes is still committed together.
   */
  private tail: Promise<void> | undefined;
  /** Commands in `tail`; at 0 the queue is dropped (a promise per idle connection saved). */
  private queued = 0;
  private missedPongs = 0;
  heartbeatBucket: number | undefined;
  private sentCloseCode: number | undefined;
  /** Raw socket writes of pre-framed pushes; off when permessage-deflate was negotiated. */
  private readonly rawWrites: boolean;
  private readonly socket: RawSocket;
  /**
   * This turn's pre-framed writes: none yet, the one frame held until the turn
   * ends, or `true` once a second came and both went into the corked socket.
   */
  private turnWrites: Buffer | true | undefined;
  private tokens: number;
  /** Milliseconds since CLOCK_ZERO: a small integer is stored in the object, a Date.now() is a 16-byte box. */
  private lastRefill = Date.now() - CLOCK_ZERO;
  private violations = 0;
  /** Made on first use: most connections never log past their open and close lines. */
  private childLog: Logger | undefined;
  /** Verified once at start, then dropped: a JWT is a few hundred bytes per connection. */
  private upgradeToken: string | undefined;

  constructor(
    private readonly ws: ConnectionSocket,
    private readonly ctx: AppContext,
    private readonly gateway: Gateway,
    private readonly route: Route,
    upgradeToken: string | undefined,
  ) {
    this.upgradeToken = upgradeToken;
    this.tokens = ctx.config.rateLimitBurst;
    const internals = ws as unknown as { _socket: RawSocket };
    this.socket = internals._socket;
    this.rawWrites = ws.extensions === '';
    // Asked now, while the socket knows its peer, when lines will name it: Node keeps the answer,
    // so the close line has it even after the socket is gone (a client that never authenticated).
    if (ctx.log.isLevelEnabled('info')) void this.ip;
  }

  /**
   * Not kept here: Node caches the peer's address on the socket once asked,
   * about 100 bytes, so it is asked (in the constructor) only when info lines,
   * which name it, are logged at all.
   */
  private get ip(): string | undefined {
    return this.socket.remoteAddress;
  }

  get user(): string {
    return this.principal?.user ?? '';
  }

  private get log(): Logger {
    this.childLog ??= this.ctx.log.child({ connectionId: this.id });
    return this.childLog;
  }

  get subscriptionCount(): number {
    return this.subscriptions.size;
  }

  start(): void {
    this.ws.connection = this;
    const token = this.upgradeToken;
    if (token !== undefined) {
      this.upgradeToken = undefined;
      this.early = [];
      void this.authenticate(token);
    } else {
      this.authTimer = setTimeout(() => {
        if (this.state !== 'authenticating') return;
        this.ctx.metrics.stats.authFailed('timeout');
        this.close(CloseCode.AUTH_TIMEOUT, 'auth timeout');
      }, this.ctx.config.authTimeoutMs);
    }
  }

  // ── hub side ────────────────────────────────────────────────────────────

  /**
   * A push from the hub. The frame's bytes were framed once for every
   * recipient and go straight to the socket, corked until the end of the
   * turn; `ws`'s own send is the fallback when it may hold frames of its own
   * (compression) or the socket is closing.
   */
  push(frame: Outbound): void {
    if (this.state === 'closed') return;
    const ws = this.ws;
    if (ws.bufferedAmount > MAX_BUFFERED_BYTES) {
      this.close(CloseCode.TOO_SLOW, 'too slow');
      return;
    }
    const stats = this.ctx.metrics.stats;
    stats.framesOut++;
    stats.bytesOut += frame.payload.length;
    if (this.canWriteRaw()) this.writeRaw(frame.wire);
    else ws.send(frame.payload, TEXT_FRAME);
  }

  /**
   * The turn is over: its one held frame is written as it is (a corked write
   * costs about 0.5 µs more, and at moderate rates a socket gets one frame a
   * turn), or the corked socket lets its frames go in one writev.
   */
  endTurn(): void {
    const held = this.turnWrites;
    if (held === undefined) return;
    this.turnWrites = undefined;
    if (held === true) this.socket.uncork();
    // Closed meanwhile (terminated, or ws answered the peer's close frame): nothing may follow the close.
    else if (this.ws.readyState === OPEN) this.socket.write(held);
  }

  /** True when a pre-framed write goes out in order with what `ws` itself sent (nothing of its own queued). */
  private canWriteRaw(): boolean {
    return (
      this.rawWrites &&
      this.ws.readyState === OPEN &&
      (this.ws as unknown as { _sender: { _state: number } })._sender._state === SENDER_IDLE
    );
  }

  /** A complete frame, held until the end of the turn with everything else this socket gets in it. */
  private writeRaw(wire: Buffer): void {
    const held = this.turnWrites;
    if (held === undefined) {
      this.turnWrites = wire;
      this.gateway.endOfTurn.add(this);
    } else if (held === true) {
      this.socket.write(wire);
    } else {
      this.turnWrites = true;
      this.socket.cork();
      this.socket.write(held);
      this.socket.write(wire);
    }
  }

  send(frame: Buffer | string): void {
    if (this.state === 'closed') return;
    if (this.ws.bufferedAmount > MAX_BUFFERED_BYTES) {
      this.close(CloseCode.TOO_SLOW, 'too slow');
      return;
    }
    const stats = this.ctx.metrics.stats;
    // Bytes on the wire: a string's length counts UTF-16 units.
    const bytes = typeof frame === 'string' ? Buffer.byteLength(frame) : frame.length;
    stats.framesOut++;
    stats.bytesOut += bytes;
    // Replies take the pushes' path, so the replies to a committed batch of publishes leave in one write.
    if (this.canWriteRaw()) this.writeRaw(typeof frame === 'string' ? textFrameOf(frame, bytes) : textFrame(frame));
    else this.ws.send(frame, TEXT_FRAME);
  }

  // ── lifecycle ───────────────────────────────────────────────────────────

  private async authenticate(token: string): Promise<void> {
    let principal: Principal;
    try {
      principal = await this.ctx.tokens.verify(token);
    } catch (error) {
      const expired = error instanceof TokenError && error.expired;
      this.ctx.metrics.stats.authFailed(expired ? 'expired' : 'invalid');
      this.ctx.log.info(
        { connectionId: this.id, ip: this.ip, reason: (error as Error).message },
        'authentication failed',
      );
      this.close(expired ? CloseCode.TOKEN_EXPIRED : CloseCode.POLICY, expired ? 'token expired' : 'unauthorized');
      return;
    }
    if (this.state !== 'authenticating') return;
    clearTimeout(this.authTimer);
    if (!this.gateway.admitUser(principal.user)) {
      this.close(CloseCode.TRY_AGAIN_LATER, 'too many connections for this user');
      return;
    }
    this.admittedUser = principal.user;
    this.principal = principal;
    this.state = 'open';
    // The open and close lines name the connection themselves: no child logger for every socket.
    // Asked first: the line's fields are not built (nor the peer address cached) when nothing logs it.
    if (this.ctx.log.isLevelEnabled('info')) {
      this.ctx.log.info(
        { connectionId: this.id, user: principal.user, ip: this.ip, route: this.route.kind },
        'connection open',
      );
    }
    this.send(
      JSON.stringify({
        type: 'welcome',
        user: principal.user,
        connectionId: this.id,
        instance: this.ctx.config.instanceId,
        heartbeatMs: this.ctx.config.heartbeatMs,
        protocol: 1,
      }),
    );
    if (this.route.kind !== 'ws') {
      const channel = this.route.channel;
      this.enqueue(() => this.subscribeShortcut(channel));
    }
    const early = this.early;
    this.early = undefined;
    if (early) {
      for (const frame of early) {
        if (this.state !== 'open') break;
        this.handleFrame(frame.data, frame.isBinary);
      }
    }
  }

  /**
   * `ws` refused an inbound frame and is closing the socket itself (1002,
   * 1007, 1009): recorded as the code we sent, not as whatever the peer
   * echoes or 1006 when it does not.
   */
  onSocketError(error: Error & { code?: string }): void {
    this.log.debug({ err: error }, 'socket error');
    const code = error.code === undefined ? undefined : WS_ERROR_CLOSE_CODES[error.code];
    if (code === undefined || this.state === 'closed') return;
    this.state = 'closed';
    this.sentCloseCode = code;
    this.ctx.metrics.stats.closed(code);
    // As in close(): a peer that never answers the close handshake is cut off.
    setTimeout(() => this.ws.terminate(), 2000).unref();
  }

  onClose(received: number): void {
    // The code that ended the socket: ours when the server closed it.
    const code = this.sentCloseCode ?? received;
    if (this.sentCloseCode === undefined) this.ctx.metrics.stats.closed(code);
    if (this.state === 'closed' && this.admittedUser === undefined && !this.gateway.connections.has(this)) return;
    this.state = 'closed';
    clearTimeout(this.authTimer);
    this.gateway.forget(this, this.admittedUser);
    this.admittedUser = undefined;
    // Also for sockets that never authenticated (4002, 1008, 1013 per user): user null.
    this.ctx.log.info(
      { connectionId: this.id, user: this.principal?.user ?? null, code, ip: this.ip },
      'connection closed',
    );
    for (const name of this.subscriptions.names()) {
      this.ctx.channels.unsubscribe(name, this).catch((error) => {
        this.log.warn({ err: error, channel: name.channel }, 'cleanup on close failed');
      });
    }
    this.subscriptions.clear();
  }

  close(code: number, reason: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.sentCloseCode = code;
    this.ctx.metrics.stats.closed(code);
    // What this turn sent goes before the close frame.
    this.endTurn();
    this.ws.close(code, reason);
    // A peer that never answers the close handshake is cut off.
    setTimeout(() => this.ws.terminate(), 2000).unref();
  }

  /** Graceful shutdown: close 1001 and wait for the socket to finish. */
  shutdown(): Promise<void> {
    return new Promise((resolve) => {
      if (this.ws.readyState === this.ws.CLOSED) return resolve();
      this.ws.once('close', () => resolve());
      if (this.state === 'closed') return;
      this.close(CloseCode.GOING_AWAY, 'server shutting down');
    });
  }

  terminate(): void {
    this.state = 'closed';
    this.ws.terminate();
  }

  heartbeat(): void {
    if (this.missedPongs >= 2) {
      this.log.info({ user: this.user }, 'no pong: dropping connection');
      this.state = 'closed';
      this.ws.terminate();
      return;
    }
    this.missedPongs++;
    // The same two bytes for every socket, written at once: a socket rarely gets anything else in
    // the heartbeat's turn, and a ping may go before a frame held for the turn's end.
    if (this.canWriteRaw()) this.socket.write(PING_FRAME);
    else this.ws.ping();
  }

  checkExpiry(now: number): void {
    if (this.state === 'open' && this.principal && this.principal.exp * 1000 + CLOCK_SKEW_MS <= now) {
      this.close(CloseCode.TOKEN_EXPIRED, 'token expired');
    }
  }

  // ── inbound ─────────────────────────────────────────────────────────────

  onPong(): void {
    this.missedPongs = 0;
    releaseReceiveList(this.ws);
  }

  onFrame(data: RawData, isBinary: boolean): void {
    if (this.state === 'closed') return;
    const stats = this.ctx.metrics.stats;
    stats.framesIn++;
    stats.bytesIn += (data as Buffer).length;
    // Counted and rate limited once, here, whether handled now or after verification.
    if (!this.takeToken(data, isBinary)) return;
    if (this.early) {
      // A client cannot park more than a burst of frames behind a slow verification.
      if (this.early.length >= this.ctx.config.rateLimitBurst) {
        this.close(CloseCode.RATE_LIMITED, 'too many frames before authentication');
        return;
      }
      this.early.push({ data, isBinary });
      return;
    }
    this.handleFrame(data, isBinary);
  }

  /** A frame already counted and let through by the rate limit. */
  private handleFrame(data: RawData, isBinary: boolean): void {
    if (this.state === 'authenticating') {
      this.onFirstFrame(data, isBinary);
      return;
    }
    if (isBinary) {
      this.sendError(undefined, 'bad_request', 'binary frames are not accepted: send JSON text');
      return;
    }
    const text = data.toString();
    if (this.route.kind === 'room' && !looksLikeCommand(text)) {
      const channel = this.route.channel;
      this.enqueue(() => this.publishText(channel, text));
      return;
    }
    const parsed = parseClientFrame(text);
    if (!parsed.ok) {
      this.sendError(parsed.id, parsed.code, parsed.message);
      return;
    }
    const command = parsed.command;
    this.enqueue(() => this.dispatch(command));
  }

  private onFirstFrame(data: RawData, isBinary: boolean): void {
    const parsed = isBinary ? undefined : parseClientFrame(data.toString());
    if (!parsed?.ok || parsed.command.type !== 'auth') {
      this.ctx.metrics.stats.authFailed('protocol');
      this.close(CloseCode.POLICY, 'unauthorized');
      return;
    }
    // The client answered in time: how long verification takes (a JWKS fetch) is not its fault.
    clearTimeout(this.authTimer);
    this.early = [];
    void this.authenticate(parsed.command.token);
  }

  /** Token bucket: false (and an error, then 4008) when the client sends too fast. */
  private takeToken(data: RawData, isBinary: boolean): boolean {
    const { rateLimitPerSec, rateLimitBurst } = this.ctx.config;
    const now = Date.now() - CLOCK_ZERO;
    if (now > this.lastRefill) {
      this.tokens = Math.min(rateLimitBurst, this.tokens + ((now - this.lastRefill) * rateLimitPerSec) / 1000);
      this.lastRefill = now;
    }
    if (this.tokens >= 1) {
      this.tokens -= 1;
      this.violations = 0;
      return true;
    }
    this.violations++;
    this.ctx.metrics.stats.rateLimited++;
    if (this.violations > rateLimitBurst) {
      this.close(CloseCode.RATE_LIMITED, 'rate limit exceeded');
    } else {
      // Even a refused command gets its one answer with its id.
      const parsed = isBinary || this.state !== 'open' ? undefined : parseClientFrame(data.toString());
      const id = parsed ? (parsed.ok ? parsed.command.id : parsed.id) : undefined;
      this.sendError(id, 'rate_limited', `more than ${rateLimitPerSec} frames per second`);
    }
    return false;
  }

  private enqueue(step: () => Promise<void>): void {
    this.queued++;
    this.tail = (this.tail ?? SETTLED).then(step).then(
      () => this.dequeued(),
      (error) => {
        this.log.error({ err: error }, 'command failed unexpectedly');
        this.dequeued();
      },
    );
  }

  private dequeued(): void {
    if (--this.queued === 0) this.tail = undefined;
  }

  private async dispatch(command: Command): Promise<void> {
    if (this.state !== 'open') return;
    try {
      switch (command.type) {
        case 'auth':
          throw new ParleyError('bad_request', 'already authenticated');
        case 'subscribe':
          return await this.subscribe(command);
        case 'unsubscribe':
          return await this.unsubscribe(command);
        case 'publish':
          return await this.publish(command);
        case 'history':
          return await this.history(command);
        case 'presence':
          return await this.presence(command);
        case 'typing':
          return await this.typing(command);
        case 'refresh':
          return await this.refresh(command);
        case 'ping':
          return this.reply(command.id, EMPTY_RESULT);
      }
    } catch (error) {
      // Even typing, which never gets a reply, reports its failure under its id.
      this.fail(command.id, error);
    }
  }

  // ── commands ────────────────────────────────────────────────────────────

  private async subscribe(command: CommandOf<'subscribe'>): Promise<void> {
    const subscribed = await this.subscribeChannel(command.channel, command.since);
    if (!subscribed) return;
    this.reply(command.id, subscribed.json);
    await subscribed.activate();
  }

  /**
   * Subscribes and returns the reply's JSON. The caller sends the reply, then
   * calls `activate`, which starts the pushes: none can overtake the reply.
   */
  private async subscribeChannel(
    channel: string,
    since: { offset: number; epoch: string } | undefined,
  ): Promise<{ json: string; activate: () => Promise<void> } | undefined> {
    const principal = this.principal as Principal;
    const subscribing = this.subscribing ?? new Set<string>();
    if (this.subscriptions.has(channel) || subscribing.has(channel)) {
      throw new ParleyError('conflict', `already subscribed to ${channel}`);
    }
    if (this.subscriptions.size + subscribing.size >= this.ctx.config.maxSubscriptions) {
      throw new ParleyError('rate_limited', `at most ${this.ctx.config.maxSubscriptions} subscriptions per connection`);
    }
    this.subscribing = subscribing;
    subscribing.add(channel);
    try {
      const name = await this.ctx.channels.authorize(principal, channel, 'subscribe');
      const result = await this.ctx.channels.subscribe(name, this, since);
      if (this.state !== 'open') {
        // Closed meanwhile: undo, since onClose did not know this subscription.
        await this.ctx.channels.unsubscribe(name, this);
        return undefined;
      }
      this.subscriptions.set(name);
      return {
        json: JSON.stringify(result),
        activate: () => this.ctx.channels.activate(name, this, result.offset),
      };
    } finally {
      subscribing.delete(channel);
      if (subscribing.size === 0) this.subscribing = undefined;
    }
  }

  private async subscribeShortcut(channel: string): Promise<void> {
    try {
      const subscribed = await this.subscribeChannel(channel, undefined);
      if (!subscribed) return;
      this.send(`{"type":"reply","result":${subscribed.json}}`);
      await subscribed.activate();
    } catch (error) {
      const parley = this.toParleyError(error);
      this.sendError(undefined, parley.code, parley.message);
      this.close(CloseCode.POLICY, parley.code);
    }
  }

  private async unsubscribe(command: CommandOf<'unsubscribe'>): Promise<void> {
    const name = this.subscriptions.get(command.channel);
    if (name) {
      this.subscriptions.delete(command.channel);
      await this.ctx.channels.unsubscribe(name, this);
    }
    this.reply(command.id, EMPTY_RESULT);
  }

  private async publish(command: CommandOf<'publish'>): Promise<void> {
    const name = await this.authorizePublish(command.channel);
    const from = (this.principal as Principal).user;
    // Queued now, in frame order; answered whenever the store commits.
    this.ctx.channels.publish(name, from, command.data, command.idempotencyKey).then(
      (published) => this.reply(command.id, published.json),
      (error) => this.fail(command.id, error),
    );
  }

  private async publishText(channel: string, text: string): Promise<void> {
    try {
      const name = await this.authorizePublish(channel);
      this.ctx.channels
        .publish(name, (this.principal as Principal).user, { text })
        .catch((error) => this.fail(undefined, error));
    } catch (error) {
      this.fail(undefined, error);
    }
  }

  /** A subscribed room or DM was authorized at subscribe, and there publishing needs the same right. */
  private authorizePublish(channel: string): Promise<ChannelName> | ChannelName {
    const name = this.subscriptions.get(channel);
    if (name && (name.namespace === 'room' || name.namespace === 'dm')) return name;
    return this.ctx.channels.authorize(this.principal as Principal, channel, 'publish');
  }

  private async history(command: CommandOf<'history'>): Promise<void> {
    const name = await this.ctx.channels.authorize(this.principal as Principal, command.channel, 'read');
    const page = await this.ctx.channels.history(name, command.before, command.limit ?? 50);
    this.reply(command.id, JSON.stringify(page));
  }

  private async presence(command: CommandOf<'presence'>): Promise<void> {
    const name = await this.ctx.channels.authorize(this.principal as Principal, command.channel, 'read');
    const users = await this.ctx.channels.presence(name);
    this.reply(command.id, JSON.stringify({ users }));
  }

  private async typing(command: CommandOf<'typing'>): Promise<void> {
    const name = await this.authorizePublish(command.channel);
    await this.ctx.channels.typing(name, (this.principal as Principal).user);
  }

  private async refresh(command: CommandOf<'refresh'>): Promise<void> {
    let next: Principal;
    try {
      next = await this.ctx.tokens.verify(command.token);
    } catch (error) {
      if (error instanceof TokenError) {
        throw new ParleyError('unauthorized', error.expired ? 'token expired' : 'invalid token');
      }
      throw error;
    }
    if (next.user !== (this.principal as Principal).user) {
      throw new ParleyError('forbidden', 'the new token is for another user');
    }
    this.principal = next;
    this.reply(command.id, JSON.stringify({ expiresAt: new Date(next.exp * 1000).toISOString() }));
  }

  // ── outbound helpers ────────────────────────────────────────────────────

  private reply(id: number | undefined, resultJson: string): void {
    if (id !== undefined) this.send(replyText(id, resultJson));
  }

  private toParleyError(error: unknown): ParleyError {
    if (error instanceof ParleyError) return error;
    this.log.error({ err: error }, 'internal error in a command');
    return new ParleyError('internal', ERROR_CODES.internal.message);
  }

  private fail(id: number | undefined, error: unknown): void {
    const parley = this.toParleyError(error);
    this.sendError(id, parley.code, parley.message);
  }

  private sendError(id: number | undefined, code: ParleyError['code'], message: string): void {
    this.send(errorText(id, code, message));
  }
}
