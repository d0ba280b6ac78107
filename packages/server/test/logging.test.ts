import assert from 'node:assert/strict';
import { test } from 'node:test';
import { redactUrl, tokenOf } from '../src/auth/http-auth.ts';
import { startServer } from './helpers.ts';

test('no token, password or API key reaches a log line, whichever way it arrived', async () => {
  const apiKey = 'api-key-that-must-stay-secret-1234';
  const server = await startServer({ LOG_LEVEL: 'trace', SERVER_API_KEY: apiKey }, { captureLogs: true });
  try {
    const token = await server.token('alice');
    const password = 'correct horse battery staple';
    const secrets = [token, password, apiKey];

    // WebSocket: header, query parameter, auth frame, and a bad token.
    const byHeader = await server.ws('/ws', { token });
    await byHeader.welcome();
    const byQuery = await server.ws(`/ws?token=${token}`);
    await byQuery.welcome();
    const byFrame = await server.ws('/ws');
    byFrame.send({ type: 'auth', token });
    await byFrame.welcome();
    await byFrame.ok({ type: 'refresh', token });
    const badToken = `${token.slice(0, -4)}AAAA`;
    secrets.push(badToken);
    const bad = await server.ws(`/ws?token=${badToken}`);
    await bad.closed;

    // HTTP: bearer header, query token, credentials in bodies, API key header.
    await server.http('GET', '/me', { token });
    await server.http('GET', `/me?token=${token}`);
    await server.http('POST', '/auth/register', { body: { username: 'logtest', password } });
    await server.http('POST', '/auth/token', { form: { username: 'logtest', password } });
    await server.http('POST', '/auth/token', { body: { username: 'logtest', password: `${password}!` } });
    await server.http('POST', '/publish/topic:x', { body: { data: 1 }, headers: { 'x-api-key': apiKey } });
    for (const socket of [byHeader, byQuery, byFrame]) socket.close();
    await byFrame.closed;

    assert.ok(server.logs.length > 10, `logs were captured (${server.logs.length} lines)`);
    assert.ok(server.logs.some((line) => line.includes('connection open')));
    assert.ok(
      server.logs.some((line) => line.includes('[redacted]')),
      'query tokens show as [redacted]',
    );
    for (const line of server.logs) {
      for (const secret of secrets) assert.ok(!line.includes(secret), `a secret leaked into: ${line}`);
    }
  } finally {
    await server.close();
  }
});

test('a token parameter is redacted under every spelling tokenOf reads, and the rest of the URL stays', () => {
  const url = '/me?a=1&%74oken=secret1&b=two&tok%65n=secret2&%74%6F%6B%65%6E=secret3#x&c';
  // What the server would authenticate with is what must disappear.
  assert.equal(tokenOf({}, url), 'secret1');
  assert.equal(redactUrl(url), '/me?a=1&%74oken=[redacted]&b=two&tok%65n=[redacted]&%74%6F%6B%65%6E=[redacted]&c');
  assert.equal(redactUrl('/me?token=abc#frag&b=1'), '/me?token=[redacted]&b=1');
  assert.equal(redactUrl('/me?TOKEN=x&tokens=kept&a%3Dtoken=kept'), '/me?TOKEN=[redacted]&tokens=kept&a%3Dtoken=kept');
  assert.equal(redactUrl('/ws/rooms/general'), '/ws/rooms/general');
  assert.equal(redactUrl('/me?token'), '/me?token=[redacted]');
});

test('no percent-encoded query token, refresh token or password in a malformed body reaches a log line', async () => {
  const server = await startServer({ LOG_LEVEL: 'trace' }, { captureLogs: true });
  try {
    const password = 'tr0ub4dor & 3 — a password';
    const secrets = [password];
    const register = await server.http('POST', '/auth/register', { body: { username: 'logtest2', password } });
    assert.equal(register.status, 201);

    // A query name the parser decodes to `token` authenticates, so it must be hidden too.
    const token = await server.token('alice');
    secrets.push(token);
    for (const name of ['%74oken', 'tok%65n', '%74%6F%6B%65%6E']) {
      const me = await server.http('GET', `/me?${name}=${token}&view=full`);
      assert.equal(me.status, 200, `?${name}= authenticates`);
      assert.ok(
        server.logs.some((line) => line.includes(`/me?${name}=[redacted]&view=full`)),
        `the request line keeps the URL readable with ?${name}= redacted`,
      );
    }
    const viaWs = await server.ws(`/ws?%74oken=${token}`);
    await viaWs.welcome();
    viaWs.close();
    await viaWs.closed;

    // Refresh tokens in JSON and form bodies, and the pairs they are traded for.
    const signIn = await server.http('POST', '/auth/token', { form: { username: 'logtest2', password } });
    assert.equal(signIn.status, 200);
    secrets.push(signIn.body.access_token, signIn.body.refresh_token);
    const byJson = await server.http('POST', '/auth/refresh', { body: { refresh_token: signIn.body.refresh_token } });
    assert.equal(byJson.status, 200);
    secrets.push(byJson.body.access_token, byJson.body.refresh_token);
    const byForm = await server.http('POST', '/auth/refresh', { form: { refresh_token: byJson.body.refresh_token } });
    assert.equal(byForm.status, 200);
    secrets.push(byForm.body.access_token, byForm.body.refresh_token);
    // Reuse of a spent one: refused, and logged as reuse without the token.
    const reused = await server.http('POST', '/auth/refresh', { body: { refresh_token: signIn.body.refresh_token } });
    assert.equal(reused.status, 401);

    // Bodies the JSON parser refuses still carry a password: 400, and nothing logged of them.
    for (const body of [
      `{"username":"logtest2","password":"${password}"`,
      `{"username":"logtest2","password":"${password}" x}`,
      `{"username":"logtest2","password":"${password}","refresh_token":"${byForm.body.refresh_token}",}`,
    ]) {
      const refused = await server.http('POST', '/auth/token', { body });
      assert.equal(refused.status, 400, refused.text);
      assert.equal(refused.body.error.code, 'bad_request');
    }

    assert.ok(server.logs.length > 10, `logs were captured (${server.logs.length} lines)`);
    for (const line of server.logs) {
      for (const secret of secrets) assert.ok(!line.includes(secret), `a secret leaked into: ${line}`);
    }
  } finally {
    await server.close();
  }
});

test('connections that never authenticate still get a connection closed line, with user null and the code', async () => {
  const server = await startServer(
    { LOG_LEVEL: 'info', AUTH_TIMEOUT_MS: '200', MAX_CONNECTIONS: '3', MAX_CONNECTIONS_PER_USER: '1' },
    { captureLogs: true },
  );
  const closedLines = () =>
    server.logs.map((line) => JSON.parse(line)).filter((entry) => entry.msg === 'connection closed');
  /** Waits for `count` lines that match (the server logs once its side of the socket has closed). */
  const waitForLine = async (match: (entry: any) => boolean, what: string, count = 1) => {
    const deadline = Date.now() + 5000;
    while (closedLines().filter(match).length < count) {
      if (Date.now() > deadline) throw new Error(`no log line for ${what}: ${JSON.stringify(closedLines())}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };
  try {
    const alice = await server.ws('/ws', { token: await server.token('alice') });
    await alice.welcome();

    const silent = await server.ws('/ws');
    assert.equal((await silent.closed).code, 4002);
    await waitForLine((e) => e.code === 4002 && e.user === null, '4002');

    const notAuth = await server.ws('/ws');
    notAuth.send({ type: 'ping', id: 1 });
    assert.equal((await notAuth.closed).code, 1008);
    const badToken = await server.ws('/ws', { token: 'not-a-jwt' });
    assert.equal((await badToken.closed).code, 1008);
    await waitForLine((e) => e.code === 1008 && e.user === null && e.connectionId, 'both 1008s', 2);

    const aliceAgain = await server.ws('/ws', { token: await server.token('alice') });
    assert.equal((await aliceAgain.closed).code, 1013);
    await waitForLine((e) => e.code === 1013 && e.user === null && e.connectionId, '1013 per user');

    const bob = await server.ws('/ws', { token: await server.token('bob') });
    await bob.welcome();
    const carol = await server.ws('/ws', { token: await server.token('carol') });
    await carol.welcome();
    const dave = await server.ws('/ws', { token: await server.token('dave') });
    assert.equal((await dave.closed).code, 1013);
    await waitForLine(
      (e) => e.code === 1013 && e.user === null && e.reason === 'too many connections',
      'MAX_CONNECTIONS',
    );

    for (const line of closedLines()) {
      assert.equal(line.instance, server.parley.ctx.config.instanceId);
      // Even for a socket already gone when its line is written (4002: the peer never spoke).
      assert.equal(line.ip, '127.0.0.1', `the peer address in ${JSON.stringify(line)}`);
    }
    const metrics = server.parley.ctx.metrics.stats.closes;
    assert.equal(metrics.get(1013), 2, 'both 1013s counted');
    assert.equal(metrics.get(4002), 1);
    alice.close();
    await waitForLine((e) => e.code === 1005 && e.user === 'alice' && e.ip === '127.0.0.1', 'alice closing');
  } finally {
    await server.close();
  }
});
