import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startServer, type TestServer } from './helpers.ts';
import { createTestDatabase, postgresSkipReason, type TestDatabase } from './support/postgres.ts';

/**
 * A real server on PostgreSQL (DATABASE_URL=postgres://…, a database of its
 * own): the features that touch the database, end to end. The same routes
 * on SQLite are covered in depth by the other HTTP and WebSocket tests.
 */
describe('a server on PostgreSQL', { skip: await postgresSkipReason() }, () => {
  let testDatabase: TestDatabase;
  let server: TestServer;

  before(async () => {
    testDatabase = await createTestDatabase();
    server = await startServer({ DATABASE_URL: testDatabase.url });
  });
  after(async () => {
    await server?.close();
    await testDatabase?.drop();
  });

  test('reports ready, with the postgres store', async () => {
    assert.equal(server.parley.ctx.database.kind, 'postgres');
    const ready = await server.http('GET', '/readyz');
    assert.equal(ready.status, 200);
    assert.equal(ready.body.checks.store, 'ok');
    assert.equal(ready.body.checks.presence, 'ok');
  });

  test('register, sign in, /me, refresh once', async () => {
    const registered = await server.http('POST', '/auth/register', {
      body: { username: 'pgalice', password: 'correct horse battery' },
    });
    assert.equal(registered.status, 201);
    assert.deepEqual(registered.body, { username: 'pgalice' });
    const taken = await server.http('POST', '/auth/register', {
      body: { username: 'pgalice', password: 'another password' },
    });
    assert.equal(taken.status, 409);
    assert.equal(taken.body.error.code, 'conflict');

    const wrong = await server.http('POST', '/auth/token', { form: { username: 'pgalice', password: 'nope nope' } });
    assert.equal(wrong.status, 401);
    const signedIn = await server.http('POST', '/auth/token', {
      form: { username: 'pgalice', password: 'correct horse battery' },
    });
    assert.equal(signedIn.status, 200);
    assert.equal(signedIn.body.token_type, 'bearer');
    assert.equal(typeof signedIn.body.expires_in, 'number');

    const me = await server.http('GET', '/me', { token: signedIn.body.access_token });
    assert.equal(me.status, 200);
    assert.deepEqual(me.body, { username: 'pgalice', role: 'user' });

    const refreshed = await server.http('POST', '/auth/refresh', {
      body: { refresh_token: signedIn.body.refresh_token },
    });
    assert.equal(refreshed.status, 200);
    assert.notEqual(refreshed.body.refresh_token, signedIn.body.refresh_token);
    const again = await server.http('POST', '/auth/refresh', { body: { refresh_token: signedIn.body.refresh_token } });
    assert.equal(again.status, 401, 'a refresh token works once');
    // Reuse revoked the new one too.
    const revoked = await server.http('POST', '/auth/refresh', {
      body: { refresh_token: refreshed.body.refresh_token },
    });
    assert.equal(revoked.status, 401);
  });

  test('rooms: create (409 when taken), list, private membership, post and read messages', async () => {
    const alice = await server.token('alice');
    const bob = await server.token('bob');
    const created = await server.http('POST', '/rooms', { token: alice, body: { name: 'pg-lobby' } });
    assert.equal(created.status, 201);
    assert.equal(created.body.private, false);
    assert.equal(new Date(created.body.createdAt).toISOString(), created.body.createdAt);
    const taken = await server.http('POST', '/rooms', { token: bob, body: { name: 'pg-lobby' } });
    assert.equal(taken.status, 409);
    assert.equal(taken.body.error.code, 'conflict');

    const secret = await server.http('POST', '/rooms', {
      token: alice,
      body: { name: 'pg-secret', private: true, members: ['carol'] },
    });
    assert.equal(secret.status, 201);
    assert.deepEqual(secret.body.members, ['alice', 'carol']);
    const added = await server.http('POST', '/rooms/pg-secret/members', { token: alice, body: { username: 'bob' } });
    assert.equal(added.status, 200);
    assert.deepEqual(added.body.members, ['alice', 'bob', 'carol']);
    const visible = await server.http('GET', '/rooms', { token: bob });
    assert.equal(visible.status, 200);
    assert.deepEqual(
      visible.body.rooms.map((room: { name: string }) => room.name),
      ['pg-lobby', 'pg-secret'],
    );
    const outsider = await server.http('GET', '/rooms', { token: await server.token('dave') });
    assert.deepEqual(
      outsider.body.rooms.map((room: { name: string }) => room.name),
      ['pg-lobby'],
    );

    for (const n of [1, 2, 3]) {
      const posted = await server.http('POST', '/rooms/pg-lobby/messages', { token: alice, body: { data: { n } } });
      assert.equal(posted.status, 201);
      assert.equal(posted.body.offset, n);
      assert.equal(posted.body.from, 'alice');
    }
    const keyed = { data: { text: 'once' }, idempotencyKey: 'pg-key-1' };
    const first = await server.http('POST', '/rooms/pg-lobby/messages', { token: alice, body: keyed });
    const repeat = await server.http('POST', '/rooms/pg-lobby/messages', { token: alice, body: keyed });
    assert.equal(first.body.offset, 4);
    assert.deepEqual(repeat.body, first.body, 'a repeated idempotency key returns the first message');

    const page = await server.http('GET', '/rooms/pg-lobby/messages?limit=2', { token: bob });
    assert.equal(page.status, 200);
    assert.deepEqual(
      page.body.messages.map((m: { offset: number }) => m.offset),
      [3, 4],
    );
    assert.equal(page.body.hasMore, true);
    const older = await server.http('GET', '/rooms/pg-lobby/messages?before=3&limit=10', { token: bob });
    assert.deepEqual(
      older.body.messages.map((m: { data: unknown }) => m.data),
      [{ n: 1 }, { n: 2 }],
    );
    assert.equal(older.body.hasMore, false);
  });

  test('tasks: create, list, read, update, delete', async () => {
    const alice = await server.token('alice');
    const created = await server.http('POST', '/tasks', { token: alice, body: { title: 'On Postgres' } });
    assert.equal(created.status, 201);
    const task = created.body;
    assert.equal(task.done, false);
    assert.equal(task.description, '');
    assert.equal(new Date(task.createdAt).toISOString(), task.createdAt);
    const second = await server.http('POST', '/tasks', { token: alice, body: { title: 'Second', description: 'd' } });
    assert.equal(second.status, 201);

    const list = await server.http('GET', '/tasks', { token: alice });
    assert.equal(list.status, 200);
    assert.deepEqual(
      list.body.tasks.map((t: { id: string }) => t.id),
      [task.id, second.body.id],
      'oldest first',
    );
    const fetched = await server.http('GET', `/tasks/${task.id}`, { token: alice });
    assert.deepEqual(fetched.body, task);

    const updated = await server.http('PATCH', `/tasks/${task.id}`, {
      token: alice,
      body: { done: true, title: 'Done' },
    });
    assert.equal(updated.status, 200);
    assert.equal(updated.body.done, true);
    assert.equal(updated.body.title, 'Done');
    assert.equal((await server.http('GET', `/tasks/${task.id}`, { token: alice })).body.done, true);

    const deleted = await server.http('DELETE', `/tasks/${task.id}`, { token: alice });
    assert.equal(deleted.status, 204);
    assert.equal((await server.http('GET', `/tasks/${task.id}`, { token: alice })).status, 404);
    assert.equal(
      (await server.http('PATCH', `/tasks/${task.id}`, { token: alice, body: { done: false } })).status,
      404,
    );
  });

  test('subscribe with `since` recovers what a client missed, over WebSocket', async () => {
    const alice = await server.token('alice');
    const bob = await server.token('bob');
    const channel = 'room:pg-recovery';
    const reader = await server.ws('/ws', { token: bob });
    await reader.welcome();
    const subscribed = await reader.ok({ type: 'subscribe', channel });
    assert.equal(subscribed.offset, 0);
    const writer = await server.ws('/ws', { token: alice });
    await writer.welcome();
    const published = await writer.ok({ type: 'publish', channel, data: { text: 'one' } });
    assert.equal(published.offset, 1);
    await reader.next((f) => f.type === 'message' && f.message.offset === 1, 5000, 'the push of offset 1');
    reader.close();
    await reader.closed;

    for (const text of ['two', 'three']) await writer.ok({ type: 'publish', channel, data: { text } });

    const back = await server.ws('/ws', { token: bob });
    await back.welcome();
    const recovered = await back.ok({ type: 'subscribe', channel, since: { offset: 1, epoch: subscribed.epoch } });
    assert.equal(recovered.recovered, true);
    assert.equal(recovered.offset, 3);
    assert.equal(recovered.epoch, subscribed.epoch);
    assert.deepEqual(
      recovered.messages.map((m: { offset: number; data: { text: string } }) => [m.offset, m.data.text]),
      [
        [2, 'two'],
        [3, 'three'],
      ],
    );
    await writer.ok({ type: 'publish', channel, data: { text: 'four' } });
    const live = await back.next((f) => f.type === 'message' && f.message.offset === 4, 5000, 'the push of offset 4');
    assert.equal(live.message.data.text, 'four');

    const history = await back.ok({ type: 'history', channel, limit: 10 });
    assert.deepEqual(
      history.messages.map((m: { offset: number }) => m.offset),
      [1, 2, 3, 4],
    );
  });
});
