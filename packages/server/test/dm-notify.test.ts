import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startServer, type TestServer } from './helpers.ts';

/**
 * Nobody lists a user's DMs, so the first message of a `dm:` channel is
 * announced on the recipient's user channel: `{"event":"dm.started"}`.
 */
describe('dm.started on the first message of a DM', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server.close());

  test('the recipient is told once, live and in their user channel’s history; the sender is not', async () => {
    const bob = await server.ws('/ws', { token: await server.token('bob') });
    await bob.ok({ type: 'subscribe', channel: 'user:bob' });
    const alice = await server.ws('/ws', { token: await server.token('alice') });

    const first = await alice.ok({
      type: 'publish',
      channel: 'dm:alice:bob',
      data: { text: 'hi bob' },
      idempotencyKey: 'first',
    });
    assert.equal(first.offset, 1);
    const notice = await bob.next((f) => f.type === 'message' && f.channel === 'user:bob', 5000, 'dm.started');
    assert.deepEqual(notice.message.data, { event: 'dm.started', channel: 'dm:alice:bob', from: 'alice' });
    assert.equal(notice.message.from, 'alice');
    assert.equal(notice.message.offset, 1);

    // The first message again (a retried publish: nothing new stored) and a second one: no more notices.
    const retried = await alice.ok({
      type: 'publish',
      channel: 'dm:alice:bob',
      data: { text: 'hi bob' },
      idempotencyKey: 'first',
    });
    assert.equal(retried.id, first.id);
    assert.equal((await alice.ok({ type: 'publish', channel: 'dm:alice:bob', data: { text: 'again' } })).offset, 2);
    // A marker published after both: had either sent a notice, it would be stored (and pushed) before this.
    const marker = await server.http('POST', '/publish/user:bob', {
      token: await server.token('ops', 'service'),
      body: { data: 'marker' },
    });
    assert.equal(marker.status, 202);
    await bob.next((f) => f.type === 'message' && f.message.data === 'marker', 5000, 'the marker');
    assert.deepEqual(
      bob.messages('user:bob').map((m) => m.offset),
      [1, 2],
    );
    const history = await bob.ok({ type: 'history', channel: 'user:bob' });
    assert.deepEqual(
      history.messages.map((m: { data: unknown }) => m.data),
      [{ event: 'dm.started', channel: 'dm:alice:bob', from: 'alice' }, 'marker'],
    );

    // The sender's own user channel gets nothing.
    const own = await alice.ok({ type: 'history', channel: 'user:alice' });
    assert.deepEqual(own.messages, []);
  });

  test('a recipient who is away (either side of the sorted name) finds the notice in history', async () => {
    const zoe = await server.ws('/ws', { token: await server.token('zoe') });
    // zoe sorts after amy: the recipient is the channel's first member here.
    await zoe.ok({ type: 'publish', channel: 'dm:amy:zoe', data: { text: 'are you there?' } });
    const amy = await server.ws('/ws', { token: await server.token('amy') });
    // The notice is stored just after the reply (it does not hold the sender up): the subscribe says
    // whether it is in already, and if not it comes as a push.
    const subscribed = await amy.ok({ type: 'subscribe', channel: 'user:amy' });
    if (subscribed.offset === 0) await amy.next((f) => f.type === 'message' && f.channel === 'user:amy');
    const { messages } = (await amy.ok({ type: 'history', channel: 'user:amy' })) as {
      messages: Array<{ from: string; data: unknown }>;
    };
    assert.deepEqual(
      messages.map((m) => [m.from, m.data]),
      [['zoe', { event: 'dm.started', channel: 'dm:amy:zoe', from: 'zoe' }]],
    );
  });

  test('a conversation a back end opens is announced to both members', async () => {
    const ops = await server.token('ops', 'service');
    const members = ['kim', 'lee'];
    const sockets = await Promise.all(
      members.map(async (user) => server.ws('/ws', { token: await server.token(user) })),
    );
    for (const [i, user] of members.entries()) await sockets[i]?.ok({ type: 'subscribe', channel: `user:${user}` });
    const opened = await server.http('POST', '/publish/dm:kim:lee', {
      token: ops,
      body: { data: { text: 'welcome' } },
    });
    assert.equal(opened.status, 202, opened.text);
    for (const [i, user] of members.entries()) {
      const socket = sockets[i];
      assert.ok(socket);
      const notice = await socket.next((f) => f.type === 'message' && f.channel === `user:${user}`, 5000, user);
      assert.deepEqual(notice.message.data, { event: 'dm.started', channel: 'dm:kim:lee', from: 'ops' });
    }
  });
});
