import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { type CryptoKey, exportJWK, generateKeyPair, type JWTPayload, SignJWT, UnsecuredJWT } from 'jose';
import { TokenError, TokenService } from '../src/auth/tokens.ts';
import { startServer, TEST_SECRET, type TestServer } from './helpers.ts';

const secret = new TextEncoder().encode(TEST_SECRET);
const nowSeconds = () => Math.floor(Date.now() / 1000);

interface SignOptions {
  alg?: string;
  kid?: string;
  /** Claims; `sub` and `exp` get defaults unless given (undefined removes them). */
  claims?: JWTPayload;
}

/** A JWT with exactly the claims asked for (unlike TokenService.issue, which always sets sub and exp). */
function sign(key: Uint8Array | CryptoKey, options: SignOptions = {}): Promise<string> {
  const claims: JWTPayload = { sub: 'alice', exp: nowSeconds() + 60, ...options.claims };
  for (const [name, value] of Object.entries(claims)) if (value === undefined) delete claims[name];
  const header = { alg: options.alg ?? 'HS256', typ: 'JWT', ...(options.kid ? { kid: options.kid } : {}) };
  return new SignJWT(claims).setProtectedHeader(header).sign(key);
}

async function me(server: TestServer, token: string) {
  return server.http('GET', '/me', { token });
}

async function assertRefused(server: TestServer, token: string, message = 'invalid token') {
  const response = await me(server, token);
  assert.equal(response.status, 401, response.text);
  assert.deepEqual(response.body, { error: { code: 'unauthorized', message } });
}

async function assertAccepted(server: TestServer, token: string, expected: { username: string; role: string }) {
  const response = await me(server, token);
  assert.equal(response.status, 200, response.text);
  assert.deepEqual(response.body, expected);
}

describe('tokens at /me (no identity provider)', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server.close());

  test('an HS256 token signed with JWT_SECRET is accepted', async () => {
    await assertAccepted(server, await sign(secret), { username: 'alice', role: 'user' });
  });

  test('alg: none is refused', async () => {
    const token = new UnsecuredJWT({ sub: 'alice', role: 'admin' }).setExpirationTime('1h').encode();
    await assertRefused(server, token);
    // The same with a signature part glued on is no better.
    await assertRefused(server, `${token}${token.split('.')[0]}`);
  });

  test('HS256 signed with another key is refused', async () => {
    await assertRefused(server, await sign(new TextEncoder().encode('another-secret-another-secret-0123456789')));
  });

  test('another HMAC algorithm, even with the right secret, is refused', async () => {
    await assertRefused(server, await sign(secret, { alg: 'HS512' }));
  });

  test('RS256 and ES256 are refused when no JWKS is configured', async () => {
    const rsa = await generateKeyPair('RS256');
    await assertRefused(server, await sign(rsa.privateKey, { alg: 'RS256' }));
    const ec = await generateKeyPair('ES256');
    await assertRefused(server, await sign(ec.privateKey, { alg: 'ES256' }));
  });

  test('exp allows 5 s of skew: 3 s ago accepted, 10 s ago refused as expired', async () => {
    await assertAccepted(server, await sign(secret, { claims: { exp: nowSeconds() - 3 } }), {
      username: 'alice',
      role: 'user',
    });
    await assertRefused(server, await sign(secret, { claims: { exp: nowSeconds() - 10 } }), 'token expired');
  });

  test('nbf allows 5 s of skew: 3 s ahead accepted, 60 s ahead refused', async () => {
    await assertAccepted(server, await sign(secret, { claims: { nbf: nowSeconds() + 3 } }), {
      username: 'alice',
      role: 'user',
    });
    await assertRefused(server, await sign(secret, { claims: { nbf: nowSeconds() + 60 } }));
  });

  test('a token without exp, or without sub, is refused', async () => {
    await assertRefused(server, await sign(secret, { claims: { exp: undefined } }));
    await assertRefused(server, await sign(secret, { claims: { sub: undefined } }));
  });

  test('a tampered payload (sub changed, signature kept) is refused', async () => {
    const [header, payload, signature] = (await sign(secret)).split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
    for (const change of [{ sub: 'mallory' }, { role: 'admin' }]) {
      const forged = Buffer.from(JSON.stringify({ ...claims, ...change })).toString('base64url');
      await assertRefused(server, `${header}.${forged}.${signature}`);
    }
  });

  test('sub must be 1-64 of A-Z a-z 0-9 _ . -', async () => {
    await assertAccepted(server, await sign(secret, { claims: { sub: 'A'.repeat(64) } }), {
      username: 'A'.repeat(64),
      role: 'user',
    });
    for (const sub of ['a'.repeat(65), 'al ice', 'alice/x', 'alice:bob', '', 'ali\u00e7e']) {
      await assertRefused(server, await sign(secret, { claims: { sub } }));
    }
    await assertRefused(server, await sign(secret, { claims: { sub: 42 as unknown as string } }));
  });

  test('role must be user, admin or service', async () => {
    for (const role of ['admin', 'service', 'user']) {
      await assertAccepted(server, await sign(secret, { claims: { role } }), { username: 'alice', role });
    }
    for (const role of ['root', 'Admin', '', 7, ['admin']]) {
      await assertRefused(server, await sign(secret, { claims: { role } }));
    }
  });

  test('channels must list full topic names, no wildcards', async () => {
    await assertAccepted(server, await sign(secret, { claims: { channels: ['topic:deploys', 'topic:a.b-c_1'] } }), {
      username: 'alice',
      role: 'user',
    });
    for (const channels of [
      ['topic:*'],
      ['topic:deploys*'],
      ['topic:deploys', 'topic:'],
      ['room:lobby'],
      ['*'],
      'topic:x',
    ]) {
      await assertRefused(server, await sign(secret, { claims: { channels } }));
    }
  });

  test('garbage in the bearer header or ?token= is refused', async () => {
    for (const token of ['not-a-jwt', 'a.b.c', 'eyJhbGciOiJIUzI1NiJ9..']) await assertRefused(server, token);
    const response = await server.http('GET', '/me?token=a.b.c');
    assert.equal(response.status, 401);
  });
});

type WsPath = 'header' | 'query' | 'auth frame';
const WS_PATHS: WsPath[] = ['header', 'query', 'auth frame'];

/** Opens /ws presenting `token` one way; resolves with the welcome's user or the close code. */
async function overWebSocket(server: TestServer, token: string, path: WsPath): Promise<string | number> {
  const socket =
    path === 'header'
      ? await server.ws('/ws', { token })
      : path === 'query'
        ? await server.ws(`/ws?token=${encodeURIComponent(token)}`)
        : await server.ws('/ws');
  if (path === 'auth frame') socket.send({ type: 'auth', token });
  const outcome = await Promise.race([
    socket.closed.then(({ code }) => code),
    new Promise<string>((resolve) => {
      // TestSocket's own listener, registered first, has recorded the frame by now.
      const seen = () => {
        const welcome = socket.frames.find((f) => f.type === 'welcome');
        if (welcome) resolve(welcome.user);
      };
      socket.ws.on('message', seen);
      seen();
    }),
  ]);
  if (typeof outcome === 'number') {
    assert.equal(
      socket.frames.some((f) => f.type === 'welcome'),
      false,
      `no welcome before the close (${path})`,
    );
  } else {
    socket.close();
    await socket.closed;
  }
  return outcome;
}

async function assertRefusedOverWs(server: TestServer, token: string, code = 1008) {
  for (const path of WS_PATHS) assert.equal(await overWebSocket(server, token, path), code, `refused by ${path}`);
}

describe('the same tokens on the WebSocket: upgrade (header, ?token=) and auth frame', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server.close());

  test('a good HS256 token is welcomed on every path', async () => {
    const token = await sign(secret);
    for (const path of WS_PATHS) assert.equal(await overWebSocket(server, token, path), 'alice', path);
  });

  test('alg: none is closed 1008', async () => {
    const token = new UnsecuredJWT({ sub: 'alice', role: 'admin' }).setExpirationTime('1h').encode();
    await assertRefusedOverWs(server, token);
    await assertRefusedOverWs(server, `${token}${token.split('.')[0]}`);
  });

  test('another key, another HMAC algorithm, RS256/ES256 without a JWKS: 1008', async () => {
    await assertRefusedOverWs(server, await sign(new TextEncoder().encode('another-secret-another-secret-0123456789')));
    await assertRefusedOverWs(server, await sign(secret, { alg: 'HS512' }));
    await assertRefusedOverWs(server, await sign((await generateKeyPair('RS256')).privateKey, { alg: 'RS256' }));
    await assertRefusedOverWs(server, await sign((await generateKeyPair('ES256')).privateKey, { alg: 'ES256' }));
  });

  test('exp 10 s ago is closed 4001 (refresh); 3 s ago is within the skew', async () => {
    await assertRefusedOverWs(server, await sign(secret, { claims: { exp: nowSeconds() - 10 } }), 4001);
    const withinSkew = await sign(secret, { claims: { exp: nowSeconds() - 3 } });
    assert.equal(await overWebSocket(server, withinSkew, 'header'), 'alice');
  });

  test('nbf 60 s ahead is closed 1008; 3 s ahead is within the skew', async () => {
    await assertRefusedOverWs(server, await sign(secret, { claims: { nbf: nowSeconds() + 60 } }));
    const withinSkew = await sign(secret, { claims: { nbf: nowSeconds() + 3 } });
    assert.equal(await overWebSocket(server, withinSkew, 'auth frame'), 'alice');
  });

  test('a tampered payload (sub or role changed, signature kept) is closed 1008', async () => {
    const [header, payload, signature] = (await sign(secret)).split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
    for (const change of [{ sub: 'mallory' }, { role: 'admin' }]) {
      const forged = Buffer.from(JSON.stringify({ ...claims, ...change })).toString('base64url');
      await assertRefusedOverWs(server, `${header}.${forged}.${signature}`);
    }
  });
});

describe('TokenService', () => {
  const tokens = new TokenService({ secret: TEST_SECRET, accessTokenTtl: 900 });

  test('issues tokens it verifies, with the role and channels given', async () => {
    const { token, expiresIn } = await tokens.issue('bob', 'service', { channels: ['topic:deploys'] });
    assert.equal(expiresIn, 900);
    const principal = await tokens.verify(token);
    assert.equal(principal.user, 'bob');
    assert.equal(principal.role, 'service');
    assert.deepEqual([...(principal.channels ?? [])], ['topic:deploys']);
    assert.ok(Math.abs(principal.exp - (nowSeconds() + 900)) <= 1);
  });

  test('an expired token is a TokenError marked expired; a bad signature is not', async () => {
    await assert.rejects(
      tokens.verify(await sign(secret, { claims: { exp: nowSeconds() - 10 } })),
      (error: unknown) => error instanceof TokenError && error.expired,
    );
    await assert.rejects(
      tokens.verify(await sign(new TextEncoder().encode('x'.repeat(40)))),
      (error: unknown) => error instanceof TokenError && !error.expired,
    );
  });
});

describe('HS256 verification, byte by byte', () => {
  const tokens = new TokenService({ secret: TEST_SECRET, accessTokenTtl: 900 });
  const refused = (token: string) =>
    assert.rejects(tokens.verify(token), (error: unknown) => error instanceof TokenError && !error.expired);

  test('a signature with anything added, removed or changed is refused, though it may decode the same', async () => {
    const token = await sign(secret);
    await tokens.verify(token);
    const signature = token.slice(token.lastIndexOf('.') + 1);
    const head = token.slice(0, token.lastIndexOf('.') + 1);
    // Node's base64url decoder skips stray characters; the token must not survive them.
    await refused(`${head}${signature}=`);
    await refused(`${head}${signature.slice(0, 20)}!${signature.slice(20)}`);
    await refused(`${head}${signature.slice(0, -1)}`);
    // The last character carries 4 bits: its other values decode to the same 32 bytes.
    const last = signature.at(-1) as string;
    const sibling = String.fromCharCode(last.charCodeAt(0) + 1);
    await refused(`${head}${signature.slice(0, -1)}${sibling}`);
    await refused(`${head}`);
  });

  /** Signed by hand, for what jose will not sign. */
  const handSigned = (header: object, payload: string) => {
    const encode = (text: string) => Buffer.from(text).toString('base64url');
    const head = `${encode(JSON.stringify(header))}.${encode(payload)}`;
    return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
  };
  const claims = () => JSON.stringify({ sub: 'alice', exp: nowSeconds() + 60 });

  test('a header with crit or b64 is refused (no extension is understood)', async () => {
    await tokens.verify(handSigned({ alg: 'HS256' }, claims()));
    await refused(handSigned({ alg: 'HS256', crit: ['exp'] }, claims()));
    await refused(handSigned({ alg: 'HS256', b64: false, crit: ['b64'] }, claims()));
  });

  test('claims of the wrong type are refused: exp, nbf, iat', async () => {
    await refused(await sign(secret, { claims: { exp: String(nowSeconds() + 60) as unknown as number } }));
    await refused(await sign(secret, { claims: { nbf: 'now' as unknown as number } }));
    await refused(await sign(secret, { claims: { iat: 'then' as unknown as number } }));
  });

  test('a payload that is not a JSON object is refused', async () => {
    await refused(handSigned({ alg: 'HS256' }, '[1,2]'));
    await refused(handSigned({ alg: 'HS256' }, 'not json'));
  });
});

describe('tokens from an identity provider (JWT_JWKS_URL)', () => {
  let server: TestServer;
  let rsa: Awaited<ReturnType<typeof generateKeyPair>>;
  let ec: Awaited<ReturnType<typeof generateKeyPair>>;
  let jwksRequests = 0;
  const jwks = createServer();

  before(async () => {
    rsa = await generateKeyPair('RS256');
    ec = await generateKeyPair('ES256');
    const keys = [
      { ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' },
      { ...(await exportJWK(ec.publicKey)), kid: 'ec-1', alg: 'ES256', use: 'sig' },
    ];
    jwks.on('request', (request, response) => {
      jwksRequests++;
      if (request.url !== '/.well-known/jwks.json') {
        response.writeHead(404).end();
        return;
      }
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys }));
    });
    jwks.listen(0, '127.0.0.1');
    await once(jwks, 'listening');
    const { port } = jwks.address() as AddressInfo;
    server = await startServer({ JWT_JWKS_URL: `http://127.0.0.1:${port}/.well-known/jwks.json` });
  });

  after(async () => {
    await server?.close();
    jwks.closeAllConnections();
    await new Promise<void>((resolve) => jwks.close(() => resolve()));
  });

  test('RS256 and ES256 tokens of the provider are accepted; the user need not be registered', async () => {
    await assertAccepted(
      server,
      await sign(rsa.privateKey, { alg: 'RS256', kid: 'rsa-1', claims: { sub: 'idp-user' } }),
      {
        username: 'idp-user',
        role: 'user',
      },
    );
    await assertAccepted(
      server,
      await sign(ec.privateKey, { alg: 'ES256', kid: 'ec-1', claims: { sub: 'idp.bot', role: 'service' } }),
      { username: 'idp.bot', role: 'service' },
    );
    assert.ok(jwksRequests >= 1, 'the key set was fetched from the provider');
  });

  test('the same claim rules hold for provider tokens', async () => {
    const expired = await sign(rsa.privateKey, { alg: 'RS256', kid: 'rsa-1', claims: { exp: nowSeconds() - 10 } });
    await assertRefused(server, expired, 'token expired');
    const noExp = await sign(rsa.privateKey, { alg: 'RS256', kid: 'rsa-1', claims: { exp: undefined } });
    await assertRefused(server, noExp);
    const wildcard = await sign(ec.privateKey, { alg: 'ES256', kid: 'ec-1', claims: { channels: ['topic:*'] } });
    await assertRefused(server, wildcard);
  });

  test('a token signed by another RS256 key is refused, with the provider kid or an unknown one', async () => {
    const stranger = await generateKeyPair('RS256');
    await assertRefused(server, await sign(stranger.privateKey, { alg: 'RS256', kid: 'rsa-1' }));
    await assertRefused(server, await sign(stranger.privateKey, { alg: 'RS256', kid: 'rsa-unknown' }));
    await assertRefused(server, await sign(stranger.privateKey, { alg: 'RS256' }));
  });

  test("a key used with another algorithm than the provider's is refused", async () => {
    // The EC key under the RSA key's kid, and the RSA public key as an HMAC secret (algorithm confusion).
    await assertRefused(server, await sign(ec.privateKey, { alg: 'ES256', kid: 'rsa-1' }));
    const publicJwk = new TextEncoder().encode(JSON.stringify(await exportJWK(rsa.publicKey)));
    await assertRefused(server, await sign(publicJwk, { alg: 'HS256', kid: 'rsa-1' }));
  });

  test('tokens this server issues keep working beside the provider', async () => {
    await assertAccepted(server, await server.token('local', 'admin'), { username: 'local', role: 'admin' });
  });
});
