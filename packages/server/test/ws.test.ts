import assert from 'node:assert/strict';
import { once } from 'node:events';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import { startServer, TEST_SECRET, type TestServer, TestSocket } from './helpers.ts';

/** Signs a token with the test secret and arbitrary claims (times in seconds from now). */
async function rawToken(claims: { sub?: string; exp?: number; nbf?: number; role?: string }): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({ ...(claims.role ? { role: claims.role } : {}) }).setProtectedHeader({ alg: 'HS256' });
  if (claims.sub !== undefined) jwt.setSubject(claims.sub);
  if (claims.exp !== undefined) jwt.setExpirationTime(now + claims.exp);
  if (claims.nbf !== undefined) jwt.setNotBefore(now + claims.nbf);
  return jwt.sign(new TextEncoder().encode(TEST_SECRET));
}

async function signedIn(server: TestServer, user: string, path = '/ws'): Promise<TestSocket> {
  const socket = await server.ws(path, { token: await server.token(user) });
  await socket.welcome();
  return socket;
}

describe('authentication on /ws', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ AUTH_TIMEOUT_MS: '300' });
  });
  after(() => server.close());

  test('Authorization header: welcome names user, connection, instance, heartbeat, protocol', async () => {
    const socket = await server.ws('/ws', { token: await server.token('alice') });
    const welcome = await socket.welcome();
    assert.equal(welcome.user, 'alice');
    assert.equal(typeof welcome.connectionId, 'string');
    assert.equal(welcome.instance, server.parley.ctx.config.instanceId);
    assert.equal(welcome.heartbeatMs, 25000);
    assert.equal(welcome.protocol, 1);
    socket.close();
  });

  test('?token= query parameter', async () => {
    const socket = await server.ws(`/ws?token=${await server.token('bob')}`);
    assert.equal((await socket.welcome()).user, 'bob');
    socket.close();
  });

  test('auth frame; its reply is the welcome frame without id', async () => {
    const socket = await server.ws('/ws');
    socket.send({ type: 'auth', token: await server.token('carol'), id: 7 });
    const welcome = await socket.welcome();
    assert.equal(welcome.user, 'carol');
    assert.equal(welcome.id, undefined);
    assert.equal(await socket.ok({ type: 'ping' }).then(() => 'alive'), 'alive');
    socket.close();
  });

  test('bad credentials: the upgrade completes, then close 1008 unauthorized', async () => {
    const socket = await server.ws('/ws', { token: 'not-a-jwt' });
    assert.deepEqual(await socket.closed, { code: 1008, reason: 'unauthorized' });
    const byFrame = await server.ws('/ws');
    byFrame.send({ type: 'auth', token: await rawToken({ sub: 'x', exp: 60, role: 'root' }) });
    assert.deepEqual(await byFrame.closed, { code: 1008, reason: 'unauthorized' });
  });

  test('no credentials and no frame within AUTH_TIMEOUT_MS: close 4002', async () => {
    const socket = await server.ws('/ws');
    const started = Date.now();
    assert.equal((await socket.closed).code, 4002);
    assert.ok(Date.now() - started >= 250, 'not before the timeout');
  });

  test('a first frame other than auth: close 1008', async () => {
    const socket = await server.ws('/ws');
    socket.send({ type: 'ping', id: 1 });
    assert.equal((await socket.closed).code, 1008);
    const binary = await server.ws('/ws');
    binary.ws.send(Buffer.from([1, 2, 3]));
    assert.equal((await binary.closed).code, 1008);
  });

  test('a token already expired at connect: close 4001 (header and auth frame)', async () => {
    const expired = await rawToken({ sub: 'dave', exp: -60 });
    const socket = await server.ws('/ws', { token: expired });
    assert.equal((await socket.closed).code, 4001);
    const byFrame = await server.ws('/ws');
    byFrame.send({ type: 'auth', token: expired });
    assert.equal((await byFrame.closed).code, 4001);
  });

  test('token without exp or with a future nbf is refused', async () => {
    const noExp = await server.ws('/ws', { token: await rawToken({ sub: 'erin' }) });
    assert.equal((await noExp.closed).code, 1008);
    const notYet = await server.ws('/ws', { token: await rawToken({ sub: 'erin', exp: 600, nbf: 60 }) });
    assert.equal((await notYet.closed).code, 1008);
  });

  test('an auth frame on an authenticated socket is bad_request', async () => {
    const socket = await signedIn(server, 'frank');
    const answer = await socket.request({ type: 'auth', token: await server.token('frank') });
    assert.equal(answer.type, 'error');
    assert.equal(answer.error.code, 'bad_request');
    socket.close();
  });

  test('a live connection whose token expires is closed 4001', async () => {
    // Expired 4 s ago: accepted thanks to the 5 s skew, so it lapses about 1 s from now.
    const socket = await server.ws('/ws', { token: await rawToken({ sub: 'gina', exp: -4 }) });
    await socket.welcome();
    assert.equal((await socket.closed).code, 4001);
  });

  test('refresh in time keeps the connection; another user token changes nothing', async () => {
    const socket = await server.ws('/ws', { token: await rawToken({ sub: 'hank', exp: -4 }) });
    await socket.welcome();
    const wrong = await socket.request({ type: 'refresh', token: await server.token('ivan') });
    assert.equal(wrong.error.code, 'forbidden');
    const bad = await socket.request({ type: 'refresh', token: 'garbage' });
    assert.equal(bad.error.code, 'unauthorized');
    const result = await socket.ok({ type: 'refresh', token: await server.token('hank') });
    assert.ok(Date.parse(result.expiresAt) > Date.now() + 60_000);
    // Past the old token's lapse (about 1 s, checked every second) the socket still answers.
    const sweepDeadline = Date.now() + 2500;
    while (Date.now() < sweepDeadline) {
      await socket.ok({ type: 'ping' });
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    assert.equal(socket.closeCode, undefined);
    socket.close();
  });

  test('refresh with another user token is forbidden and changes nothing: the old expiry still closes 4001', async () => {
    // Lapsed 3 s ago: accepted thanks to the 5 s skew, so the connection has 1-2 s left.
    const token = await server.token('judy', 'user', { ttl: -3 });
    const lapse = (await server.parley.ctx.tokens.verify(token)).exp * 1000 + 5000;
    const socket = await server.ws('/ws', { token });
    await socket.welcome();
    const other = await socket.request({ type: 'refresh', token: await server.token('mallory', 'admin') });
    assert.equal(other.type, 'error');
    assert.equal(other.error.code, 'forbidden');
    // Still judy, still a plain user: neither mallory's name nor her role came along.
    assert.equal((await socket.request({ type: 'subscribe', channel: 'user:judy' })).type, 'reply');
    assert.equal((await socket.request({ type: 'subscribe', channel: 'user:mallory' })).error?.code, 'forbidden');
    assert.equal((await socket.request({ type: 'publish', channel: 'topic:x', data: 1 })).error?.code, 'forbidden');
    // Nor her expiry: the socket is closed at judy's, within a sweep or two.
    const closed = await Promise.race([
      socket.closed,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('not closed at the old expiry')), 6000)),
    ]);
    const closedAt = Date.now();
    assert.equal(closed.code, 4001);
    assert.ok(closedAt >= lapse, `closed ${lapse - closedAt} ms before exp + skew`);
    assert.ok(closedAt <= lapse + 3000, `closed ${closedAt - lapse} ms after exp + skew`);
  });
});

describe('commands, replies and errors', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ RECOVERY_MAX: '5' });
  });
  after(() => server.close());

  test('malformed frames get error frames, not a crash', async () => {
    const socket = await signedIn(server, 'alice');
    socket.send('{not json');
    const notJson = await socket.next((f) => f.type === 'error');
    assert.equal(notJson.error.code, 'bad_request');
    assert.equal(notJson.id, undefined);
    socket.ws.send(Buffer.from('{"type":"ping","id":3}'));
    await socket.next((f) => f.type === 'error' && /binary/.test(f.error.message));
    const unknown = await socket.request({ type: 'shout' });
    assert.equal(unknown.type, 'error');
    assert.equal(unknown.error.code, 'bad_request');
    const missing = await socket.request({ type: 'subscribe' });
    assert.equal(missing.error.code, 'bad_request');
    assert.deepEqual(await socket.ok({ type: 'ping' }), {});
    socket.close();
  });

  test('without an id: success is silent, failure is an error frame without id', async () => {
    const socket = await signedIn(server, 'bob');
    socket.send({ type: 'subscribe', channel: 'room:quiet' });
    socket.send({ type: 'publish', channel: 'room:quiet', data: 'hello', id: null });
    const push = await socket.next((f) => f.type === 'message');
    assert.equal(push.message.data, 'hello');
    socket.send({ type: 'subscribe', channel: 'user:someone-else' });
    const error = await socket.next((f) => f.type === 'error');
    assert.equal(error.id, undefined);
    assert.equal(error.error.code, 'forbidden');
    assert.equal(socket.frames.filter((f) => f.type === 'reply').length, 0);
    socket.close();
  });

  test('subscribe, publish, own push, history, unsubscribe', async () => {
    const alice = await signedIn(server, 'alice');
    const sub = await alice.ok({ type: 'subscribe', channel: 'room:general' });
    assert.equal(sub.channel, 'room:general');
    assert.equal(sub.offset, 0);
    assert.equal(typeof sub.epoch, 'string');
    assert.equal(sub.recovered, false);
    assert.deepEqual(sub.messages, []);

    const stored = await alice.ok({ type: 'publish', channel: 'room:general', data: { text: 'hi' } });
    assert.equal(stored.offset, 1);
    assert.equal(stored.from, 'alice');
    assert.equal(stored.channel, 'room:general');
    assert.equal(stored.epoch, sub.epoch);
    assert.deepEqual(stored.data, { text: 'hi' });
    assert.ok(!Number.isNaN(Date.parse(stored.ts)));
    const push = await alice.next((f) => f.type === 'message' && f.message.offset === 1);
    assert.deepEqual(push.message, stored);

    for (let i = 2; i <= 6; i++) await alice.ok({ type: 'publish', channel: 'room:general', data: i });
    const latest = await alice.ok({ type: 'history', channel: 'room:general', limit: 3 });
    assert.deepEqual(
      latest.messages.map((m: any) => m.offset),
      [4, 5, 6],
    );
    assert.equal(latest.hasMore, true);
    const older = await alice.ok({ type: 'history', channel: 'room:general', before: 4, limit: 100 });
    assert.deepEqual(
      older.messages.map((m: any) => m.offset),
      [1, 2, 3],
    );
    assert.equal(older.hasMore, false);
    const all = await alice.ok({ type: 'history', channel: 'room:general' });
    assert.equal(all.messages.length, 6);
    for (const limit of [0, 101]) {
      const bad = await alice.request({ type: 'history', channel: 'room:general', limit });
      assert.equal(bad.error.code, 'bad_request');
    }

    assert.deepEqual(await alice.ok({ type: 'unsubscribe', channel: 'room:general' }), {});
    const bob = await signedIn(server, 'bob');
    await bob.ok({ type: 'publish', channel: 'room:general', data: 'after' });
    await alice.ok({ type: 'ping' });
    assert.equal(alice.messages('room:general').length, 6, 'no pushes after unsubscribe');
    const again = await alice.request({ type: 'subscribe', channel: 'room:general' });
    assert.equal(again.type, 'reply');
    const twice = await alice.request({ type: 'subscribe', channel: 'room:general' });
    assert.equal(twice.error.code, 'conflict');
    alice.close();
    bob.close();
  });

  test('idempotencyKey: the same user and channel get the first message back, stored once', async () => {
    const socket = await signedIn(server, 'carol');
    await socket.ok({ type: 'subscribe', channel: 'room:idem' });
    const first = await socket.ok({ type: 'publish', channel: 'room:idem', data: 1, idempotencyKey: 'k-1' });
    const second = await socket.ok({ type: 'publish', channel: 'room:idem', data: 2, idempotencyKey: 'k-1' });
    assert.deepEqual(second, first);
    const other = await socket.ok({ type: 'publish', channel: 'room:idem', data: 3, idempotencyKey: 'k-2' });
    assert.equal(other.offset, first.offset + 1);
    await socket.next((f) => f.type === 'message' && f.message.offset === other.offset);
    assert.deepEqual(
      socket.messages('room:idem').map((m) => m.offset),
      [1, 2],
    );
    socket.close();
  });

  test('presence, join and leave, typing', async () => {
    const alice = await signedIn(server, 'alice');
    const bob = await signedIn(server, 'bob');
    await alice.ok({ type: 'subscribe', channel: 'room:lobby' });
    await alice.next((f) => f.type === 'join' && f.user === 'alice');
    await bob.ok({ type: 'subscribe', channel: 'room:lobby' });
    const join = await alice.next((f) => f.type === 'join' && f.user === 'bob');
    assert.equal(join.channel, 'room:lobby');

    const bob2 = await signedIn(server, 'bob');
    await bob2.ok({ type: 'subscribe', channel: 'room:lobby' });
    const presence = await alice.ok({ type: 'presence', channel: 'room:lobby' });
    assert.deepEqual(presence.users, [
      { user: 'alice', connections: 1 },
      { user: 'bob', connections: 2 },
    ]);
    assert.equal(alice.frames.filter((f) => f.type === 'join' && f.user === 'bob').length, 1, 'second tab is no join');

    const typingWithId = bob.request({ type: 'typing', channel: 'room:lobby' }, 500);
    const typing = await alice.next((f) => f.type === 'typing');
    assert.deepEqual(typing, { type: 'typing', channel: 'room:lobby', user: 'bob' });
    await assert.rejects(typingWithId, /timed out/, 'typing never gets a reply');
    await bob2.ok({ type: 'ping' });
    assert.equal(bob2.frames.filter((f) => f.type === 'typing').length, 0, 'typing skips the sender');

    bob.close();
    await bob.closed;
    await alice.ok({ type: 'ping' });
    assert.equal(alice.frames.filter((f) => f.type === 'leave').length, 0, 'bob still has a connection');
    bob2.close();
    const leave = await alice.next((f) => f.type === 'leave');
    assert.deepEqual(leave, { type: 'leave', channel: 'room:lobby', user: 'bob' });
    const after = await alice.ok({ type: 'presence', channel: 'room:lobby' });
    assert.deepEqual(after.users, [{ user: 'alice', connections: 1 }]);
    alice.close();
  });

  test('subscribe with since recovers missed messages, or says it cannot', async () => {
    const writer = await signedIn(server, 'writer');
    const reader = await signedIn(server, 'reader');
    const first = await reader.ok({ type: 'subscribe', channel: 'room:recover' });
    for (let i = 0; i < 3; i++) await writer.ok({ type: 'publish', channel: 'room:recover', data: i });
    await reader.next((f) => f.type === 'message' && f.message.offset === 3);
    reader.close();
    for (let i = 3; i < 6; i++) await writer.ok({ type: 'publish', channel: 'room:recover', data: i });

    const back = await signedIn(server, 'reader');
    const recovered = await back.ok({
      type: 'subscribe',
      channel: 'room:recover',
      since: { offset: 3, epoch: first.epoch },
    });
    assert.equal(recovered.recovered, true);
    assert.equal(recovered.offset, 6);
    assert.deepEqual(
      recovered.messages.map((m: any) => m.offset),
      [4, 5, 6],
    );
    await back.ok({ type: 'unsubscribe', channel: 'room:recover' });

    const wrongEpoch = await back.ok({ type: 'subscribe', channel: 'room:recover', since: { offset: 3, epoch: 'x' } });
    assert.equal(wrongEpoch.recovered, false);
    assert.deepEqual(wrongEpoch.messages, []);
    await back.ok({ type: 'unsubscribe', channel: 'room:recover' });

    // RECOVERY_MAX is 5 here: six missed is too many.
    const tooMany = await back.ok({
      type: 'subscribe',
      channel: 'room:recover',
      since: { offset: 0, epoch: first.epoch },
    });
    assert.equal(tooMany.recovered, false);
    assert.deepEqual(tooMany.messages, []);
    await back.ok({ type: 'unsubscribe', channel: 'room:recover' });
    const exactlyMax = await back.ok({
      type: 'subscribe',
      channel: 'room:recover',
      since: { offset: 1, epoch: first.epoch },
    });
    assert.equal(exactlyMax.recovered, true);
    assert.equal(exactlyMax.messages.length, 5);
    writer.close();
    back.close();
  });
});

describe('channel rules', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server.close());

  async function code(socket: TestSocket, command: Record<string, unknown>): Promise<string> {
    const answer = await socket.request(command);
    return answer.type === 'reply' ? 'ok' : answer.error.code;
  }

  test('rooms: public created on first join; private for members only', async () => {
    const owner = await signedIn(server, 'owner');
    const stranger = await signedIn(server, 'stranger');
    assert.equal(await code(stranger, { type: 'subscribe', channel: 'room:open-house' }), 'ok');
    assert.ok(await server.parley.ctx.rooms.get('open-house'), 'created on first join');
    await server.parley.ctx.rooms.create({ name: 'secret', private: true, members: ['friend'] }, 'owner');
    assert.equal(await code(stranger, { type: 'subscribe', channel: 'room:secret' }), 'forbidden');
    assert.equal(await code(stranger, { type: 'publish', channel: 'room:secret', data: 1 }), 'forbidden');
    assert.equal(await code(stranger, { type: 'history', channel: 'room:secret' }), 'forbidden');
    assert.equal(await code(stranger, { type: 'presence', channel: 'room:secret' }), 'forbidden');
    assert.equal(await code(owner, { type: 'subscribe', channel: 'room:secret' }), 'ok');
    const friend = await signedIn(server, 'friend');
    assert.equal(await code(friend, { type: 'publish', channel: 'room:secret', data: 'psst' }), 'ok');
    assert.equal(await code(stranger, { type: 'history', channel: 'room:never-made' }), 'not_found');
    owner.close();
    stranger.close();
    friend.close();
  });

  test('direct messages: sorted names, only the two users', async () => {
    const amy = await signedIn(server, 'amy');
    const ben = await signedIn(server, 'ben');
    const cat = await signedIn(server, 'cat');
    assert.equal(await code(amy, { type: 'subscribe', channel: 'dm:amy:ben' }), 'ok');
    assert.equal(await code(ben, { type: 'publish', channel: 'dm:amy:ben', data: 'hey amy' }), 'ok');
    const push = await amy.next((f) => f.type === 'message' && f.channel === 'dm:amy:ben');
    assert.equal(push.message.from, 'ben');
    assert.equal(await code(cat, { type: 'subscribe', channel: 'dm:amy:ben' }), 'forbidden');
    assert.equal(await code(cat, { type: 'publish', channel: 'dm:amy:ben', data: 1 }), 'forbidden');
    const unsorted = await ben.request({ type: 'subscribe', channel: 'dm:ben:amy' });
    assert.equal(unsorted.error.code, 'bad_request');
    assert.match(unsorted.error.message, /dm:amy:ben/);
    assert.equal(await code(amy, { type: 'subscribe', channel: 'dm:amy:amy' }), 'bad_request');
    amy.close();
    ben.close();
    cat.close();
  });

  test('topics: anyone subscribes unless the channels claim restricts; only admin/service publish', async () => {
    const user = await signedIn(server, 'user1');
    assert.equal(await code(user, { type: 'subscribe', channel: 'topic:deploys' }), 'ok');
    assert.equal(await code(user, { type: 'publish', channel: 'topic:deploys', data: 1 }), 'forbidden');
    const limited = await server.ws('/ws', {
      token: await server.token('user2', 'user', { channels: ['topic:deploys'] }),
    });
    await limited.welcome();
    assert.equal(await code(limited, { type: 'subscribe', channel: 'topic:deploys' }), 'ok');
    assert.equal(await code(limited, { type: 'subscribe', channel: 'topic:billing' }), 'forbidden');
    const service = await server.ws('/ws', { token: await server.token('ci', 'service') });
    await service.welcome();
    assert.equal(await code(service, { type: 'publish', channel: 'topic:deploys', data: { v: 2 } }), 'ok');
    const push = await user.next((f) => f.type === 'message' && f.channel === 'topic:deploys');
    assert.deepEqual(push.message.data, { v: 2 });
    await limited.next((f) => f.type === 'message' && f.channel === 'topic:deploys');
    assert.equal(await code(user, { type: 'presence', channel: 'topic:deploys' }), 'ok');
    user.close();
    limited.close();
    service.close();
  });

  test('user channels: that user subscribes; admin/service publish', async () => {
    const zoe = await signedIn(server, 'zoe');
    assert.equal(await code(zoe, { type: 'subscribe', channel: 'user:zoe' }), 'ok');
    assert.equal(await code(zoe, { type: 'subscribe', channel: 'user:yan' }), 'forbidden');
    assert.equal(await code(zoe, { type: 'publish', channel: 'user:zoe', data: 1 }), 'forbidden');
    const admin = await server.ws('/ws', { token: await server.token('root', 'admin') });
    await admin.welcome();
    assert.equal(await code(admin, { type: 'publish', channel: 'user:zoe', data: 'ping' }), 'ok');
    await zoe.next((f) => f.type === 'message' && f.channel === 'user:zoe');
    zoe.close();
    admin.close();
  });

  test('deny by default: unknown namespace is forbidden, malformed names are bad_request', async () => {
    const socket = await signedIn(server, 'kim');
    assert.equal(await code(socket, { type: 'subscribe', channel: 'secret:x' }), 'forbidden');
    assert.equal(await code(socket, { type: 'subscribe', channel: 'room:has space' }), 'bad_request');
    assert.equal(await code(socket, { type: 'subscribe', channel: `room:${'a'.repeat(65)}` }), 'bad_request');
    assert.equal(await code(socket, { type: 'subscribe', channel: `room:${'a'.repeat(64)}` }), 'ok');
    assert.equal(await code(socket, { type: 'subscribe', channel: 'nocolon' }), 'bad_request');
    socket.close();
  });
});

describe('shortcuts', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server.close());

  test('/ws/rooms/{room}: subscribed at once; plain text is published as {text}', async () => {
    const token = await server.token('terminal');
    const socket = await server.ws(`/ws/rooms/shell?token=${token}`);
    await socket.welcome();
    const reply = await socket.next((f) => f.type === 'reply');
    assert.equal(reply.id, undefined);
    assert.equal(reply.result.channel, 'room:shell');
    socket.send('hello from a terminal');
    const push = await socket.next((f) => f.type === 'message');
    assert.deepEqual(push.message.data, { text: 'hello from a terminal' });
    // A JSON object with a type is still a command.
    assert.deepEqual(await socket.ok({ type: 'ping' }), {});
    socket.send('{"not":"a command"}');
    const second = await socket.next((f) => f.type === 'message' && f.message.offset === 2);
    assert.deepEqual(second.message.data, { text: '{"not":"a command"}' });
    socket.close();
  });

  test('/ws/notifications/{topic}: subscribed at once', async () => {
    const socket = await server.ws('/ws/notifications/tasks', { token: await server.token('watcher') });
    const reply = await socket.next((f) => f.type === 'reply');
    assert.equal(reply.result.channel, 'topic:tasks');
    socket.close();
  });

  test('/ws/notifications/{topic}: reply without id, pushes arrive, plain text is bad_request and not published', async () => {
    // An admin may publish to topics: if the shortcut published plain text, it would be stored.
    const socket = await server.ws('/ws/notifications/alerts', { token: await server.token('oncall', 'admin') });
    await socket.welcome();
    const reply = await socket.next((f) => f.type === 'reply');
    assert.equal('id' in reply, false);
    assert.equal(reply.result.channel, 'topic:alerts');
    assert.equal(reply.result.recovered, false);
    assert.deepEqual(reply.result.messages, []);

    const published = await server.http('POST', '/publish/topic:alerts', {
      token: await server.token('ci', 'service'),
      body: { data: { level: 'high' } },
    });
    assert.equal(published.status, 202);
    const push = await socket.next((f) => f.type === 'message');
    assert.deepEqual(push, { type: 'message', channel: 'topic:alerts', message: published.body });

    socket.send('just some text');
    const error = await socket.next((f) => f.type === 'error');
    assert.equal(error.error.code, 'bad_request');
    assert.equal(error.id, undefined);
    const history = await socket.ok({ type: 'history', channel: 'topic:alerts' });
    assert.deepEqual(history.messages, [published.body], 'the plain text was not stored');
    socket.close();
  });

  test('/ws/rooms/{room} with a first-frame auth: welcome, then the subscribe reply, then pushes', async () => {
    const socket = await server.ws('/ws/rooms/by-frame');
    socket.send({ type: 'auth', token: await server.token('framer') });
    await socket.welcome();
    const reply = await socket.next((f) => f.type === 'reply');
    assert.equal('id' in reply, false);
    assert.equal(reply.result.channel, 'room:by-frame');
    assert.deepEqual(
      socket.frames.slice(0, 2).map((f) => f.type),
      ['welcome', 'reply'],
    );
    const poster = await signedIn(server, 'poster');
    const stored = await poster.ok({ type: 'publish', channel: 'room:by-frame', data: { text: 'hi' } });
    const push = await socket.next((f) => f.type === 'message');
    assert.deepEqual(push.message, stored);
    socket.close();
    poster.close();
  });

  test('/ws/rooms/{room}: any text that is not a command is published as {"text": …} for everyone', async () => {
    const listener = await signedIn(server, 'listener');
    await listener.ok({ type: 'subscribe', channel: 'room:plain' });
    const socket = await server.ws('/ws/rooms/plain', { token: await server.token('typist') });
    await socket.next((f) => f.type === 'reply');
    // Not JSON, JSON that is not an object, an object whose type is not a string, leading space.
    const texts = ['hello there', '42', '["a"]', '{"type": 5}', '  {"text":"not a command"}'];
    for (const text of texts) socket.send(text);
    await listener.next((f) => f.type === 'message' && f.message.offset === texts.length, 5000, 'every text');
    const received = listener.messages('room:plain');
    assert.deepEqual(
      received.map((m) => m.data),
      texts.map((text) => ({ text })),
    );
    assert.ok(received.every((m) => m.from === 'typist'));
    const history = await listener.ok({ type: 'history', channel: 'room:plain' });
    assert.deepEqual(history.messages, received);
    listener.close();
    socket.close();
  });

  test('a shortcut to a room the user may not join: error, then close 1008', async () => {
    await server.parley.ctx.rooms.create({ name: 'vault', private: true }, 'banker');
    const socket = await server.ws('/ws/rooms/vault', { token: await server.token('robber') });
    const error = await socket.next((f) => f.type === 'error');
    assert.equal(error.error.code, 'forbidden');
    assert.equal((await socket.closed).code, 1008);
  });

  test('unknown WebSocket paths are refused with 404', async () => {
    await assert.rejects(TestSocket.connect(`${server.wsUrl}/nope`), /404/);
  });
});

describe('ordering under concurrency', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ RATE_LIMIT_PER_SEC: '100000', RATE_LIMIT_BURST: '100000' });
  });
  after(() => server.close());

  test('a subscribe with since in the middle of a 600-publish burst sees every offset once, in order', async () => {
    const channel = 'room:burst';
    const writer = await signedIn(server, 'writer');
    const reader = await signedIn(server, 'reader');
    const head = await reader.ok({ type: 'subscribe', channel });
    const total = 600;
    // The writer keeps 20 publishes in flight, so the burst outlasts the reader's reconnect.
    const burst = (async () => {
      for (let i = 1; i <= total; i += 20) {
        const batch = [];
        for (let k = i; k < i + 20 && k <= total; k++)
          batch.push(writer.ok({ type: 'publish', channel, data: { i: k } }));
        await Promise.all(batch);
      }
    })();
    // Read a little, then drop the socket and come back mid-burst with `since`.
    const seen = await reader.next((f) => f.type === 'message' && f.message.offset >= 50, 10000);
    const lastSeen = seen.message.offset;
    reader.terminate();
    const back = await signedIn(server, 'reader');
    const sub = await back.ok({ type: 'subscribe', channel, since: { offset: lastSeen, epoch: head.epoch } });
    assert.equal(sub.recovered, true);
    assert.ok(sub.offset < total, `the subscribe landed mid-burst (at ${sub.offset} of ${total})`);
    await burst;
    await back.next((f) => f.type === 'message' && f.message.offset === total, 10000);

    const offsets = [...sub.messages.map((m: any) => m.offset), ...back.messages(channel).map((m) => m.offset)];
    const expected = Array.from({ length: total - lastSeen }, (_, k) => lastSeen + 1 + k);
    assert.deepEqual(offsets, expected, 'reply plus pushes: contiguous, no gap, no duplicate');
    // Stored in the order sent over one connection.
    const history = [];
    let before: number | undefined;
    for (;;) {
      const page = await back.ok({ type: 'history', channel, limit: 100, ...(before ? { before } : {}) });
      history.unshift(...page.messages);
      if (!page.hasMore) break;
      before = page.messages[0].offset;
    }
    assert.deepEqual(
      history.map((m: any) => m.data.i),
      Array.from({ length: total }, (_, k) => k + 1),
    );
    writer.close();
    back.close();
  });

  test('many subscribers joining during a burst each see contiguous offsets after their reply', async () => {
    const channel = 'room:joiners';
    const writer = await signedIn(server, 'w');
    const total = 500;
    for (let i = 1; i <= total; i++) writer.send({ type: 'publish', channel, data: i });
    const joiners: Array<{ socket: TestSocket; start: number }> = [];
    for (let j = 0; j < 8; j++) {
      const socket = await signedIn(server, `j${j}`);
      const reply = await socket.ok({ type: 'subscribe', channel });
      joiners.push({ socket, start: reply.offset });
    }
    for (const { socket, start } of joiners) {
      if (start < total) await socket.next((f) => f.type === 'message' && f.message.offset === total, 10000);
      const offsets = socket.messages(channel).map((m) => m.offset);
      assert.deepEqual(
        offsets,
        Array.from({ length: total - start }, (_, k) => start + 1 + k),
      );
      socket.close();
    }
    writer.close();
  });
});

describe('limits enforced at the gateway', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ ALLOWED_ORIGINS: 'https://chat.example.com', MAX_MESSAGE_BYTES: '1024' });
  });
  after(() => server.close());

  test('a browser handshake from another Origin is refused 403', async () => {
    await assert.rejects(
      TestSocket.connect(`${server.wsUrl}/ws`, { headers: { origin: 'https://evil.example.com' } }),
      /403/,
    );
    const ok = await TestSocket.connect(`${server.wsUrl}/ws`, { headers: { origin: 'https://chat.example.com' } });
    ok.close();
  });

  test('a frame above MAX_MESSAGE_BYTES closes 1009; at the limit it passes', async () => {
    const socket = await signedIn(server, 'big');
    const atLimit = JSON.stringify({ type: 'ping', id: 1, pad: '' });
    socket.send(atLimit.replace('""', `"${'x'.repeat(1024 - atLimit.length)}"`));
    await socket.next((f) => f.id === 1);
    socket.ws.send('x'.repeat(1025));
    assert.equal((await socket.closed).code, 1009);
  });
});

describe('handshake and typing errors', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server.close());

  test('a malformed WebSocket handshake is answered 400 with the JSON error body', async () => {
    const request = httpRequest(`${server.url}/ws`, {
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-key': 'short',
        'sec-websocket-version': '13',
      },
    });
    request.end();
    const [response] = (await once(request, 'response')) as [IncomingMessage];
    let body = '';
    for await (const chunk of response) body += chunk;
    assert.equal(response.statusCode, 400);
    assert.equal(JSON.parse(body).error.code, 'bad_request');
  });

  test('a failing typing command reports its error under its id', async () => {
    const socket = await signedIn(server, 'typist');
    const answer = await socket.request({ type: 'typing', channel: 'topic:news' });
    assert.equal(answer.type, 'error');
    assert.equal(answer.error.code, 'forbidden');
  });
});
