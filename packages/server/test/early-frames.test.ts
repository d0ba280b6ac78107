import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { type CryptoKey, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { startServer, type TestServer } from './helpers.ts';

/**
 * An identity provider whose key set is answered only when the test says so:
 * verifying one of its RS256 tokens takes exactly as long as the test wants,
 * which is how frames are made to arrive while a token is being verified.
 */
class HeldJwks {
  private readonly server = createServer();
  private held: ServerResponse[] = [];
  private released = false;
  private body = '';
  requests = 0;
  private requested: Array<() => void> = [];
  url = '';

  async start(keys: unknown[]): Promise<void> {
    this.body = JSON.stringify({ keys });
    this.server.on('request', (_request, response) => {
      this.requests++;
      for (const resolve of this.requested.splice(0)) resolve();
      if (this.released) this.answer(response);
      else this.held.push(response);
    });
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/jwks.json`;
  }

  /** Resolves once the key set has been asked for (a verification is waiting on it). */
  fetched(): Promise<void> {
    if (this.requests > 0) return Promise.resolve();
    return new Promise((resolve) => this.requested.push(resolve));
  }

  hold(): void {
    this.released = false;
  }

  release(): void {
    this.released = true;
    for (const response of this.held.splice(0)) this.answer(response);
  }

  private answer(response: ServerResponse): void {
    response.writeHead(200, { 'content-type': 'application/json' }).end(this.body);
  }

  async stop(): Promise<void> {
    this.release();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('frames that arrive while a token is being verified', () => {
  const jwks = new HeldJwks();
  let key: CryptoKey;

  before(async () => {
    const pair = await generateKeyPair('RS256');
    key = pair.privateKey;
    await jwks.start([{ ...(await exportJWK(pair.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' }]);
  });
  after(() => jwks.stop());

  const tokenFor = (user: string) =>
    new SignJWT({})
      .setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' })
      .setSubject(user)
      .setExpirationTime('10m')
      .sign(key);

  /** A fresh server each time: its key-set cache is empty, so its first verification waits on the provider. */
  async function withServer(env: Record<string, string>, fn: (server: TestServer) => Promise<void>): Promise<void> {
    jwks.hold();
    jwks.requests = 0;
    const server = await startServer({ JWT_JWKS_URL: jwks.url, ...env });
    try {
      await fn(server);
    } finally {
      jwks.release();
      await server.close();
    }
  }

  test('are counted and rate limited once, then answered in order after the welcome', () =>
    withServer({ RATE_LIMIT_PER_SEC: '1', RATE_LIMIT_BURST: '5' }, async (server) => {
      const stats = server.parley.ctx.metrics.stats;
      const socket = await server.ws('/ws', { token: await tokenFor('early') });
      await jwks.fetched();
      const frames = [1, 2, 3, 4, 5].map((id) => JSON.stringify({ type: 'ping', id }));
      for (const frame of frames) socket.send(frame);
      await waitFor(() => stats.framesIn === 5, 'the five frames to arrive');
      assert.equal(
        socket.frames.some((f) => f.type === 'welcome'),
        false,
        'still verifying',
      );
      jwks.release();
      assert.equal((await socket.welcome()).user, 'early');
      for (let id = 1; id <= 5; id++) assert.equal((await socket.next((f) => f.id === id)).type, 'reply');
      const order = socket.frames.filter((f) => f.id !== undefined).map((f) => f.id);
      assert.deepEqual(order, [1, 2, 3, 4, 5]);
      assert.equal(stats.framesIn, 5, 'not counted again when replayed');
      assert.equal(
        stats.bytesIn,
        frames.reduce((sum, f) => sum + Buffer.byteLength(f), 0),
      );
      // The burst was spent while waiting: the next frame is refused, not a free one.
      const refused = await socket.request({ type: 'ping' });
      assert.equal(refused.error?.code, 'rate_limited');
    }));

  test('at most RATE_LIMIT_BURST are held: one more closes 4008', () =>
    withServer({ RATE_LIMIT_PER_SEC: '100000', RATE_LIMIT_BURST: '5' }, async (server) => {
      const stats = server.parley.ctx.metrics.stats;
      const socket = await server.ws('/ws', { token: await tokenFor('flood') });
      await jwks.fetched();
      // One at a time, so the bucket refills between them and only the cap can refuse.
      for (let id = 1; id <= 5; id++) {
        socket.send({ type: 'ping', id });
        await waitFor(() => stats.framesIn === id, `frame ${id} to arrive`);
      }
      assert.equal(socket.closeCode, undefined, 'five held is the limit, not over it');
      socket.send({ type: 'ping', id: 6 });
      assert.equal((await socket.closed).code, 4008);
      assert.equal(
        socket.frames.some((f) => f.type === 'welcome'),
        false,
      );
      assert.equal(stats.closes.get(4008), 1);
    }));

  test('an auth frame in time is not closed 4002 however long its verification takes', () =>
    withServer({ AUTH_TIMEOUT_MS: '300' }, async (server) => {
      const slow = await server.ws('/ws');
      const silent = await server.ws('/ws');
      slow.send({ type: 'auth', token: await tokenFor('patient') });
      await jwks.fetched();
      // The silent socket's close is the deadline passing: the slow one is still being verified.
      assert.equal((await silent.closed).code, 4002);
      assert.equal(slow.closeCode, undefined);
      jwks.release();
      assert.equal((await slow.welcome()).user, 'patient');
      assert.deepEqual(await slow.ok({ type: 'ping' }), {});
      assert.equal(slow.closeCode, undefined);
    }));
});
