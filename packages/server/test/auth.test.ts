import assert from 'node:assert/strict';
import { randomBytes, scrypt } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { addressKey, LOGIN_LIMITS, LoginLimiter } from '../src/auth/login-limiter.ts';
import { hashPassword, needsRehash, verifyAgainstDummy, verifyPassword } from '../src/auth/passwords.ts';
import { RefreshTokenRepository } from '../src/auth/refresh-tokens.ts';
import { startServer, type TestServer } from './helpers.ts';

const PASSWORD = 'correct horse';

async function register(server: TestServer, username: string, password = PASSWORD) {
  const response = await server.http('POST', '/auth/register', { body: { username, password } });
  assert.equal(response.status, 201, response.text);
  return response;
}

function signIn(server: TestServer, username: string, password: string, address?: string) {
  return server.http('POST', '/auth/token', {
    body: { username, password },
    headers: address ? { 'x-forwarded-for': address } : {},
  });
}

function assertError(response: { status: number; body: any; text: string }, status: number, code: string) {
  assert.equal(response.status, status, response.text);
  assert.equal(response.body?.error?.code, code, response.text);
  assert.equal(typeof response.body.error.message, 'string');
}

function assertTokenPair(body: any) {
  assert.deepEqual(Object.keys(body).sort(), ['access_token', 'expires_in', 'refresh_token', 'token_type']);
  assert.equal(body.token_type, 'bearer');
  assert.equal(body.expires_in, 900);
  assert.match(body.access_token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
  assert.match(body.refresh_token, /^[\w-]{43}$/);
}

describe('registration, sign-in, refresh and /me', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ TRUST_PROXY: 'true' });
  });
  after(() => server.close());

  test('register answers 201 {username}, then 409 conflict for the same name', async () => {
    const first = await register(server, 'alice');
    assert.deepEqual(first.body, { username: 'alice' });
    const again = await server.http('POST', '/auth/register', { body: { username: 'alice', password: 'other-pass' } });
    assertError(again, 409, 'conflict');
    assert.match(again.body.error.message, /taken/);
  });

  test('username: 3 and 32 characters of a-z 0-9 _ . - are accepted', async () => {
    for (const username of ['abc', 'a'.repeat(32), 'a_b.c-9']) await register(server, username);
  });

  test('username: 2 or 33 characters, capitals, spaces and other characters are 400 naming the rule', async () => {
    for (const username of ['ab', 'b'.repeat(33), 'Alice', 'al ice', 'al@ce', 'alïce', 'a:b', '']) {
      const response = await server.http('POST', '/auth/register', { body: { username, password: PASSWORD } });
      assertError(response, 400, 'bad_request');
      assert.equal(response.body.error.message, 'username must be 3-32 characters of a-z 0-9 _ . -', username);
    }
  });

  test('password: 8 and 128 characters are accepted, 7 and 129 are 400 naming the rule', async () => {
    await register(server, 'pw8', 'p'.repeat(8));
    await register(server, 'pw128', 'p'.repeat(128));
    for (const [username, length] of [
      ['pw7', 7],
      ['pw129', 129],
    ] as const) {
      const response = await server.http('POST', '/auth/register', {
        body: { username, password: 'p'.repeat(length) },
      });
      assertError(response, 400, 'bad_request');
      assert.equal(response.body.error.message, 'password must be 8-128 characters');
    }
    // The 128-character password signs in, so it was stored whole.
    assert.equal((await signIn(server, 'pw128', 'p'.repeat(128))).status, 200);
    assert.equal((await signIn(server, 'pw128', 'p'.repeat(127))).status, 401);
  });

  test('a missing field or a body that is not an object is 400 with a message saying what to send', async () => {
    const missing = await server.http('POST', '/auth/register', { body: { username: 'nopass' } });
    assertError(missing, 400, 'bad_request');
    assert.equal(missing.body.error.message, 'password is required');
    for (const body of ['[1]', 'null', '"alice"']) {
      const response = await server.http('POST', '/auth/register', { body });
      assertError(response, 400, 'bad_request');
      assert.match(response.body.error.message, /JSON object \{username, password\}/);
    }
    assertError(await server.http('POST', '/auth/register', { body: '{not json' }), 400, 'bad_request');
    const noBody = await server.http('POST', '/auth/token');
    assertError(noBody, 400, 'bad_request');
    assert.match(noBody.body.error.message, /username and password/);
  });

  test('POST /auth/token takes an OAuth2 form with grant_type=password, and the token works on /me', async () => {
    await register(server, 'formuser');
    const response = await server.http('POST', '/auth/token', {
      form: { grant_type: 'password', username: 'formuser', password: PASSWORD, scope: '' },
    });
    assert.equal(response.status, 200, response.text);
    assertTokenPair(response.body);
    assert.equal(response.headers.get('cache-control'), 'no-store');
    const me = await server.http('GET', '/me', { token: response.body.access_token });
    assert.equal(me.status, 200, me.text);
    assert.deepEqual(me.body, { username: 'formuser', role: 'user' });
  });

  test('POST /auth/token takes a form without grant_type, and JSON', async () => {
    await register(server, 'jsonuser');
    const form = await server.http('POST', '/auth/token', { form: { username: 'jsonuser', password: PASSWORD } });
    assert.equal(form.status, 200, form.text);
    assertTokenPair(form.body);
    const json = await server.http('POST', '/auth/token', {
      body: { grant_type: 'password', username: 'jsonuser', password: PASSWORD },
    });
    assert.equal(json.status, 200, json.text);
    assertTokenPair(json.body);
  });

  test('a grant_type other than password is 400', async () => {
    const response = await server.http('POST', '/auth/token', {
      form: { grant_type: 'client_credentials', username: 'alice', password: PASSWORD },
    });
    assertError(response, 400, 'bad_request');
    assert.equal(response.body.error.message, 'grant_type must be "password"');
  });

  test('a wrong password and an unknown user are the same 401', async () => {
    await register(server, 'carol');
    const wrong = await signIn(server, 'carol', 'not the password');
    const unknown = await signIn(server, 'nobody-here', PASSWORD);
    assertError(wrong, 401, 'unauthorized');
    assertError(unknown, 401, 'unauthorized');
    assert.deepEqual(wrong.body, unknown.body);
    assert.equal(wrong.body.error.message, 'invalid username or password');
  });

  test('a refresh token works once; the new one works too', async () => {
    await register(server, 'dave');
    const signedIn = await signIn(server, 'dave', PASSWORD);
    const first = await server.http('POST', '/auth/refresh', { body: { refresh_token: signedIn.body.refresh_token } });
    assert.equal(first.status, 200, first.text);
    assertTokenPair(first.body);
    assert.notEqual(first.body.refresh_token, signedIn.body.refresh_token);
    assert.equal(first.headers.get('cache-control'), 'no-store');
    assert.deepEqual((await server.http('GET', '/me', { token: first.body.access_token })).body, {
      username: 'dave',
      role: 'user',
    });

    const second = await server.http('POST', '/auth/refresh', { body: { refresh_token: signedIn.body.refresh_token } });
    assertError(second, 401, 'unauthorized');
    assert.match(second.body.error.message, /already used/);
  });

  test('reusing a spent refresh token revokes every refresh token of that user, and only of that user', async () => {
    await register(server, 'erin');
    await register(server, 'frank');
    const tabA = await signIn(server, 'erin', PASSWORD);
    const tabB = await signIn(server, 'erin', PASSWORD);
    const other = await signIn(server, 'frank', PASSWORD);
    const rotated = await server.http('POST', '/auth/refresh', { body: { refresh_token: tabA.body.refresh_token } });
    assert.equal(rotated.status, 200, rotated.text);

    const replay = await server.http('POST', '/auth/refresh', { body: { refresh_token: tabA.body.refresh_token } });
    assertError(replay, 401, 'unauthorized');
    for (const token of [tabB.body.refresh_token, rotated.body.refresh_token]) {
      const revoked = await server.http('POST', '/auth/refresh', { body: { refresh_token: token } });
      assertError(revoked, 401, 'unauthorized');
    }
    const unaffected = await server.http('POST', '/auth/refresh', {
      form: { refresh_token: other.body.refresh_token },
    });
    assert.equal(unaffected.status, 200, unaffected.text);
    // Signing in again with the password starts over.
    const fresh = await signIn(server, 'erin', PASSWORD);
    assert.equal(
      (await server.http('POST', '/auth/refresh', { body: { refresh_token: fresh.body.refresh_token } })).status,
      200,
    );
  });

  test('an unknown or malformed refresh token, or an access token, is 401 at /auth/refresh', async () => {
    const access = await server.token('alice');
    for (const refresh_token of [randomBytes(32).toString('base64url'), 'garbage', access]) {
      const response = await server.http('POST', '/auth/refresh', { body: { refresh_token } });
      assertError(response, 401, 'unauthorized');
    }
    const missing = await server.http('POST', '/auth/refresh', { body: {} });
    assertError(missing, 400, 'bad_request');
    assert.equal(missing.body.error.message, 'refresh_token is required');
  });

  test('a refresh token is not an access token: /me refuses it', async () => {
    await register(server, 'grace');
    const { body } = await signIn(server, 'grace', PASSWORD);
    assertError(await server.http('GET', '/me', { token: body.refresh_token }), 401, 'unauthorized');
    assertError(await server.http('GET', `/me?token=${body.refresh_token}`), 401, 'unauthorized');
  });

  test('/me answers {username, role} for any valid token, registered user or not', async () => {
    const me = await server.http('GET', '/me', { token: await server.token('not-registered') });
    assert.equal(me.status, 200, me.text);
    assert.deepEqual(me.body, { username: 'not-registered', role: 'user' });
    const admin = await server.http('GET', '/me', { token: await server.token('root', 'admin') });
    assert.deepEqual(admin.body, { username: 'root', role: 'admin' });
  });

  test('/me without a token, or with another scheme, is 401', async () => {
    const none = await server.http('GET', '/me');
    assertError(none, 401, 'unauthorized');
    assert.match(none.body.error.message, /bearer token is required/);
    const basic = await server.http('GET', '/me', { headers: { authorization: 'Basic YWxpY2U6cGFzc3dvcmQ=' } });
    assertError(basic, 401, 'unauthorized');
  });

  test('/me takes the token from ?token= too', async () => {
    const token = await server.token('query-user');
    const me = await server.http('GET', `/me?token=${encodeURIComponent(token)}`);
    assert.equal(me.status, 200, me.text);
    assert.deepEqual(me.body, { username: 'query-user', role: 'user' });
  });

  test('the auth routes are in /openapi.json under the auth tag, /auth/token with both body types', async () => {
    const { body } = await server.http('GET', '/openapi.json');
    for (const [path, method] of [
      ['/auth/register', 'post'],
      ['/auth/token', 'post'],
      ['/auth/refresh', 'post'],
      ['/me', 'get'],
    ] as const) {
      assert.deepEqual(body.paths[path]?.[method]?.tags, ['auth'], `${method} ${path}`);
    }
    assert.deepEqual(Object.keys(body.paths['/auth/token'].post.requestBody.content).sort(), [
      'application/json',
      'application/x-www-form-urlencoded',
    ]);
    assert.ok(body.paths['/auth/token'].post.responses['429'], 'the 429 is documented');
    assert.deepEqual(body.paths['/me'].get.security, [{ bearer: [] }]);
  });
});

describe('sign-in lockout (server)', () => {
  test('5 failures for a username: the 5th is still 401, the 6th is 429, and so is the right password', async (t) => {
    const server = await startServer({ TRUST_PROXY: 'true' });
    t.after(() => server.close());
    await register(server, 'victim');
    await register(server, 'bystander');
    for (let attempt = 1; attempt <= LOGIN_LIMITS.maxFailuresPerUsername; attempt++) {
      assertError(await signIn(server, 'victim', `wrong-${attempt}`), 401, 'unauthorized');
    }
    const locked = await signIn(server, 'victim', 'wrong-6');
    assertError(locked, 429, 'rate_limited');
    const retryAfter = Number(locked.headers.get('retry-after'));
    assert.ok(retryAfter >= 1 && retryAfter <= LOGIN_LIMITS.windowMs / 1000, `Retry-After ${retryAfter}`);
    assert.match(locked.body.error.message, /too many failed sign-ins/);

    assertError(await signIn(server, 'victim', PASSWORD), 429, 'rate_limited');
    // From another address too: the username itself is locked.
    assertError(await signIn(server, 'victim', PASSWORD, '198.51.100.1'), 429, 'rate_limited');
    // The address is not locked for other users (5 failures is far from its limit).
    assert.equal((await signIn(server, 'bystander', PASSWORD)).status, 200);
  });

  test('a success clears the username count', async (t) => {
    const server = await startServer({ TRUST_PROXY: 'true' });
    t.after(() => server.close());
    await register(server, 'forgetful');
    const almost = LOGIN_LIMITS.maxFailuresPerUsername - 1;
    for (let attempt = 0; attempt < almost; attempt++) {
      assertError(await signIn(server, 'forgetful', 'nope'), 401, 'unauthorized');
    }
    assert.equal((await signIn(server, 'forgetful', PASSWORD)).status, 200);
    for (let attempt = 0; attempt < almost; attempt++) {
      assertError(await signIn(server, 'forgetful', 'nope'), 401, 'unauthorized');
    }
    assert.equal((await signIn(server, 'forgetful', PASSWORD)).status, 200);
  });

  test('parallel guesses cannot overtake the count: of 8 at once, exactly 5 are checked', async (t) => {
    const server = await startServer({ TRUST_PROXY: 'true' });
    t.after(() => server.close());
    await register(server, 'burst');
    const responses = await Promise.all(Array.from({ length: 8 }, (_, i) => signIn(server, 'burst', `guess-${i}`)));
    const statuses = responses.map((r) => r.status).sort();
    assert.deepEqual(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
  });

  test('20 failures from one address lock that address for every username, not other addresses', async (t) => {
    const server = await startServer({ TRUST_PROXY: 'true' });
    t.after(() => server.close());
    await register(server, 'neighbour');
    const attacker = '203.0.113.7';
    // One failure per username, so no username reaches its own limit.
    const failures = await Promise.all(
      Array.from({ length: LOGIN_LIMITS.maxFailuresPerAddress }, (_, i) => signIn(server, `user${i}`, 'x', attacker)),
    );
    for (const response of failures) assertError(response, 401, 'unauthorized');

    const locked = await signIn(server, 'neighbour', PASSWORD, attacker);
    assertError(locked, 429, 'rate_limited');
    assert.ok(Number(locked.headers.get('retry-after')) >= 1);
    assert.equal((await signIn(server, 'neighbour', PASSWORD, '203.0.113.8')).status, 200);
    assert.equal((await signIn(server, 'neighbour', PASSWORD)).status, 200);
  });
});

describe('LoginLimiter', () => {
  function clock(start = 1_000_000) {
    let now = start;
    return { now: () => now, advance: (ms: number) => (now += ms) };
  }

  test('the lock lasts until the window that began at the first failure ends', () => {
    const time = clock();
    const limiter = new LoginLimiter({ now: time.now });
    for (let i = 0; i < 5; i++) {
      assert.equal(limiter.attempt('bob', '192.0.2.1'), undefined);
      time.advance(60_000);
    }
    // First failure at t0; now t0+5 min: 10 minutes left.
    assert.equal(limiter.attempt('bob', '192.0.2.1'), 600);
    time.advance(600_000 - 1);
    assert.equal(limiter.attempt('bob', '192.0.2.1'), 1);
    time.advance(1);
    assert.equal(limiter.attempt('bob', '192.0.2.1'), undefined, 'a new window starts');
  });

  test('thresholds and window are injectable', () => {
    const time = clock();
    const limiter = new LoginLimiter({
      now: time.now,
      maxFailuresPerUsername: 2,
      maxFailuresPerAddress: 3,
      windowMs: 10_000,
    });
    assert.equal(limiter.attempt('a', '192.0.2.1'), undefined);
    assert.equal(limiter.attempt('a', '192.0.2.1'), undefined);
    assert.equal(limiter.attempt('a', '192.0.2.1'), 10);
    assert.equal(limiter.attempt('b', '192.0.2.1'), undefined, 'the address has had 2 of 3');
    assert.equal(limiter.attempt('c', '192.0.2.1'), 10, 'now the address is locked');
    assert.equal(limiter.attempt('c', '192.0.2.2'), undefined);
  });

  test('a success forgets the username and takes back the address count of that attempt only', () => {
    const limiter = new LoginLimiter({ maxFailuresPerUsername: 3, maxFailuresPerAddress: 3, now: clock().now });
    limiter.attempt('a', '192.0.2.1');
    limiter.attempt('a', '192.0.2.1');
    limiter.attempt('a', '192.0.2.1');
    limiter.succeeded('a', '192.0.2.1');
    // Address: 2 real failures remain; username: none.
    assert.equal(limiter.attempt('b', '192.0.2.1'), undefined);
    assert.ok(limiter.attempt('c', '192.0.2.1')! > 0, 'the address reached 3');
    assert.ok(limiter.attempt('a', '192.0.2.9') === undefined);
  });

  test('the maps stay bounded: expired entries go first, then the oldest', () => {
    const time = clock();
    const limiter = new LoginLimiter({ now: time.now, maxEntries: 10, windowMs: 1000 });
    for (let i = 0; i < 25; i++) limiter.attempt(`user${i}`, `192.0.2.${i}`);
    assert.deepEqual(limiter.tracked, { usernames: 10, addresses: 10 });
    time.advance(1000);
    limiter.attempt('late', '192.0.2.200');
    assert.deepEqual(limiter.tracked, { usernames: 1, addresses: 1 });
  });

  test('IPv6 addresses count per /64; IPv4-mapped addresses as IPv4', () => {
    assert.equal(addressKey('192.0.2.1'), '192.0.2.1');
    assert.equal(addressKey('::ffff:192.0.2.1'), '192.0.2.1');
    assert.equal(addressKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
    assert.equal(addressKey('2001:0db8:0001:0002:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64');
    assert.equal(addressKey('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(addressKey('::1'), '0:0:0:0::/64');
    assert.equal(addressKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
    assert.equal(addressKey('64:ff9b:1:2::192.0.2.1'), '64:ff9b:1:2::/64');
    const limiter = new LoginLimiter({ maxFailuresPerAddress: 2, now: clock().now });
    limiter.attempt('a', '2001:db8:1:2::1');
    limiter.attempt('b', '2001:db8:1:2::2');
    assert.ok(limiter.attempt('c', '2001:db8:1:2:ffff::3')! > 0, 'same /64');
    assert.equal(limiter.attempt('c', '2001:db8:1:3::3'), undefined, 'another /64');
  });
});

describe('passwords', () => {
  test('a hash is scrypt$N$r$p$salt$hash and verifies only the right password', async () => {
    const encoded = await hashPassword('s3cret password');
    assert.match(encoded, /^scrypt\$32768\$8\$3\$[\w-]{22}\$[\w-]{86}$/);
    assert.equal(await verifyPassword('s3cret password', encoded), true);
    assert.equal(await verifyPassword('s3cret passwore', encoded), false);
    assert.notEqual(await hashPassword('s3cret password'), encoded, 'a fresh salt each time');
    assert.equal(needsRehash(encoded), false);
  });

  test('a malformed or hostile stored hash never matches and never allocates', async () => {
    const good = await hashPassword('pw');
    const [, , , , salt, hash] = good.split('$');
    for (const bad of [
      '',
      'plain',
      `bcrypt$32768$8$3$${salt}$${hash}`,
      `scrypt$30000$8$3$${salt}$${hash}`,
      `scrypt$${2 ** 30}$8$1$${salt}$${hash}`,
      `scrypt$32768$8$3$$${hash}`,
    ]) {
      assert.equal(await verifyPassword('pw', bad), false, bad);
      assert.equal(needsRehash(bad), true);
    }
  });

  test('passwords are compared after NFC normalisation', async () => {
    const composed = 'caf\u00e9 au lait';
    const decomposed = 'cafe\u0301 au lait';
    assert.equal(await verifyPassword(decomposed, await hashPassword(composed)), true);
  });

  test('the dummy check for unknown users fails', async () => {
    assert.equal(await verifyAgainstDummy(PASSWORD), false);
  });

  test('a hash with older parameters still signs in and is upgraded on that sign-in', async (t) => {
    const server = await startServer({ TRUST_PROXY: 'true' });
    t.after(() => server.close());
    await register(server, 'oldtimer');
    const salt = randomBytes(16);
    const key = await new Promise<Buffer>((resolve, reject) =>
      scrypt(PASSWORD, salt, 64, { N: 2 ** 14, r: 8, p: 1 }, (error, derived) =>
        error ? reject(error) : resolve(derived),
      ),
    );
    const legacy = `scrypt$16384$8$1$${salt.toString('base64url')}$${key.toString('base64url')}`;
    const db = server.parley.ctx.database.db;
    await db.updateTable('users').set({ password_hash: legacy }).where('username', '=', 'oldtimer').execute();

    assert.equal((await signIn(server, 'oldtimer', PASSWORD)).status, 200);
    const row = await db
      .selectFrom('users')
      .select('password_hash')
      .where('username', '=', 'oldtimer')
      .executeTakeFirst();
    assert.ok(row && !needsRehash(row.password_hash), row?.password_hash);
    assert.equal((await signIn(server, 'oldtimer', PASSWORD)).status, 200);
  });
});

describe('RefreshTokenRepository', () => {
  test('an expired refresh token is refused as expired, and is stored only as a hash', async (t) => {
    const server = await startServer({ TRUST_PROXY: 'true' });
    t.after(() => server.close());
    let now = 5_000_000;
    const repository = new RefreshTokenRepository(server.parley.ctx.database.db, 60, () => now);
    const { token, expiresIn } = await repository.issue('henry', 'user');
    assert.equal(expiresIn, 60);
    const rows = await server.parley.ctx.database.db.selectFrom('refresh_tokens').selectAll().execute();
    assert.ok(rows.length > 0 && rows.every((row) => row.token_hash !== token && !row.token_hash.includes(token)));

    now += 60_000;
    assert.deepEqual(await repository.rotate(token), { ok: false, reason: 'expired', username: 'henry' });
    const live = await repository.issue('henry', 'user');
    now += 59_999;
    assert.deepEqual(await repository.rotate(live.token), { ok: true, username: 'henry', role: 'user' });
  });

  test('of two concurrent rotations of one token exactly one wins', async (t) => {
    const server = await startServer({ TRUST_PROXY: 'true' });
    t.after(() => server.close());
    const repository = new RefreshTokenRepository(server.parley.ctx.database.db, 60);
    const { token } = await repository.issue('ivy', 'user');
    const results = await Promise.all([repository.rotate(token), repository.rotate(token)]);
    assert.equal(results.filter((r) => r.ok).length, 1, JSON.stringify(results));
  });
});

test('without TRUST_PROXY a client cannot dodge the per-address limit with X-Forwarded-For', async () => {
  const server = await startServer();
  try {
    // 20 failures, each for another username and claiming another address: all from 127.0.0.1 really.
    for (let i = 0; i < 20; i++) {
      assertError(await signIn(server, `nobody${i}`, 'wrong password', `203.0.113.${i}`), 401, 'unauthorized');
    }
    assertError(await signIn(server, 'nobody-else', 'wrong password', '198.51.100.7'), 429, 'rate_limited');
  } finally {
    await server.close();
  }
});
