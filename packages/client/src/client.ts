import { type BackoffOptions, backoffDelay, GOING_AWAY_MAX_MS, ReconnectBackoff } from './backoff.ts';
import { fromErrorFrame, ParleyError } from './errors.ts';
import { decodeJwtExp, refreshDelay } from './jwt.ts';
import { ChannelSequencer } from './sequencer.ts';
import {
  CLOSE_ADVICE,
  CloseCode,
  type CloseCodeValue,
  type CommandBody,
  isErrorCode,
  type StoredMessage,
} from './wire.ts';

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'offline' | 'closed';

export interface ParleyClientOptions {
  /** ws(s)://host/ws */
  url: string;
  /** A getter is called on every (re)connect and before expiry. */
  token: string | (() => string | Promise<string>);
  /** The WebSocket class: `globalThis.WebSocket` in browsers; pass `ws` in Node. */
  WebSocket?: typeof globalThis.WebSocket | unknown;
  /** Default 10000. */
  commandTimeoutMs?: number;
  /** Exponential with full jitter, default 500 / 30000; starts over after a connection stayed up 10 s. */
  backoff?: BackoffOptions;
  /** Refresh this long before the token's `exp` (default 60000). */
  refreshMarginMs?: number;
}

export interface SubscribeResult {
  offset: number;
  epoch: string;
  messages: StoredMessage[];
}

export interface HistoryResult {
  messages: StoredMessage[];
  hasMore: boolean;
}

export interface PresenceEntry {
  user: string;
  connections: number;
}

export interface ChannelUserEvent {
  channel: string;
  user: string;
}

export interface WelcomeEvent {
  user: string;
  connectionId: string;
  instance: string;
}

interface Events {
  state: ConnectionState;
  message: StoredMessage;
  join: ChannelUserEvent;
  leave: ChannelUserEvent;
  typing: ChannelUserEvent;
  'recovery-failed': { channel: string };
  welcome: WelcomeEvent;
  error: ParleyError;
}

type EventName = keyof Events;

/** What the SDK needs of a WebSocket: the subset shared by browsers and `ws`. */
interface SocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: string, listener: (event: any) => void): void;
}

type SocketConstructor = new (url: string) => SocketLike;

interface WireSubscribeResult extends SubscribeResult {
  channel: string;
  recovered: boolean;
}

interface PendingCommand {
  body: CommandBody;
  /** Sent again on the next connection when this one drops before the reply. */
  resend: boolean;
  resolve(result: unknown): void;
  reject(error: ParleyError): void;
  /** Runs only while the command is out on an open connection: waiting for one is not the server being slow. */
  timer: ReturnType<typeof setTimeout> | undefined;
}

interface SubscribeWaiter {
  resolve(result: SubscribeResult): void;
  reject(error: ParleyError): void;
  timer: ReturnType<typeof setTimeout>;
}

/** A channel the app subscribed to, remembered across connections. */
interface ChannelEntry {
  channel: string;
  /** Undefined until the first subscribe reply: there is no position to recover from yet. */
  sequencer: ChannelSequencer | undefined;
  /** Subscribed on the current connection (its reply came). */
  live: boolean;
  /** The id of the subscribe in flight on the current connection. */
  requestId: number | undefined;
  waiters: Set<SubscribeWaiter>;
  /** The connection generation a gap fill runs on, if one does. */
  fillingOn: number | undefined;
  /** Transient resubscribe failures in a row. */
  retries: number;
  retryTimer: ReturnType<typeof setTimeout> | undefined;
}

/** Error codes after which subscribing again later may work. */
const TRANSIENT_CODES = new Set(['unavailable', 'internal', 'rate_limited']);
const MAX_RESUBSCRIBE_RETRIES = 5;
/** A gap longer than this many history pages is given up on, as a failed recovery is (the app reloads history). */
const MAX_FILL_PAGES = 50;
/** Close code the client uses when it drops a connection itself to start over (4000–4999: application codes). */
const RESYNC_CLOSE = 4000;

/**
 * A Parley connection that stays up: it authenticates with the `auth` frame,
 * reconnects as the close code says, refreshes its token before expiry,
 * resubscribes with `since` so every subscribed channel's messages reach the
 * app exactly once and in offset order, and re-sends publishes whose reply
 * was lost (their idempotency key makes that safe).
 */
export class ParleyClient {
  private readonly url: string;
  private readonly tokenSource: ParleyClientOptions['token'];
  private readonly Socket: SocketConstructor;
  private readonly commandTimeoutMs: number;
  private readonly backoff: BackoffOptions;
  private readonly refreshMarginMs: number;

  private currentState: ConnectionState = 'idle';
  private currentUser: string | undefined;
  private socket: SocketLike | undefined;
  /** Bumped whenever a connection ends: events and replies from an older one are ignored. */
  private generation = 0;
  private welcomed = false;
  /** The token the current connection is authenticated with (the latest refreshed one). */
  private token: string | undefined;
  private readonly reconnects: ReconnectBackoff;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private welcomeTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private livenessTimer: ReturnType<typeof setTimeout> | undefined;
  /** When the current connection last brought a frame (Date.now()). */
  private lastHeard = 0;
  private nextId = 1;
  private readonly pending = new Map<number, PendingCommand>();
  private readonly channels = new Map<string, ChannelEntry>();
  private readonly subscribing = new Map<number, ChannelEntry>();
  private readonly listeners = new Map<EventName, Set<(value: any) => void>>();

  constructor(options: ParleyClientOptions) {
    const Socket = (options.WebSocket ?? (globalThis as { WebSocket?: unknown }).WebSocket) as
      | SocketConstructor
      | undefined;
    if (typeof Socket !== 'function') {
      throw new TypeError('ParleyClient: no WebSocket implementation; in Node.js pass `WebSocket` from the ws package');
    }
    const protocol = new URL(options.url).protocol;
    if (protocol !== 'ws:' && protocol !== 'wss:') {
      throw new TypeError(`ParleyClient: url must be ws:// or wss://, not ${protocol}`);
    }
    this.url = options.url;
    this.tokenSource = options.token;
    this.Socket = Socket;
    this.commandTimeoutMs = options.commandTimeoutMs ?? 10_000;
    this.backoff = options.backoff ?? {};
    this.reconnects = new ReconnectBackoff(this.backoff);
    this.refreshMarginMs = options.refreshMarginMs ?? 60_000;
  }

  get state(): ConnectionState {
    return this.currentState;
  }

  /** The authenticated user, from the latest `welcome`. */
  get user(): string | undefined {
    return this.currentUser;
  }

  // ── public API ──────────────────────────────────────────────────────────

  /** Starts connecting; does nothing while connecting, open or waiting to reconnect. */
  connect(): void {
    if (this.currentState === 'connecting' || this.currentState === 'open' || this.currentState === 'reconnecting') {
      return;
    }
    this.reconnects.reset();
    void this.open('connecting');
  }

  /** Closes for good (until `connect` is called again): pending commands fail with `disconnected`. */
  close(): void {
    const socket = this.socket;
    this.endConnection();
    this.generation++;
    clearTimeout(this.reconnectTimer);
    try {
      socket?.close(CloseCode.NORMAL, 'client closed');
    } catch {
      // Already closing: nothing left to do.
    }
    this.failEverything(new ParleyError('disconnected', 'the client was closed'));
    this.setState('closed');
  }

  on(event: 'state', fn: (state: ConnectionState) => void): () => void;
  on(event: 'message', fn: (message: StoredMessage) => void): () => void;
  on(event: 'join' | 'leave' | 'typing', fn: (e: ChannelUserEvent) => void): () => void;
  on(event: 'recovery-failed', fn: (e: { channel: string }) => void): () => void;
  on(event: 'welcome', fn: (w: WelcomeEvent) => void): () => void;
  on(event: 'error', fn: (e: ParleyError) => void): () => void;
  on(event: EventName, fn: (value: any) => void): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    // A wrapper per call, so the same function registered twice is removed once per unsubscribe.
    const listener = (value: unknown) => fn(value);
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }

  /**
   * Subscribes, and keeps the subscription across reconnects. Resolves with
   * the first reply's position; a second call for a subscribed channel
   * resolves at once with the current position.
   */
  subscribe(channel: string): Promise<SubscribeResult> {
    if (this.currentState === 'closed' || this.currentState === 'offline') {
      return Promise.reject(new ParleyError('disconnected', `the client is ${this.currentState}`));
    }
    let entry = this.channels.get(channel);
    if (entry?.live && entry.sequencer) {
      return Promise.resolve({ offset: entry.sequencer.offset, epoch: entry.sequencer.epoch, messages: [] });
    }
    if (!entry) {
      entry = {
        channel,
        sequencer: undefined,
        live: false,
        requestId: undefined,
        waiters: new Set(),
        fillingOn: undefined,
        retries: 0,
        retryTimer: undefined,
      };
      this.channels.set(channel, entry);
      if (this.isOpen) this.sendSubscribe(entry);
    }
    const target = entry;
    return new Promise((resolve, reject) => {
      const waiter: SubscribeWaiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          target.waiters.delete(waiter);
          reject(new ParleyError('timeout', `subscribe ${channel}: no reply within ${this.commandTimeoutMs} ms`));
          // Never confirmed and nobody waits any more: forget it rather than subscribe behind the app's back.
          if (!target.sequencer && target.waiters.size === 0) this.forget(target);
        }, this.commandTimeoutMs),
      };
      target.waiters.add(waiter);
    });
  }

  /** Stops the subscription, here and on every later connection. */
  async unsubscribe(channel: string): Promise<void> {
    const entry = this.channels.get(channel);
    if (entry) {
      this.forget(entry, false);
      for (const waiter of entry.waiters) {
        clearTimeout(waiter.timer);
        waiter.reject(new ParleyError('disconnected', `unsubscribed from ${channel} before the subscribe completed`));
      }
      entry.waiters.clear();
    }
    // Not connected: the next connection simply does not subscribe.
    if (!this.isOpen) return;
    try {
      await this.request({ type: 'unsubscribe', channel }, false);
    } catch (error) {
      if (!(error instanceof ParleyError && error.code === 'disconnected')) throw error;
    }
  }

  /**
   * Publishes and resolves with the stored message. Without an
   * `idempotencyKey` one is generated, so a publish re-sent after a reconnect
   * is stored once. While the client reconnects the publish waits for the
   * connection (its timeout runs only once it is sent); a failure carries the
   * key as `error.idempotencyKey`, for a retry that cannot store it twice.
   */
  publish(channel: string, data: unknown, options: { idempotencyKey?: string } = {}): Promise<StoredMessage> {
    const idempotencyKey = options.idempotencyKey ?? newIdempotencyKey();
    return this.request({ type: 'publish', channel, data, idempotencyKey }, true) as Promise<StoredMessage>;
  }

  history(channel: string, options: { before?: number; limit?: number } = {}): Promise<HistoryResult> {
    const body: CommandBody = { type: 'history', channel };
    if (options.before !== undefined) body.before = options.before;
    if (options.limit !== undefined) body.limit = options.limit;
    return this.request(body, true) as Promise<HistoryResult>;
  }

  async presence(channel: string): Promise<PresenceEntry[]> {
    const result = (await this.request({ type: 'presence', channel }, true)) as { users: PresenceEntry[] };
    return result.users;
  }

  /** Tells the channel's other subscribers this user is typing; dropped while not connected. */
  typing(channel: string): void {
    if (this.isOpen) this.sendFrame({ type: 'typing', channel });
  }

  /** A round trip to the server; fails with `disconnected` if the connection drops first. */
  async ping(): Promise<void> {
    await this.request({ type: 'ping' }, false);
  }

  // ── connection lifecycle ────────────────────────────────────────────────

  private get isOpen(): boolean {
    return this.welcomed && this.socket !== undefined;
  }

  private async open(state: 'connecting' | 'reconnecting'): Promise<void> {
    clearTimeout(this.reconnectTimer);
    const generation = ++this.generation;
    this.setState(state);
    let token: string;
    try {
      token = typeof this.tokenSource === 'function' ? await this.tokenSource() : this.tokenSource;
    } catch (error) {
      if (generation !== this.generation) return;
      const failure = getterFailure(error);
      // The getter says the credentials are gone: like 1008, wait for the app (sign in, then connect()).
      if (failure.code === 'unauthorized' || failure.code === 'forbidden') {
        this.goOffline(failure);
        return;
      }
      this.emit('error', failure);
      this.retryLater(this.nextBackoff());
      return;
    }
    if (generation !== this.generation) return;
    let socket: SocketLike;
    try {
      socket = new this.Socket(this.url);
    } catch (error) {
      this.emit('error', new ParleyError('disconnected', 'could not open a WebSocket', { cause: error }));
      this.retryLater(this.nextBackoff());
      return;
    }
    this.socket = socket;
    this.token = token;
    this.welcomed = false;
    // The token goes in the first frame, never the URL: browsers cannot set headers, and URLs end up in logs.
    socket.addEventListener('open', () => {
      if (generation === this.generation) this.sendFrame({ type: 'auth', token });
    });
    socket.addEventListener('message', (event: { data: unknown }) => {
      if (generation !== this.generation) return;
      this.lastHeard = Date.now();
      if (typeof event.data === 'string') this.onText(event.data);
    });
    socket.addEventListener('close', (event: { code: number; reason: string }) => {
      if (generation === this.generation) this.onClose(event.code, String(event.reason ?? ''));
    });
    // Every error is followed by a close event, which decides what happens next.
    socket.addEventListener('error', () => {});
    this.welcomeTimer = setTimeout(() => {
      if (generation === this.generation) this.restart('no welcome in time');
    }, this.commandTimeoutMs);
  }

  private onWelcome(frame: Record<string, unknown>): void {
    clearTimeout(this.welcomeTimer);
    this.welcomed = true;
    this.reconnects.welcomed();
    this.currentUser = String(frame.user);
    // Subscriptions first, then the commands that waited, in the order the app made them, and only then
    // the app hears of it: a command it sends from a listener cannot overtake the ones queued before it.
    for (const entry of this.channels.values()) this.sendSubscribe(entry);
    for (const [id, command] of this.pending) this.sendCommand(id, command);
    this.scheduleRefresh();
    if (typeof frame.heartbeatMs === 'number' && frame.heartbeatMs > 0) {
      this.watchLiveness(this.generation, frame.heartbeatMs);
    }
    this.setState('open');
    this.emit('welcome', {
      user: String(frame.user),
      connectionId: String(frame.connectionId),
      instance: String(frame.instance),
    });
  }

  private onClose(code: number, reason: string): void {
    const wasWelcomed = this.welcomed;
    this.endConnection();
    const advice = Object.hasOwn(CLOSE_ADVICE, code) ? CLOSE_ADVICE[code as CloseCodeValue] : 'backoff';
    switch (advice) {
      case 'stop':
        if (code === CloseCode.POLICY) {
          const errorCode = isErrorCode(reason) ? reason : 'unauthorized';
          this.goOffline(new ParleyError(errorCode, `the server refused the connection (${reason || errorCode})`));
        } else {
          this.goOffline(undefined);
        }
        return;
      case 'fix-sender':
        this.goOffline(new ParleyError('too_large', 'the server closed the connection: a frame was too large'));
        return;
      case 'refresh':
        if (typeof this.tokenSource !== 'function') {
          this.goOffline(new ParleyError('unauthorized', 'the token expired; pass a token getter to stay connected'));
        } else if (wasWelcomed) {
          // The getter is called again by open(): a fresh token, at once.
          void this.open('reconnecting');
        } else {
          // The getter just gave a token that was already expired: asking again at once would loop.
          this.retryLater(this.nextBackoff());
        }
        return;
      case 'reconnect':
        if (code === CloseCode.GOING_AWAY) {
          // The whole server is going: spread its clients over 0–5 s rather than all at once.
          this.retryLater(Math.floor(Math.random() * GOING_AWAY_MAX_MS));
          return;
        }
        this.retryLater(this.nextBackoff());
        return;
      default:
        this.retryLater(this.nextBackoff());
    }
  }

  /** Drops the current connection and reconnects with backoff; resubscribing recovers what was missed. */
  private restart(why: string): void {
    const socket = this.socket;
    this.endConnection();
    this.generation++;
    try {
      socket?.close(RESYNC_CLOSE, why.slice(0, 120));
    } catch {
      // Already closing.
    }
    this.retryLater(this.nextBackoff());
  }

  private nextBackoff(): number {
    return this.reconnects.next();
  }

  /**
   * Browsers cannot see the server's WebSocket pings, and a link that died
   * without a FIN (a NAT entry dropped, a laptop lid closed) looks like
   * silence, for minutes, until TCP gives up. So: after `heartbeatMs` without
   * a frame the client sends `ping`; if nothing arrives within another
   * `heartbeatMs` it drops the socket and reconnects, recovering with `since`.
   */
  private watchLiveness(generation: number, heartbeatMs: number): void {
    let probeSentAt: number | undefined;
    const check = (): void => {
      if (generation !== this.generation) return;
      const now = Date.now();
      if (probeSentAt !== undefined && this.lastHeard < probeSentAt) {
        if (now - probeSentAt >= heartbeatMs) {
          this.restart('no answer to ping');
          return;
        }
        this.livenessTimer = setTimeout(check, probeSentAt + heartbeatMs - now);
        return;
      }
      probeSentAt = undefined;
      const idle = now - this.lastHeard;
      if (idle < heartbeatMs) {
        this.livenessTimer = setTimeout(check, heartbeatMs - idle);
        return;
      }
      probeSentAt = now;
      // Its reply matches no pending command and is dropped; that it came is what counts.
      this.sendFrame({ type: 'ping', id: this.nextId++ });
      this.livenessTimer = setTimeout(check, heartbeatMs);
    };
    clearTimeout(this.livenessTimer);
    this.livenessTimer = setTimeout(check, heartbeatMs);
  }

  private retryLater(delayMs: number): void {
    this.generation++;
    this.setState('reconnecting');
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => void this.open('reconnecting'), delayMs);
  }

  private goOffline(error: ParleyError | undefined): void {
    this.generation++;
    clearTimeout(this.reconnectTimer);
    this.failEverything(new ParleyError('disconnected', error ? error.message : 'the server ended the connection'));
    this.setState('offline');
    if (error) this.emit('error', error);
  }

  /** Forgets the current socket: its subscriptions, its in-flight fills, the commands that cannot be re-sent. */
  private endConnection(): void {
    clearTimeout(this.welcomeTimer);
    clearTimeout(this.refreshTimer);
    clearTimeout(this.livenessTimer);
    this.socket = undefined;
    this.welcomed = false;
    this.subscribing.clear();
    for (const entry of this.channels.values()) {
      entry.live = false;
      entry.requestId = undefined;
      entry.fillingOn = undefined;
      clearTimeout(entry.retryTimer);
      // The resubscribe's `since` brings them again, in order.
      entry.sequencer?.clearHeld();
    }
    for (const [id, command] of this.pending) {
      clearTimeout(command.timer);
      command.timer = undefined;
      // Waits for the next connection, its timeout stopped until it is sent there.
      if (command.resend) continue;
      this.pending.delete(id);
      command.reject(new ParleyError('disconnected', `${command.body.type}: the connection dropped before the reply`));
    }
  }

  /** Rejects every command and subscribe still waiting; unconfirmed subscriptions are forgotten. */
  private failEverything(error: ParleyError): void {
    for (const command of this.pending.values()) {
      clearTimeout(command.timer);
      command.reject(error);
    }
    this.pending.clear();
    for (const entry of [...this.channels.values()]) {
      for (const waiter of entry.waiters) {
        clearTimeout(waiter.timer);
        waiter.reject(error);
      }
      entry.waiters.clear();
      if (!entry.sequencer) this.channels.delete(entry.channel);
    }
  }

  // ── tokens ──────────────────────────────────────────────────────────────

  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    // A fixed token cannot be renewed; the server closes 4001 when it expires.
    if (typeof this.tokenSource !== 'function' || this.token === undefined) return;
    const exp = decodeJwtExp(this.token);
    if (exp === undefined) return;
    const generation = this.generation;
    this.refreshTimer = setTimeout(() => void this.refresh(generation), refreshDelay(exp, this.refreshMarginMs));
  }

  private async refresh(generation: number): Promise<void> {
    if (typeof this.tokenSource !== 'function') return;
    let token: string;
    try {
      token = await this.tokenSource();
    } catch (error) {
      if (generation !== this.generation) return;
      // The current token still works until it expires; then 4001 brings the getter back in.
      this.emit('error', getterFailure(error));
      this.scheduleRefresh();
      return;
    }
    if (generation !== this.generation) return;
    if (token !== this.token) {
      try {
        await this.request({ type: 'refresh', token }, false);
        if (generation !== this.generation) return;
        this.token = token;
      } catch (error) {
        if (generation !== this.generation) return;
        if (error instanceof ParleyError && error.code !== 'disconnected') this.emit('error', error);
      }
    }
    this.scheduleRefresh();
  }

  // ── commands ────────────────────────────────────────────────────────────

  private request(body: CommandBody, resend: boolean): Promise<unknown> {
    if (this.currentState === 'closed' || this.currentState === 'offline') {
      return Promise.reject(new ParleyError('disconnected', `the client is ${this.currentState}`));
    }
    const id = this.nextId++;
    const key = body.type === 'publish' ? body.idempotencyKey : undefined;
    return new Promise((resolve, reject) => {
      const command: PendingCommand = {
        body,
        resend,
        resolve,
        // A publish's failure names its key: after a timeout it may be stored, and a retry with the key is safe.
        reject:
          key === undefined
            ? reject
            : (error) =>
                reject(
                  new ParleyError(error.code, error.message, {
                    ...(error.cause === undefined ? {} : { cause: error.cause }),
                    idempotencyKey: key,
                  }),
                ),
        timer: undefined,
      };
      this.pending.set(id, command);
      // Otherwise it goes out after the next welcome.
      if (this.isOpen) this.sendCommand(id, command);
    });
  }

  /**
   * Writes a command on the open connection and starts its timeout: the
   * time it waited for a connection is not the server failing to answer, and
   * timing a publish out then (and dropping it from the resend queue) made
   * apps retry with a new key something the server had stored.
   */
  private sendCommand(id: number, command: PendingCommand): void {
    clearTimeout(command.timer);
    command.timer = setTimeout(() => {
      if (this.pending.get(id) !== command) return;
      this.pending.delete(id);
      command.reject(new ParleyError('timeout', `${command.body.type}: no reply within ${this.commandTimeoutMs} ms`));
    }, this.commandTimeoutMs);
    this.sendFrame({ ...command.body, id });
  }

  private sendFrame(frame: Record<string, unknown>): void {
    try {
      this.socket?.send(JSON.stringify(frame));
    } catch {
      // The socket is closing; its close event decides what is re-sent.
    }
  }

  // ── inbound ─────────────────────────────────────────────────────────────

  private onText(text: string): void {
    let frame: Record<string, any>;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (typeof frame !== 'object' || frame === null) return;
    switch (frame.type) {
      case 'welcome':
        this.onWelcome(frame);
        return;
      case 'reply':
      case 'error':
        this.onAnswer(frame);
        return;
      case 'message':
        this.onPush(String(frame.channel), frame.message as StoredMessage);
        return;
      case 'join':
      case 'leave':
      case 'typing':
        if (this.channels.get(frame.channel)?.live) {
          this.emit(frame.type, { channel: String(frame.channel), user: String(frame.user) });
        }
        return;
    }
  }

  private onAnswer(frame: Record<string, any>): void {
    const id = typeof frame.id === 'number' ? frame.id : undefined;
    if (id === undefined) {
      if (frame.type === 'error') this.emit('error', fromErrorFrame(frame.error));
      return;
    }
    const entry = this.subscribing.get(id);
    if (entry) {
      this.subscribing.delete(id);
      if (entry.requestId !== id) return;
      entry.requestId = undefined;
      // Unsubscribed while the subscribe was in flight: its unsubscribe follows on the same connection.
      if (this.channels.get(entry.channel) !== entry) return;
      if (frame.type === 'reply') this.onSubscribed(entry, frame.result as WireSubscribeResult);
      else this.onSubscribeFailed(entry, fromErrorFrame(frame.error));
      return;
    }
    const command = this.pending.get(id);
    if (!command) return;
    this.pending.delete(id);
    clearTimeout(command.timer);
    if (frame.type === 'reply') command.resolve(frame.result);
    else command.reject(fromErrorFrame(frame.error));
  }

  // ── channels ────────────────────────────────────────────────────────────

  private sendSubscribe(entry: ChannelEntry): void {
    const id = this.nextId++;
    entry.requestId = id;
    this.subscribing.set(id, entry);
    const frame: Record<string, unknown> = { type: 'subscribe', id, channel: entry.channel };
    if (entry.sequencer) frame.since = entry.sequencer.position;
    this.sendFrame(frame);
  }

  /**
   * Runs in the frame handler, before any later frame: the reply's messages
   * reach the app before the pushes that follow them.
   */
  private onSubscribed(entry: ChannelEntry, result: WireSubscribeResult): void {
    entry.live = true;
    entry.retries = 0;
    let delivered: StoredMessage[] = [];
    let lost = false;
    const sequencer = entry.sequencer;
    if (!sequencer) {
      entry.sequencer = new ChannelSequencer(result.offset, result.epoch);
    } else if (result.recovered) {
      delivered = sequencer.acceptAll(result.messages);
      sequencer.observe(result.offset);
    } else {
      sequencer.reset(result.offset, result.epoch);
      lost = true;
    }
    for (const waiter of entry.waiters) {
      clearTimeout(waiter.timer);
      waiter.resolve({ offset: result.offset, epoch: result.epoch, messages: result.messages });
    }
    entry.waiters.clear();
    if (lost) this.emit('recovery-failed', { channel: entry.channel });
    this.deliver(delivered);
    if (entry.sequencer?.gap()) void this.fill(entry);
  }

  private onSubscribeFailed(entry: ChannelEntry, error: ParleyError): void {
    const hadWaiters = entry.waiters.size > 0;
    for (const waiter of entry.waiters) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    entry.waiters.clear();
    if (entry.sequencer && TRANSIENT_CODES.has(error.code) && entry.retries < MAX_RESUBSCRIBE_RETRIES) {
      const generation = this.generation;
      entry.retryTimer = setTimeout(
        () => {
          if (generation === this.generation && this.isOpen && this.channels.get(entry.channel) === entry) {
            this.sendSubscribe(entry);
          }
        },
        backoffDelay(entry.retries++, this.backoff),
      );
      return;
    }
    this.channels.delete(entry.channel);
    // A resubscribe nobody awaits (access revoked, say): the app hears of it here.
    if (!hadWaiters) {
      this.emit('error', new ParleyError(error.code, `resubscribing to ${entry.channel}: ${error.message}`));
    }
  }

  /** Removes a channel; `tellServer` unsubscribes a subscribe still in flight. */
  private forget(entry: ChannelEntry, tellServer = true): void {
    if (this.channels.get(entry.channel) === entry) this.channels.delete(entry.channel);
    clearTimeout(entry.retryTimer);
    // Commands run in order on the server, so this lands after the subscribe it undoes.
    if (tellServer && entry.requestId !== undefined && this.isOpen) {
      this.sendFrame({ type: 'unsubscribe', channel: entry.channel });
    }
  }

  private onPush(channel: string, message: StoredMessage): void {
    const entry = this.channels.get(channel);
    if (!entry?.live || !entry.sequencer || typeof message?.offset !== 'number') return;
    this.deliver(entry.sequencer.accept(message));
    if (entry.sequencer.gap()) void this.fill(entry);
  }

  /** Fetches a gap's messages from history, a page at a time, while later pushes wait in the sequencer. */
  private async fill(entry: ChannelEntry): Promise<void> {
    const generation = this.generation;
    if (entry.fillingOn === generation) return;
    entry.fillingOn = generation;
    const current = () =>
      generation === this.generation && this.channels.get(entry.channel) === entry && entry.fillingOn === generation;
    try {
      for (let page = 0; page < MAX_FILL_PAGES; page++) {
        const sequencer = entry.sequencer;
        const request = sequencer?.fillRequest();
        if (!sequencer || !request) return;
        const before = sequencer.offset;
        const result = (await this.request(
          { type: 'history', channel: entry.channel, ...request },
          false,
        )) as HistoryResult;
        if (!current() || entry.sequencer !== sequencer) return;
        this.deliver(sequencer.acceptAll(result.messages));
        if (sequencer.offset === before) {
          // The missing messages are gone (a trimmed topic): the app reloads history, as after a failed recovery.
          this.emit('recovery-failed', { channel: entry.channel });
          this.deliver(sequencer.skipGap());
        }
      }
      if (current() && entry.sequencer?.gap()) {
        this.emit('recovery-failed', { channel: entry.channel });
        this.deliver(entry.sequencer.skipGap());
      }
    } catch {
      // History failed while connected: start over; the resubscribe's `since` recovers the gap.
      if (current()) this.restart('gap fill failed');
    } finally {
      if (entry.fillingOn === generation) entry.fillingOn = undefined;
    }
  }

  private deliver(messages: StoredMessage[]): void {
    for (const message of messages) this.emit('message', message);
  }

  // ── events ──────────────────────────────────────────────────────────────

  private setState(state: ConnectionState): void {
    if (state === this.currentState) return;
    this.currentState = state;
    this.emit('state', state);
  }

  private emit<E extends EventName>(event: E, value: Events[E]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(value);
      } catch (error) {
        // A failing listener must not break the client's bookkeeping; surface it the way DOM events do.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}

/**
 * What a failing token getter means: a ParleyError it threw as is (so the app
 * can say `unauthorized` when the session is over), anything else (a network
 * failure, say) `unavailable`, which is retried.
 */
function getterFailure(error: unknown): ParleyError {
  if (error instanceof ParleyError) return error;
  return new ParleyError('unavailable', 'the token getter failed', { cause: error });
}

const HEX = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, '0'));

/**
 * A fresh idempotency key, as `publish` makes when given none: an app that
 * retries a failed send itself keeps one per draft. It is a UUID v7 (RFC 9562):
 * 48 bits of Unix time in milliseconds, then 74 random bits. Keys that begin
 * with the time reach the server in about the order of their bytes, so its key
 * index takes each at the end of what that sender already has instead of at a
 * random page: on SQLite that halves the cost of a keyed publish (benchmarks.md).
 * getRandomValues, unlike `crypto.randomUUID`, also exists on plain-HTTP pages.
 */
export function newIdempotencyKey(now: number = Date.now()): string {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16));
  // Six bytes of milliseconds, most significant first (past 2^32, so no bitwise operators).
  let time = now;
  for (let i = 5; i >= 0; i--) {
    bytes[i] = time % 256;
    time = Math.floor(time / 256);
  }
  bytes[6] = ((bytes[6] as number) & 0x0f) | 0x70;
  bytes[8] = ((bytes[8] as number) & 0x3f) | 0x80;
  let hex = '';
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) hex += '-';
    hex += HEX[bytes[i] as number];
  }
  return hex;
}
