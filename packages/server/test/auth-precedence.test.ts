import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startServer, type TestServer } from './helpers.ts';

/**
 * PROTOCOL §3: credentials are taken from the first place that has them,
 * `Authorization: Bearer`, then `?token=`, then the `auth` frame; a later one
 * never rescues or overrides an earlier one.
 */
describe('which credentials count when several are given', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ AUTH_TIMEOUT_MS: '2000' });
  });
  after(() => server.close());

  test('header for alice and ?token= for bob: welcome alice', async () => {
    const bob = await server.token('bob');
    const socket = await server.ws(`/ws?token=${bob}`, { token: await server.token('alice') });
    assert.equal((await socket.welcome()).user, 'alice');
    socket.close();
  });

  test('an invalid header and a valid ?token=: 1008, the query does not rescue it', async () => {
    const socket = await server.ws(`/ws?token=${await server.token('bob')}`, { token: 'not-a-jwt' });
    assert.deepEqual(await socket.closed, { code: 1008, reason: 'unauthorized' });
    assert.equal(
      socket.frames.some((f) => f.type === 'welcome'),
      false,
    );
  });

  test('?token= for bob and an auth frame for carol: welcome bob, the frame is then an error', async () => {
    const socket = await server.ws(`/ws?token=${await server.token('bob')}`);
    const carol = await server.token('carol');
    const answer = await socket.request({ type: 'auth', token: carol });
    assert.equal((await socket.welcome()).user, 'bob');
    assert.equal(answer.type, 'error');
    assert.equal(answer.error.code, 'bad_request');
    socket.close();
  });

  test('an invalid ?token= and a valid auth frame: 1008, the frame does not rescue it', async () => {
    const socket = await server.ws('/ws?token=a.b.c');
    socket.send({ type: 'auth', token: await server.token('carol') });
    assert.equal((await socket.closed).code, 1008);
    assert.equal(
      socket.frames.some((f) => f.type === 'welcome'),
      false,
    );
  });

  test('the same order over HTTP: header beats ?token=, an invalid header is not rescued', async () => {
    const alice = await server.token('alice');
    const bob = await server.token('bob');
    const both = await server.http('GET', `/me?token=${bob}`, { token: alice });
    assert.equal(both.status, 200);
    assert.equal(both.body.username, 'alice');
    const invalid = await server.http('GET', `/me?token=${bob}`, { token: 'not-a-jwt' });
    assert.equal(invalid.status, 401);
  });
});
