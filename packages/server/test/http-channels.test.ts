import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { apiKeyMatches } from '../src/channels/routes.ts';
import { startServer, type TestServer } from './helpers.ts';

const API_KEY = 'k3y-for-tests-0123456789abcdef';

describe('POST /publish/{channel} with SERVER_API_KEY set', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ SERVER_API_KEY: API_KEY });
  });
  after(() => server.close());

  test('the API key publishes as "server" (202) and the message is delivered live', async () => {
    const socket = await server.ws('/ws', { token: await server.token('alice') });
    await socket.ok({ type: 'subscribe', channel: 'topic:deploys' });

    const published = await server.http('POST', '/publish/topic:deploys', {
      headers: { 'x-api-key': API_KEY },
      body: { data: { version: '1.2.3' } },
    });
    assert.equal(published.status, 202);
    assert.match(published.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(published.body.channel, 'topic:deploys');
    assert.equal(published.body.from, 'server');
    assert.equal(published.body.offset, 1);
    assert.deepEqual(published.body.data, { version: '1.2.3' });

    const push = await socket.next((f) => f.type === 'message', 5000, 'message push');
    assert.deepEqual(push.message, published.body);
  });

  test('a service or admin token publishes as its subject (202)', async () => {
    for (const [user, role] of [
      ['billing', 'service'],
      ['root', 'admin'],
    ] as const) {
      const published = await server.http('POST', '/publish/user:alice', {
        token: await server.token(user, role),
        body: { data: `from ${user}` },
      });
      assert.equal(published.status, 202, role);
      assert.equal(published.body.from, user);
      assert.equal(published.body.channel, 'user:alice');
    }
  });

  test('a user token is forbidden (403); a wrong key, a bad token or nothing is 401', async () => {
    const user = await server.http('POST', '/publish/topic:deploys', {
      token: await server.token('alice'),
      body: { data: 1 },
    });
    assert.equal(user.status, 403);
    assert.equal(user.body.error.code, 'forbidden');

    const wrongKey = await server.http('POST', '/publish/topic:deploys', {
      headers: { 'x-api-key': `${API_KEY}x` },
      body: { data: 1 },
    });
    assert.equal(wrongKey.status, 401);
    assert.equal(wrongKey.body.error.code, 'unauthorized');

    // A key that is presented must be right, even alongside a good token.
    const wrongKeyGoodToken = await server.http('POST', '/publish/topic:deploys', {
      headers: { 'x-api-key': 'nope' },
      token: await server.token('billing', 'service'),
      body: { data: 1 },
    });
    assert.equal(wrongKeyGoodToken.status, 401);

    const badToken = await server.http('POST', '/publish/topic:deploys', { token: 'not-a-jwt', body: { data: 1 } });
    assert.equal(badToken.status, 401);

    const nothing = await server.http('POST', '/publish/topic:deploys', { body: { data: 1 } });
    assert.equal(nothing.status, 401);
    assert.equal(nothing.body.error.code, 'unauthorized');

    const history = await server.ws('/ws', { token: await server.token('alice') });
    const page = await history.ok({ type: 'history', channel: 'topic:deploys' });
    assert.ok(
      page.messages.every((m: { from: string }) => m.from === 'server'),
      'no refused publish was stored',
    );
  });

  test('the channel name is validated: 400 when malformed, 403 for an unknown namespace', async () => {
    const headers = { 'x-api-key': API_KEY };
    for (const channel of ['nocolon', 'topic:', 'topic:bad name', 'dm:bob:alice', `topic:${'x'.repeat(65)}`]) {
      const response = await server.http('POST', `/publish/${encodeURIComponent(channel)}`, {
        headers,
        body: { data: 1 },
      });
      assert.equal(response.status, 400, channel);
      assert.equal(response.body.error.code, 'bad_request');
    }
    const unknown = await server.http('POST', '/publish/secret:x', { headers, body: { data: 1 } });
    assert.equal(unknown.status, 403);
    assert.equal(unknown.body.error.code, 'forbidden');

    const noData = await server.http('POST', '/publish/topic:deploys', { headers, body: {} });
    assert.equal(noData.status, 400);
  });

  test('the server API reaches rooms and DMs too, creating a missing room as public', async () => {
    const headers = { 'x-api-key': API_KEY };
    const dm = await server.http('POST', '/publish/dm:alice:bob', { headers, body: { data: 'psst' } });
    assert.equal(dm.status, 202);
    assert.equal(dm.body.channel, 'dm:alice:bob');

    const room = await server.http('POST', '/publish/room:announcements', { headers, body: { data: 'hello' } });
    assert.equal(room.status, 202);
    const history = await server.http('GET', '/rooms/announcements/messages', { token: await server.token('carol') });
    assert.equal(history.status, 200);
    assert.deepEqual(history.body.messages, [room.body]);
  });

  test('an idempotencyKey makes a retried server publish return the first message', async () => {
    const request = { headers: { 'x-api-key': API_KEY }, body: { data: 'once', idempotencyKey: 'job-7' } };
    const first = await server.http('POST', '/publish/topic:jobs', request);
    const second = await server.http('POST', '/publish/topic:jobs', request);
    assert.equal(first.status, 202);
    assert.equal(second.status, 202);
    assert.deepEqual(second.body, first.body);
    const next = await server.http('POST', '/publish/topic:jobs', { ...request, body: { data: 'twice' } });
    assert.equal(next.body.offset, 2);
  });
});

describe('POST /publish/{channel} without SERVER_API_KEY', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server.close());

  test('any API key is refused (401) and admin/service tokens still work', async () => {
    for (const key of [API_KEY, '']) {
      const refused = await server.http('POST', '/publish/topic:deploys', {
        headers: { 'x-api-key': key },
        body: { data: 1 },
      });
      assert.equal(refused.status, 401, `key "${key}"`);
      assert.equal(refused.body.error.code, 'unauthorized');
    }
    const service = await server.http('POST', '/publish/topic:deploys', {
      token: await server.token('ci', 'service'),
      body: { data: 1 },
    });
    assert.equal(service.status, 202);
    assert.equal(service.body.from, 'ci');
  });
});

describe('GET /channels/{channel}/presence', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server.close());

  test('shows a connected subscriber, counted per connection', async () => {
    const alice = await server.token('alice');
    const empty = await server.http('GET', '/channels/room:hall/presence', { token: alice });
    assert.equal(empty.status, 404, 'a room nobody has joined does not exist yet');

    const first = await server.ws('/ws', { token: alice });
    await first.ok({ type: 'subscribe', channel: 'room:hall' });
    // Our own join is announced after presence records the connection.
    await first.next((f) => f.type === 'join' && f.user === 'alice', 5000, 'join');

    const one = await server.http('GET', '/channels/room:hall/presence', { token: await server.token('bob') });
    assert.equal(one.status, 200);
    assert.deepEqual(one.body, { users: [{ user: 'alice', connections: 1 }] });

    const second = await server.ws('/ws', { token: alice });
    await second.ok({ type: 'subscribe', channel: 'room:hall' });
    const bob = await server.ws('/ws', { token: await server.token('bob') });
    await bob.ok({ type: 'subscribe', channel: 'room:hall' });
    await first.next((f) => f.type === 'join' && f.user === 'bob', 5000, 'bob joins');
    // A second connection is no join. A socket runs its commands in order, so its presence
    // command answers only once its own subscribe has been recorded.
    await second.ok({ type: 'presence', channel: 'room:hall' });
    const two = await server.http('GET', `/channels/${encodeURIComponent('room:hall')}/presence`, { token: alice });
    assert.equal(two.status, 200);
    assert.deepEqual(two.body, {
      users: [
        { user: 'alice', connections: 2 },
        { user: 'bob', connections: 1 },
      ],
    });
  });

  test('follows the read rules: 401, 403 for a private room or another user, 400 malformed', async () => {
    const alice = await server.token('alice');
    const carol = await server.token('carol');
    await server.http('POST', '/rooms', { token: alice, body: { name: 'vault', private: true } });

    const anonymous = await server.http('GET', '/channels/room:vault/presence');
    assert.equal(anonymous.status, 401);
    const member = await server.http('GET', '/channels/room:vault/presence', { token: alice });
    assert.equal(member.status, 200);
    assert.deepEqual(member.body, { users: [] });
    const outsider = await server.http('GET', '/channels/room:vault/presence', { token: carol });
    assert.equal(outsider.status, 403);
    const otherUser = await server.http('GET', '/channels/user:alice/presence', { token: carol });
    assert.equal(otherUser.status, 403);
    const dmOutsider = await server.http('GET', '/channels/dm:alice:bob/presence', { token: carol });
    assert.equal(dmOutsider.status, 403);
    const malformed = await server.http('GET', '/channels/room:bad%20name/presence', { token: alice });
    assert.equal(malformed.status, 400);
    const unknown = await server.http('GET', '/channels/secret:x/presence', { token: alice });
    assert.equal(unknown.status, 403);

    const topic = await server.http('GET', '/channels/topic:news/presence', { token: carol });
    assert.deepEqual(topic.body, { users: [] }, 'topics keep no presence');
  });
});

describe('HTTP plumbing', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ MAX_MESSAGE_BYTES: '1024' });
  });
  after(() => server.close());

  test('a malformed JSON body is 400 bad_request as JSON', async () => {
    const response = await server.http('POST', '/rooms', { token: await server.token('alice'), body: '{"name": ' });
    assert.equal(response.status, 400);
    assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(response.body.error.code, 'bad_request');
    assert.equal(typeof response.body.error.message, 'string');
  });

  test('an unknown route is 404 not_found as JSON', async () => {
    const response = await server.http('GET', '/no/such/route');
    assert.equal(response.status, 404);
    assert.equal(response.body.error.code, 'not_found');
  });

  test('a body over the limit is 413 too_large', async () => {
    const response = await server.http('POST', '/rooms/big/messages', {
      token: await server.token('alice'),
      body: { data: 'x'.repeat(64 * 1024) },
    });
    assert.equal(response.status, 413);
    assert.equal(response.body.error.code, 'too_large');
  });

  test('/openapi.json lists the rooms, channels and tasks paths with their security', async () => {
    const response = await server.http('GET', '/openapi.json');
    assert.equal(response.status, 200);
    const spec = response.body;
    assert.match(spec.openapi, /^3\./);
    for (const [path, methods] of Object.entries({
      '/rooms': ['get', 'post'],
      '/rooms/{room}/members': ['post'],
      '/rooms/{room}/messages': ['get', 'post'],
      '/channels/{channel}/presence': ['get'],
      '/publish/{channel}': ['post'],
      '/tasks': ['get', 'post'],
      '/tasks/{id}': ['get', 'patch', 'delete'],
    })) {
      assert.ok(spec.paths[path], `${path} is documented`);
      for (const method of methods) assert.ok(spec.paths[path][method], `${method} ${path}`);
    }
    assert.deepEqual(spec.paths['/rooms'].get.security, [{ bearer: [] }]);
    assert.deepEqual(spec.paths['/publish/{channel}'].post.security, [{ apiKey: [] }, { bearer: [] }]);
    assert.deepEqual(spec.paths['/tasks'].get.tags, ['tasks']);
    assert.ok(spec.paths['/publish/{channel}'].post.responses['202']);
    assert.ok(spec.paths['/tasks/{id}'].delete.responses['204']);
  });

  test('/docs serves the interactive docs as HTML', async () => {
    const response = await fetch(`${server.url}/docs`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /text\/html/);
    assert.match(await response.text(), /<html/i);
  });
});

test('apiKeyMatches needs the exact key', () => {
  assert.equal(apiKeyMatches('secret', 'secret'), true);
  assert.equal(apiKeyMatches('secret', 'secret '), false);
  assert.equal(apiKeyMatches('secret', ''), false);
  assert.equal(apiKeyMatches(undefined, ''), false);
});
