import { once } from 'node:events';
import { createConnection, createServer, type Socket } from 'node:net';
import WebSocket from 'ws';
import { freePort } from '../../../deploy/local-cluster.ts';
import { type ConnectionState, ParleyClient, type ParleyClientOptions, type StoredMessage } from '../src/index.ts';

/** A 127.0.0.1 port nothing listens on (for a fixed server port, or a URL that refuses). */
export { freePort };

/**
 * The `ws` WebSocket with a hand on the wire, for fault injection: refuse new
 * connections, cut the open ones, drop chosen frames either way, and see
 * every URL and frame that went out.
 */
export class Network {
  blocked = false;
  readonly urls: string[] = [];
  /** When each connection attempt began (Date.now()). */
  readonly attemptedAt: number[] = [];
  readonly sent: Array<Record<string, any>> = [];
  /** Every close() the client called, with its code and reason. */
  readonly closes: Array<{ code: number | undefined; reason: string | undefined }> = [];
  private waiters: Array<{ check: () => boolean; resolve: () => void }> = [];
  /** Return true to drop a frame from the server before the client sees it. */
  dropIncoming: ((frame: Record<string, any>) => boolean) | undefined;
  /** Return true to drop a frame from the client before it reaches the server. */
  dropOutgoing: ((frame: Record<string, any>) => boolean) | undefined;
  private readonly sockets = new Set<WebSocket>();

  constructor(private readonly refusingUrl: string) {}

  static async create(): Promise<Network> {
    return new Network(`ws://127.0.0.1:${await freePort()}/ws`);
  }

  /** The class to pass as `WebSocket` to the client. */
  get WebSocket(): unknown {
    const network = this;
    return class {
      constructor(url: string) {
        network.urls.push(url);
        network.attemptedAt.push(Date.now());
        queueMicrotask(() => network.settle());
        const socket = new WebSocket(network.blocked ? network.refusingUrl : url);
        network.sockets.add(socket);
        socket.on('close', () => network.sockets.delete(socket));
        const send = socket.send.bind(socket);
        socket.send = ((data: string) => {
          const frame = JSON.parse(data);
          if (network.dropOutgoing?.(frame)) return;
          network.sent.push(frame);
          send(data);
          network.settle();
        }) as typeof socket.send;
        const close = socket.close.bind(socket);
        socket.close = ((code?: number, reason?: string) => {
          network.closes.push({ code, reason });
          close(code, reason);
        }) as typeof socket.close;
        const add = socket.addEventListener.bind(socket) as (type: string, listener: (event: any) => void) => void;
        (socket as any).addEventListener = (type: string, listener: (event: any) => void) => {
          if (type !== 'message') return add(type, listener);
          return add(type, (event: { data: unknown }) => {
            if (typeof event.data === 'string' && network.dropIncoming?.(JSON.parse(event.data))) return;
            listener(event);
          });
        };
        // biome-ignore lint/correctness/noConstructorReturn: stands in for the ws class it wraps
        return socket;
      }
    };
  }

  /** Cuts every open connection as a network failure would (close 1006 at the client). */
  cut(): void {
    for (const socket of this.sockets) socket.terminate();
  }

  sentOfType(type: string): Array<Record<string, any>> {
    return this.sent.filter((frame) => frame.type === type);
  }

  /** Resolves once `check` holds after a frame went out or a connection was attempted (at once if it holds now). */
  until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = {
        check,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`timed out waiting for ${what}`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  private settle(): void {
    this.waiters = this.waiters.filter((waiter) => {
      if (!waiter.check()) return true;
      waiter.resolve();
      return false;
    });
  }
}

/**
 * A TCP proxy on 127.0.0.1 that can make a link go silent: `stall()` stops
 * forwarding, both ways, on every connection open now and keeps the client's
 * side open whatever happens behind it, as a dropped NAT entry or a dead
 * Wi-Fi does (no FIN, no RST: only silence). Connections made after the
 * stall go through normally.
 */
export interface StallingProxy {
  port: number;
  /** Connections made through the proxy so far. */
  readonly accepted: number;
  stall(): void;
  close(): Promise<void>;
}

export async function startStallingProxy(target: { host: string; port: number }): Promise<StallingProxy> {
  const pairs = new Set<{ client: Socket; upstream: Socket; stalled: boolean }>();
  let accepted = 0;
  const server = createServer((client) => {
    accepted++;
    const upstream = createConnection({ host: target.host, port: target.port });
    const pair = { client, upstream, stalled: false };
    pairs.add(pair);
    client.on('data', (chunk) => {
      if (!pair.stalled) upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (!pair.stalled) client.write(chunk);
    });
    const teardown = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', teardown);
    client.on('error', teardown);
    // Behind a stalled link the server may give up on the connection; the client must not hear of it.
    upstream.on('close', () => {
      if (!pair.stalled) teardown();
    });
    upstream.on('error', () => {
      if (!pair.stalled) teardown();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('the proxy is not listening on TCP');
  return {
    port: address.port,
    get accepted() {
      return accepted;
    },
    stall() {
      for (const pair of pairs) pair.stalled = true;
    },
    async close() {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
      const closed = once(server, 'close');
      server.close();
      await closed;
    },
  };
}

/** A client on `ws`, with quick reconnects unless told otherwise; `clients` collects them for closing. */
export function makeClient(
  clients: ParleyClient[],
  options: Omit<ParleyClientOptions, 'WebSocket'> & { WebSocket?: unknown },
): ParleyClient {
  const client = new ParleyClient({ WebSocket, backoff: { initialMs: 20, maxMs: 200 }, ...options });
  clients.push(client);
  return client;
}

/** Resolves with the next event for which `match` holds; rejects after `timeoutMs`. */
export function nextEvent<T>(
  client: ParleyClient,
  event: string,
  match: (value: T) => boolean = () => true,
  timeoutMs = 5000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for ${event}`));
    }, timeoutMs);
    const off = client.on(
      event as 'message',
      ((value: T) => {
        if (!match(value)) return;
        clearTimeout(timer);
        off();
        resolve(value);
      }) as any,
    );
  });
}

/** Resolves once the client is in `state` (at once if it already is). */
export function stateIs(client: ParleyClient, state: ConnectionState, timeoutMs = 5000): Promise<unknown> {
  if (client.state === state) return Promise.resolve();
  return nextEvent<ConnectionState>(client, 'state', (s) => s === state, timeoutMs);
}

/** Every `message` event the app sees, and every state it goes through. */
export class Recorder {
  readonly messages: StoredMessage[] = [];
  readonly states: ConnectionState[] = [];
  readonly welcomes: Array<{ user: string; connectionId: string; instance: string }> = [];
  readonly recoveryFailed: string[] = [];
  private waiters: Array<{ check: () => boolean; resolve: () => void }> = [];

  constructor(client: ParleyClient) {
    client.on('message', (message) => {
      this.messages.push(message);
      this.settle();
    });
    client.on('state', (state) => this.states.push(state));
    client.on('welcome', (welcome) => {
      this.welcomes.push(welcome);
      this.settle();
    });
    client.on('recovery-failed', ({ channel }) => {
      this.recoveryFailed.push(channel);
      this.settle();
    });
  }

  offsets(channel: string): number[] {
    return this.messages.filter((m) => m.channel === channel).map((m) => m.offset);
  }

  /** Resolves once `check` holds after some event; rejects after `timeoutMs`. */
  until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = {
        check,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`timed out waiting for ${what}`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** Resolves once the app has seen `offset` in `channel`. */
  reached(channel: string, offset: number, timeoutMs = 10_000): Promise<void> {
    return this.until(
      () => this.messages.some((m) => m.channel === channel && m.offset >= offset),
      `offset ${offset} in ${channel}`,
      timeoutMs,
    );
  }

  private settle(): void {
    this.waiters = this.waiters.filter((waiter) => {
      if (!waiter.check()) return true;
      waiter.resolve();
      return false;
    });
  }
}

/** 1…n */
export const range = (n: number, from = 1): number[] => Array.from({ length: n }, (_, i) => from + i);
