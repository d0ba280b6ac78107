import { once } from 'node:events';
import { Writable } from 'node:stream';
import pino from 'pino';
import WebSocket from 'ws';
import { type BuildOptions, buildApp, createLogger, type Parley } from '../src/app.ts';
import type { Role } from '../src/auth/tokens.ts';
import { loadConfig } from '../src/config.ts';

export const TEST_SECRET = 'test-secret-test-secret-test-secret-0123456789';

export interface TestServer {
  parley: Parley;
  /** Every log line, when started with `captureLogs`. */
  logs: string[];
  url: string;
  wsUrl: string;
  /** An access token signed by this server. */
  token(user: string, role?: Role, extra?: { channels?: string[]; ttl?: number }): Promise<string>;
  /** An HTTP request; the JSON body parsed when there is one. */
  http(method: string, path: string, options?: HttpOptions): Promise<HttpResult>;
  /** A WebSocket client, connected (not yet authenticated unless a token is given). */
  ws(path?: string, options?: { token?: string; headers?: Record<string, string> }): Promise<TestSocket>;
  close(): Promise<void>;
}

export interface HttpOptions {
  token?: string;
  body?: unknown;
  form?: Record<string, string>;
  headers?: Record<string, string>;
}

export interface HttpResult {
  status: number;
  body: any;
  headers: Headers;
  text: string;
}

/** Starts a real server on 127.0.0.1, port 0, with an in-memory SQLite store unless told otherwise. */
export async function startServer(
  env: Record<string, string> = {},
  options: { captureLogs?: boolean; wrapBroker?: BuildOptions['wrapBroker'] } = {},
): Promise<TestServer> {
  const config = loadConfig({
    HOST: '127.0.0.1',
    PORT: '0',
    DATABASE_URL: 'sqlite::memory:',
    JWT_SECRET: TEST_SECRET,
    LOG_LEVEL: 'silent',
    ...env,
  });
  const logs: string[] = [];
  const log = options.captureLogs
    ? createLogger(
        config,
        new Writable({
          write(chunk, _encoding, done) {
            logs.push(...chunk.toString().split('\n').filter(Boolean));
            done();
          },
        }),
      )
    : pino({ level: 'silent' });
  const parley = await buildApp(config, { log, wrapBroker: options.wrapBroker });
  const { url } = await parley.listen();
  const wsUrl = url.replace(/^http/, 'ws');
  const sockets = new Set<TestSocket>();
  return {
    parley,
    logs,
    url,
    wsUrl,
    token: async (user, role = 'user', extra = {}) => (await parley.ctx.tokens.issue(user, role, extra)).token,
    http: (method, path, options) => httpRequest(url, method, path, options),
    async ws(path = '/ws', options = {}) {
      const socket = await TestSocket.connect(`${wsUrl}${path}`, options);
      sockets.add(socket);
      return socket;
    },
    async close() {
      for (const socket of sockets) socket.terminate();
      await parley.close();
    },
  };
}

export async function httpRequest(
  base: string,
  method: string,
  path: string,
  options: HttpOptions = {},
): Promise<HttpResult> {
  const headers: Record<string, string> = { ...(options.headers ?? {}) };
  let body: string | undefined;
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (options.form) {
    headers['content-type'] = 'application/x-www-form-urlencoded';
    body = new URLSearchParams(options.form).toString();
  } else if (options.body !== undefined) {
    headers['content-type'] ??= 'application/json';
    body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
  }
  const response = await fetch(`${base}${path}`, { method, headers, body });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  return { status: response.status, body: parsed, headers: response.headers, text };
}

export interface Frame {
  type: string;
  id?: number;
  [key: string]: any;
}

/**
 * A real WebSocket client that records every frame, so a test waits on the
 * frame it expects instead of sleeping.
 */
export class TestSocket {
  readonly frames: Frame[] = [];
  private waiters: Array<{ match: (f: Frame) => boolean; resolve: (f: Frame) => void }> = [];
  private nextId = 1;
  readonly closed: Promise<{ code: number; reason: string }>;
  closeCode: number | undefined;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      const frame = JSON.parse(data.toString()) as Frame;
      this.frames.push(frame);
      this.waiters = this.waiters.filter((waiter) => {
        if (!waiter.match(frame)) return true;
        waiter.resolve(frame);
        return false;
      });
    });
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeCode = code;
        resolve({ code, reason: reason.toString() });
      });
    });
  }

  static async connect(
    url: string,
    options: { token?: string; headers?: Record<string, string> } = {},
  ): Promise<TestSocket> {
    const headers = { ...(options.headers ?? {}) };
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    const ws = new WebSocket(url, { headers });
    const socket = new TestSocket(ws);
    await Promise.race([
      once(ws, 'open'),
      once(ws, 'unexpected-response').then(([, response]) => {
        throw new Error(`upgrade refused: ${(response as { statusCode: number }).statusCode}`);
      }),
    ]);
    return socket;
  }

  /** Resolves with the first frame (already received or future) that matches. */
  next(match: (frame: Frame) => boolean, timeoutMs = 5000, what = 'frame'): Promise<Frame> {
    const seen = this.frames.find(match);
    if (seen) return Promise.resolve(seen);
    return this.waitFor(match, timeoutMs, what);
  }

  /** Resolves with the next matching frame received from now on. */
  waitFor(match: (frame: Frame) => boolean, timeoutMs = 5000, what = 'frame'): Promise<Frame> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
      this.waiters.push({
        match,
        resolve: (frame) => {
          clearTimeout(timer);
          resolve(frame);
        },
      });
    });
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** Sends a command with a fresh id and resolves with its reply or error frame. */
  async request(command: Record<string, unknown>, timeoutMs = 5000): Promise<Frame> {
    const id = this.nextId++;
    const response = this.waitFor((f) => f.id === id, timeoutMs, `reply to ${String(command.type)} #${id}`);
    this.send({ ...command, id });
    return response;
  }

  /** Like `request`, but fails unless the answer is a reply; resolves with its result. */
  async ok(command: Record<string, unknown>, timeoutMs = 5000): Promise<any> {
    const frame = await this.request(command, timeoutMs);
    if (frame.type !== 'reply') throw new Error(`${String(command.type)} failed: ${JSON.stringify(frame.error)}`);
    return frame.result;
  }

  welcome(): Promise<Frame> {
    return this.next((f) => f.type === 'welcome', 5000, 'welcome');
  }

  messages(channel?: string): any[] {
    return this.frames.filter((f) => f.type === 'message' && (!channel || f.channel === channel)).map((f) => f.message);
  }

  close(code?: number): void {
    this.ws.close(code);
  }

  terminate(): void {
    this.ws.terminate();
  }
}

/**
 * Polls `check` every `intervalMs` until it holds, for conditions no event
 * announces (a log line, a Redis count, readiness); bounded in count and time.
 */
export async function waitUntil(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
  intervalMs = 20,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const maxRounds = Math.ceil(timeoutMs / intervalMs) + 1;
  for (let round = 0; round < maxRounds; round++) {
    if (await check()) return;
    if (Date.now() >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
