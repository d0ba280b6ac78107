import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startServer, type TestServer } from './helpers.ts';

describe('HTTP rooms', () => {
  let server: TestServer;
  let alice: string;
  let bob: string;
  let carol: string;

  before(async () => {
    server = await startServer();
    alice = await server.token('alice');
    bob = await server.token('bob');
    carol = await server.token('carol');
  });
  after(() => server.close());

  test('every route refuses a caller without a valid token (401)', async () => {
    for (const [method, path, body] of [
      ['GET', '/rooms', undefined],
      ['POST', '/rooms', { name: 'x' }],
      ['POST', '/rooms/x/members', { username: 'bob' }],
      ['GET', '/rooms/x/messages', undefined],
      ['POST', '/rooms/x/messages', { data: 1 }],
    ] as const) {
      const anonymous = await server.http(method, path, { body });
      assert.equal(anonymous.status, 401, `${method} ${path}`);
      assert.equal(anonymous.body.error.code, 'unauthorized');
      const forged = await server.http(method, path, { body, token: `${alice}x` });
      assert.equal(forged.status, 401, `${method} ${path} with a bad token`);
    }
  });

  test('POST /rooms creates a public room (201) and a taken name is 409', async () => {
    const created = await server.http('POST', '/rooms', { token: alice, body: { name: 'lobby' } });
    assert.equal(created.status, 201);
    assert.equal(created.body.name, 'lobby');
    assert.equal(created.body.private, false);
    assert.equal(created.body.creator, 'alice');
    assert.equal(created.body.members, undefined);
    assert.ok(!Number.isNaN(Date.parse(created.body.createdAt)));

    const again = await server.http('POST', '/rooms', { token: bob, body: { name: 'lobby' } });
    assert.equal(again.status, 409);
    assert.equal(again.body.error.code, 'conflict');
  });

  test('POST /rooms refuses malformed input with 400', async () => {
    for (const body of [
      {},
      { name: 'bad name!' },
      { name: 'a'.repeat(65) },
      { name: 'pub-with-members', members: ['bob'] },
      { name: 'ok', private: 'yes' },
    ]) {
      const response = await server.http('POST', '/rooms', { token: alice, body });
      assert.equal(response.status, 400, JSON.stringify(body));
      assert.equal(response.body.error.code, 'bad_request');
    }
  });

  test('a private room is hidden from non-members until they are added', async () => {
    const created = await server.http('POST', '/rooms', {
      token: alice,
      body: { name: 'secret', private: true, members: ['bob'] },
    });
    assert.equal(created.status, 201);
    assert.deepEqual(created.body.members, ['alice', 'bob']);

    const seenBy = async (token: string) =>
      ((await server.http('GET', '/rooms', { token })).body.rooms as Array<{ name: string }>).map((r) => r.name);
    assert.ok((await seenBy(alice)).includes('secret'));
    assert.ok((await seenBy(bob)).includes('secret'));
    assert.ok(!(await seenBy(carol)).includes('secret'));

    const refused = await server.http('GET', '/rooms/secret/messages', { token: carol });
    assert.equal(refused.status, 403);
    assert.equal(refused.body.error.code, 'forbidden');
    const refusedPost = await server.http('POST', '/rooms/secret/messages', { token: carol, body: { data: 'hi' } });
    assert.equal(refusedPost.status, 403);

    const added = await server.http('POST', '/rooms/secret/members', { token: alice, body: { username: 'carol' } });
    assert.equal(added.status, 200);
    assert.deepEqual(added.body.members, ['alice', 'bob', 'carol']);
    assert.ok((await seenBy(carol)).includes('secret'));
    const allowed = await server.http('GET', '/rooms/secret/messages', { token: carol });
    assert.equal(allowed.status, 200);
    assert.deepEqual(allowed.body, { messages: [], hasMore: false });
  });

  test('members added to a private room are told on their user channel (room.added), once', async () => {
    const dave = await server.token('dave');
    const erin = await server.token('erin');
    const daveSocket = await server.ws('/ws', { token: dave });
    const erinSocket = await server.ws('/ws', { token: erin });
    await daveSocket.ok({ type: 'subscribe', channel: 'user:dave' });
    await erinSocket.ok({ type: 'subscribe', channel: 'user:erin' });
    const created = await server.http('POST', '/rooms', {
      token: alice,
      body: { name: 'war-room', private: true, members: ['dave'] },
    });
    assert.equal(created.status, 201);
    const toDave = await daveSocket.next((f) => f.type === 'message' && f.channel === 'user:dave', 5000, 'dave');
    assert.deepEqual(toDave.message.data, { event: 'room.added', room: 'war-room', by: 'alice' });
    assert.equal(toDave.message.from, 'alice');
    for (let i = 0; i < 2; i++) {
      const added = await server.http('POST', '/rooms/war-room/members', { token: alice, body: { username: 'erin' } });
      assert.equal(added.status, 200);
    }
    const toErin = await erinSocket.next((f) => f.type === 'message' && f.channel === 'user:erin', 5000, 'erin');
    assert.deepEqual(toErin.message.data, { event: 'room.added', room: 'war-room', by: 'alice' });
    // A marker after the second add: had it sent a notice too, that would come first.
    const ops = await server.token('ops', 'service');
    await server.http('POST', '/publish/user:erin', { token: ops, body: { data: 'marker' } });
    await erinSocket.next((f) => f.type === 'message' && f.message.data === 'marker', 5000, 'marker');
    assert.deepEqual(
      erinSocket.messages('user:erin').map((m) => m.data),
      [{ event: 'room.added', room: 'war-room', by: 'alice' }, 'marker'],
    );
    // The creator is not told about their own room.
    const own = await server.http('GET', '/rooms/war-room/messages', { token: alice });
    assert.equal(own.status, 200);
    const aliceSocket = await server.ws('/ws', { token: alice });
    const history = await aliceSocket.ok({ type: 'history', channel: 'user:alice' });
    assert.deepEqual(
      history.messages.filter((m: { data: { event?: string } }) => m.data?.event === 'room.added'),
      [],
    );
    for (const socket of [daveSocket, erinSocket, aliceSocket]) socket.close(1000);
  });

  test('GET /rooms lists public rooms to everyone, by name', async () => {
    await server.http('POST', '/rooms', { token: bob, body: { name: 'zz-last' } });
    const response = await server.http('GET', '/rooms', { token: carol });
    assert.equal(response.status, 200);
    const names = (response.body.rooms as Array<{ name: string }>).map((r) => r.name);
    assert.ok(names.includes('zz-last'));
    assert.deepEqual(names, [...names].sort());
  });

  test('POST /rooms/{room}/members: only the creator (403), a known room (404), valid input (400)', async () => {
    await server.http('POST', '/rooms', { token: alice, body: { name: 'club', private: true } });
    const notCreator = await server.http('POST', '/rooms/club/members', { token: bob, body: { username: 'bob' } });
    assert.equal(notCreator.status, 403);
    assert.equal(notCreator.body.error.code, 'forbidden');

    const unknown = await server.http('POST', '/rooms/nowhere/members', { token: alice, body: { username: 'bob' } });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.code, 'not_found');

    const badName = await server.http('POST', '/rooms/club/members', { token: alice, body: { username: 'b b' } });
    assert.equal(badName.status, 400);
    const missing = await server.http('POST', '/rooms/club/members', { token: alice, body: {} });
    assert.equal(missing.status, 400);

    await server.http('POST', '/rooms', { token: alice, body: { name: 'open-club' } });
    const publicRoom = await server.http('POST', '/rooms/open-club/members', {
      token: alice,
      body: { username: 'bob' },
    });
    assert.equal(publicRoom.status, 400, 'a public room has no member list');
  });

  test('GET /rooms/{room}/messages: 404 for an unknown room, 400 for a bad limit or name', async () => {
    const unknown = await server.http('GET', '/rooms/ghost/messages', { token: alice });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.code, 'not_found');

    await server.http('POST', '/rooms', { token: alice, body: { name: 'limits' } });
    for (const query of ['limit=0', 'limit=101', 'limit=ten', 'before=0', 'before=x']) {
      const response = await server.http('GET', `/rooms/limits/messages?${query}`, { token: alice });
      assert.equal(response.status, 400, query);
      assert.equal(response.body.error.code, 'bad_request');
    }
    const badName = await server.http('GET', `/rooms/${encodeURIComponent('no way')}/messages`, { token: alice });
    assert.equal(badName.status, 400);
  });

  test('POST /rooms/{room}/messages stores (201) and delivers live to a WebSocket subscriber', async () => {
    await server.http('POST', '/rooms', { token: alice, body: { name: 'live' } });
    const socket = await server.ws('/ws', { token: bob });
    const subscribed = await socket.ok({ type: 'subscribe', channel: 'room:live' });
    assert.equal(subscribed.offset, 0);

    const posted = await server.http('POST', '/rooms/live/messages', { token: alice, body: { data: { text: 'hi' } } });
    assert.equal(posted.status, 201);
    assert.match(posted.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(posted.body.channel, 'room:live');
    assert.equal(posted.body.offset, 1);
    assert.equal(posted.body.from, 'alice');
    assert.deepEqual(posted.body.data, { text: 'hi' });
    assert.equal(typeof posted.body.id, 'string');
    assert.equal(typeof posted.body.epoch, 'string');

    const push = await socket.next((f) => f.type === 'message', 5000, 'message push');
    assert.equal(push.channel, 'room:live');
    assert.deepEqual(push.message, posted.body);
  });

  test('POST /rooms/{room}/messages creates a public room on first use and takes any JSON data', async () => {
    const first = await server.http('POST', '/rooms/fresh/messages', { token: carol, body: { data: 'plain string' } });
    assert.equal(first.status, 201);
    assert.equal(first.body.data, 'plain string');
    const second = await server.http('POST', '/rooms/fresh/messages', { token: carol, body: { data: 42 } });
    assert.equal(second.body.offset, 2);
    assert.equal(second.body.data, 42);
    const rooms = (await server.http('GET', '/rooms', { token: alice })).body.rooms as Array<{ name: string }>;
    assert.ok(rooms.some((r) => r.name === 'fresh'));
  });

  test('POST /rooms/{room}/messages refuses a body without data, and a bad idempotencyKey (400)', async () => {
    const missing = await server.http('POST', '/rooms/lobby/messages', { token: alice, body: { text: 'hi' } });
    assert.equal(missing.status, 400);
    assert.equal(missing.body.error.code, 'bad_request');
    const longKey = await server.http('POST', '/rooms/lobby/messages', {
      token: alice,
      body: { data: 1, idempotencyKey: 'k'.repeat(65) },
    });
    assert.equal(longKey.status, 400);
  });

  test('an idempotencyKey retried over HTTP returns the first message and stores nothing new', async () => {
    const body = { data: { text: 'once' }, idempotencyKey: 'retry-1' };
    const first = await server.http('POST', '/rooms/idem/messages', { token: alice, body });
    const second = await server.http('POST', '/rooms/idem/messages', { token: alice, body });
    assert.equal(first.status, 201);
    assert.equal(second.status, 201);
    assert.deepEqual(second.body, first.body);

    // The key is scoped to its sender: bob's same key is a new message.
    const other = await server.http('POST', '/rooms/idem/messages', { token: bob, body });
    assert.equal(other.body.offset, 2);

    const history = await server.http('GET', '/rooms/idem/messages', { token: alice });
    assert.deepEqual(
      history.body.messages.map((m: { offset: number }) => m.offset),
      [1, 2],
    );
  });

  test('history pages backwards with before and hasMore, oldest first', async () => {
    for (let i = 1; i <= 5; i++) {
      const posted = await server.http('POST', '/rooms/paged/messages', { token: alice, body: { data: i } });
      assert.equal(posted.body.offset, i);
    }
    const offsets = (page: { messages: Array<{ offset: number }> }) => page.messages.map((m) => m.offset);

    const all = await server.http('GET', '/rooms/paged/messages', { token: bob });
    assert.equal(all.status, 200);
    assert.deepEqual(offsets(all.body), [1, 2, 3, 4, 5]);
    assert.equal(all.body.hasMore, false);
    assert.deepEqual(
      all.body.messages.map((m: { data: number }) => m.data),
      [1, 2, 3, 4, 5],
    );

    const latest = await server.http('GET', '/rooms/paged/messages?limit=2', { token: bob });
    assert.deepEqual(offsets(latest.body), [4, 5]);
    assert.equal(latest.body.hasMore, true);

    const older = await server.http('GET', '/rooms/paged/messages?limit=2&before=4', { token: bob });
    assert.deepEqual(offsets(older.body), [2, 3]);
    assert.equal(older.body.hasMore, true);

    const oldest = await server.http('GET', '/rooms/paged/messages?limit=2&before=2', { token: bob });
    assert.deepEqual(offsets(oldest.body), [1]);
    assert.equal(oldest.body.hasMore, false);
  });
});
