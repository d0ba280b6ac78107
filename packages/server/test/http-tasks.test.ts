import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { taskId } from '../src/tasks/tasks-service.ts';
import { startServer, type TestServer } from './helpers.ts';

describe('HTTP task board', () => {
  let server: TestServer;
  let alice: string;
  let bob: string;

  before(async () => {
    server = await startServer();
    alice = await server.token('alice');
    bob = await server.token('bob');
  });
  after(() => server.close());

  test('every route needs a bearer token (401)', async () => {
    for (const [method, path, body] of [
      ['GET', '/tasks', undefined],
      ['POST', '/tasks', { title: 'x' }],
      ['GET', '/tasks/some-id', undefined],
      ['PATCH', '/tasks/some-id', { done: true }],
      ['DELETE', '/tasks/some-id', undefined],
    ] as const) {
      const response = await server.http(method, path, { body });
      assert.equal(response.status, 401, `${method} ${path}`);
      assert.equal(response.body.error.code, 'unauthorized');
    }
  });

  test('create, read, update and delete, each change published to topic:tasks in order', async () => {
    const socket = await server.ws('/ws', { token: bob });
    const subscribed = await socket.ok({ type: 'subscribe', channel: 'topic:tasks' });

    const created = await server.http('POST', '/tasks', {
      token: alice,
      body: { title: 'Write docs', description: 'protocol and API' },
    });
    assert.equal(created.status, 201);
    const task = created.body;
    assert.equal(typeof task.id, 'string');
    assert.equal(task.title, 'Write docs');
    assert.equal(task.description, 'protocol and API');
    assert.equal(task.done, false);
    assert.equal(task.createdBy, 'alice');
    assert.equal(new Date(task.createdAt).toISOString(), task.createdAt);
    assert.equal(task.updatedAt, task.createdAt);

    const fetched = await server.http('GET', `/tasks/${task.id}`, { token: bob });
    assert.equal(fetched.status, 200);
    assert.deepEqual(fetched.body, task);

    const updated = await server.http('PATCH', `/tasks/${task.id}`, { token: bob, body: { done: true } });
    assert.equal(updated.status, 200);
    assert.equal(updated.body.done, true);
    assert.equal(updated.body.title, 'Write docs', 'fields not given are kept');
    assert.equal(updated.body.description, 'protocol and API');
    assert.equal(updated.body.createdBy, 'alice');
    assert.ok(Date.parse(updated.body.updatedAt) >= Date.parse(task.updatedAt));

    const renamed = await server.http('PATCH', `/tasks/${task.id}`, {
      token: alice,
      body: { title: 'Write all the docs', description: '' },
    });
    assert.equal(renamed.status, 200);
    assert.equal(renamed.body.title, 'Write all the docs');
    assert.equal(renamed.body.description, '');
    assert.equal(renamed.body.done, true);

    const deleted = await server.http('DELETE', `/tasks/${task.id}`, { token: bob });
    assert.equal(deleted.status, 204);
    assert.equal(deleted.text, '');
    const gone = await server.http('GET', `/tasks/${task.id}`, { token: bob });
    assert.equal(gone.status, 404);

    await socket.next(
      (f) => f.type === 'message' && f.message.data.event === 'task.deleted',
      5000,
      'task.deleted event',
    );
    const events = socket.messages('topic:tasks');
    assert.deepEqual(
      events.map((m) => [m.data.event, m.from]),
      [
        ['task.created', 'alice'],
        ['task.updated', 'bob'],
        ['task.updated', 'alice'],
        ['task.deleted', 'bob'],
      ],
    );
    assert.deepEqual(
      events.map((m) => m.offset),
      [1, 2, 3, 4].map((n) => subscribed.offset + n),
    );
    assert.deepEqual(events[0].data.task, task);
    assert.deepEqual(events[1].data.task, updated.body);
    assert.deepEqual(events[2].data.task, renamed.body);
    assert.deepEqual(events[3].data.task, renamed.body, 'the deleted task as it was');
  });

  test('GET /tasks lists every task oldest first', async () => {
    const titles = ['first', 'second', 'third', 'fourth'];
    const ids: string[] = [];
    // Created in one burst, so several share a millisecond; the order must hold anyway.
    const created = await Promise.all(
      titles.map((title) => server.http('POST', '/tasks', { token: alice, body: { title } })),
    );
    for (const response of created) ids.push(response.body.id);
    const list = await server.http('GET', '/tasks', { token: bob });
    assert.equal(list.status, 200);
    const listed = (list.body.tasks as Array<{ id: string; createdAt: string }>).filter((t) => ids.includes(t.id));
    assert.equal(listed.length, titles.length);
    const byCreation = [...created]
      .map((r) => r.body)
      .sort((a, b) => Date.parse(a.createdAt) - Date.parse(b.createdAt) || (a.id < b.id ? -1 : 1));
    assert.deepEqual(
      listed.map((t) => t.id),
      byCreation.map((t) => t.id),
    );
    const times = listed.map((t) => Date.parse(t.createdAt));
    assert.deepEqual(
      times,
      [...times].sort((a, b) => a - b),
    );
  });

  test('a description defaults to empty', async () => {
    const created = await server.http('POST', '/tasks', { token: alice, body: { title: 'bare' } });
    assert.equal(created.status, 201);
    assert.equal(created.body.description, '');
  });

  test('POST /tasks refuses a bad title or description (400)', async () => {
    for (const body of [
      {},
      { title: '' },
      { title: 'x'.repeat(201) },
      { title: { text: 'x' } },
      { title: 'ok', description: 'x'.repeat(2001) },
    ]) {
      const response = await server.http('POST', '/tasks', { token: alice, body });
      assert.equal(response.status, 400, JSON.stringify(body).slice(0, 60));
      assert.equal(response.body.error.code, 'bad_request');
    }
    const longest = await server.http('POST', '/tasks', {
      token: alice,
      body: { title: 'x'.repeat(200), description: 'y'.repeat(2000) },
    });
    assert.equal(longest.status, 201);
  });

  test('PATCH needs at least one known field (400) and an existing task (404)', async () => {
    const task = (await server.http('POST', '/tasks', { token: alice, body: { title: 'patch me' } })).body;
    for (const body of [{}, { colour: 'red' }, { done: 'yes' }, { title: '' }]) {
      const response = await server.http('PATCH', `/tasks/${task.id}`, { token: alice, body });
      assert.equal(response.status, 400, JSON.stringify(body));
      assert.equal(response.body.error.code, 'bad_request');
    }
    const unchanged = await server.http('GET', `/tasks/${task.id}`, { token: alice });
    assert.deepEqual(unchanged.body, task);

    const missing = await server.http('PATCH', '/tasks/no-such-task', { token: alice, body: { done: true } });
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error.code, 'not_found');
  });

  test('GET and DELETE of an unknown task are 404, and a task is deleted once', async () => {
    const unknown = await server.http('GET', '/tasks/no-such-task', { token: alice });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.code, 'not_found');

    const task = (await server.http('POST', '/tasks', { token: alice, body: { title: 'delete me' } })).body;
    assert.equal((await server.http('DELETE', `/tasks/${task.id}`, { token: alice })).status, 204);
    const again = await server.http('DELETE', `/tasks/${task.id}`, { token: alice });
    assert.equal(again.status, 404);
    assert.equal(again.body.error.code, 'not_found');
  });
});

test('task ids made in the same millisecond sort in creation order', () => {
  const now = Date.now() + 60_000;
  const ids = Array.from({ length: 5000 }, () => taskId(now));
  assert.deepEqual([...ids].sort(), ids);
  assert.equal(new Set(ids).size, ids.length);
  for (const id of ids) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});
