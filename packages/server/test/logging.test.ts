import assert from 'node:assert/strict';
import { test } from 'node:test';
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
