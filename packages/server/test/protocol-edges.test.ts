import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startServer, type TestServer, type TestSocket } from './helpers.ts';
import { createTestDatabase, postgresSkipReason, type TestDatabase } from './support/postgres.ts';
import { cleanupRedisPrefix, REDIS_TEST_URL, redisSkipReason, uniqueRedisPrefix } from './support/redis.ts';

/**
 * Edges of the protocol at server level, each against a real server on port 0
 * with real WebSocket clients: recovery limits, retention per namespace,
 * commands that must leave no trace, the start-up warning, and ordering when
 * two publishers race a recovering subscriber.
 */

async function signedIn(server: TestServer, user: string, role: 'user' | 'admin' = 'user'): Promise<TestSocket> {
  const socket = await server.ws('/ws', { token: await server.token(user, role) });
  await socket.welcome();
  return socket;
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, k) => from + k);
const offsets = (messages: Array<{ offset: number }>) => messages.map((m) => m.offset);

/** Publishes `count` messages through the server API, `parallel` requests at a time; returns the stored messages. */
async function publishOverHttp(server: TestServer, channel: string, count: number, token: string, parallel = 25) {
  const stored: Array<{ offset: number }> = [];
  for (let sent = 0; sent < count; sent += parallel) {
    const batch = [];
    for (let k = sent; k < Math.min(count, sent + parallel); k++) {
      batch.push(server.http('POST', `/publish/${channel}`, { token, body: { data: { k } } }));
    }
    for (const response of await Promise.all(batch)) {
      assert.equal(response.status, 202, response.text);
      stored.push(response.body);
    }
  }
  return stored;
}

/** Publishes `count` messages over one socket, pipelined; resolves once every reply is in. */
async function publishOverWs(socket: TestSocket, channel: string, count: number) {
  const replies = [];
  for (let k = 1; k <= count; k++) replies.push(socket.ok({ type: 'publish', channel, data: { k } }, 20_000));
  return Promise.all(replies);
}

/** Every stored message of a channel, oldest first, paging back with `before` (bounded). */
async function wholeHistory(socket: TestSocket, channel: string): Promise<any[]> {
  const all: any[] = [];
  let before: number | undefined;
  for (let page = 0; page < 1000; page++) {
    const result = await socket.ok({ type: 'history', channel, limit: 100, ...(before ? { before } : {}) });
    all.unshift(...result.messages);
    if (!result.hasMore) return all;
    before = result.messages[0].offset;
  }
  throw new Error(`${channel}: history did not end within 1000 pages`);
}

describe('recovery edges (RECOVERY_MAX 3)', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ RECOVERY_MAX: '3' });
  });
  after(() => server.close());

  test('since.offset above the latest offset: recovered false, no messages, pushes go on', async () => {
    const writer = await signedIn(server, 'writer');
    for (let i = 0; i < 3; i++) await writer.ok({ type: 'publish', channel: 'room:ahead', data: i });
    const reader = await signedIn(server, 'reader');
    const { epoch } = await reader.ok({ type: 'history', channel: 'room:ahead', limit: 1 }).then((p) => p.messages[0]);
    const sub = await reader.ok({ type: 'subscribe', channel: 'room:ahead', since: { offset: 10, epoch } });
    assert.equal(sub.recovered, false);
    assert.deepEqual(sub.messages, []);
    assert.equal(sub.offset, 3, 'the reply names the real latest offset');
    assert.equal(sub.epoch, epoch);
    await writer.ok({ type: 'publish', channel: 'room:ahead', data: 'next' });
    const push = await reader.next((f) => f.type === 'message' && f.channel === 'room:ahead');
    assert.equal(push.message.offset, 4);
    writer.close();
    reader.close();
  });

  test('since in another epoch is never recovered, not even with nothing missed', async () => {
    const socket = await signedIn(server, 'alice');
    for (let i = 0; i < 2; i++) await socket.ok({ type: 'publish', channel: 'room:epochs', data: i });
    for (const offset of [0, 1, 2]) {
      const sub = await socket.ok({ type: 'subscribe', channel: 'room:epochs', since: { offset, epoch: 'other' } });
      assert.equal(sub.recovered, false, `since ${offset} in another epoch`);
      assert.deepEqual(sub.messages, []);
      assert.equal(sub.offset, 2);
      await socket.ok({ type: 'unsubscribe', channel: 'room:epochs' });
    }
    socket.close();
  });

  test('exactly RECOVERY_MAX missed is recovered; one more is not', async () => {
    const socket = await signedIn(server, 'bob');
    const channel = 'room:max';
    const stored = await publishOverWs(socket, channel, 5);
    const { epoch } = stored[0];
    const expectations: Array<[number, boolean, number[]]> = [
      [5, true, []], // nothing missed
      [4, true, [5]],
      [2, true, [3, 4, 5]], // exactly RECOVERY_MAX (3)
      [1, false, []], // RECOVERY_MAX + 1
      [0, false, []],
    ];
    for (const [offset, recovered, messages] of expectations) {
      const sub = await socket.ok({ type: 'subscribe', channel, since: { offset, epoch } });
      assert.equal(sub.recovered, recovered, `since ${offset}`);
      assert.deepEqual(offsets(sub.messages), messages, `since ${offset}`);
      assert.equal(sub.offset, 5);
      await socket.ok({ type: 'unsubscribe', channel });
    }
    socket.close();
  });
});

describe('retention per namespace', () => {
  let server: TestServer;
  let admin: string;
  before(async () => {
    // RECOVERY_MAX above the topic retention, so trimming is the only reason a recovery can fail here.
    server = await startServer({ RECOVERY_MAX: '5000', RATE_LIMIT_PER_SEC: '100000', RATE_LIMIT_BURST: '100000' });
    admin = await server.token('ops', 'admin');
  });
  after(() => server.close());

  test('topic: keeps its last 1000; offsets go on; a since older than what is kept is not recovered', async () => {
    const channel = 'topic:trimmed';
    const stored = await publishOverHttp(server, channel, 1005, admin);
    assert.deepEqual(
      offsets(stored).sort((a, b) => a - b),
      range(1, 1005),
    );
    const reader = await signedIn(server, 'reader');

    const history = await wholeHistory(reader, channel);
    assert.deepEqual(offsets(history), range(6, 1005), 'the last 1000, oldest first');
    const oldest = await reader.ok({ type: 'history', channel, before: 7, limit: 100 });
    assert.deepEqual(offsets(oldest.messages), [6]);
    assert.equal(oldest.hasMore, false, 'nothing older than the oldest kept');
    const beyond = await reader.ok({ type: 'history', channel, before: 6 });
    assert.deepEqual(beyond, { messages: [], hasMore: false });

    const { epoch } = history[0];
    const fromStart = await reader.ok({ type: 'subscribe', channel, since: { offset: 1, epoch } });
    assert.equal(fromStart.recovered, false, 'offsets 2..5 were trimmed');
    assert.deepEqual(fromStart.messages, []);
    assert.equal(fromStart.offset, 1005);
    await reader.ok({ type: 'unsubscribe', channel });
    const justTrimmed = await reader.ok({ type: 'subscribe', channel, since: { offset: 4, epoch } });
    assert.equal(justTrimmed.recovered, false, 'offset 5 was trimmed');
    await reader.ok({ type: 'unsubscribe', channel });
    const allKept = await reader.ok({ type: 'subscribe', channel, since: { offset: 5, epoch } });
    assert.equal(allKept.recovered, true, 'everything after offset 5 is kept');
    assert.deepEqual(offsets(allKept.messages), range(6, 1005));

    const next = await server.http('POST', `/publish/${channel}`, { token: admin, body: { data: 'next' } });
    assert.equal(next.body.offset, 1006, 'offsets continue after trimming');
    await reader.next((f) => f.type === 'message' && f.message.offset === 1006);
    const latest = await reader.ok({ type: 'history', channel, before: 8, limit: 100 });
    assert.deepEqual(offsets(latest.messages), [7], 'the window moved on by one');
    assert.equal(latest.hasMore, false);
    reader.close();
  });

  test('user: keeps its last 1000 too', async () => {
    const channel = 'user:kept';
    await publishOverHttp(server, channel, 1003, admin);
    const owner = await signedIn(server, 'kept');
    const history = await wholeHistory(owner, channel);
    assert.deepEqual(offsets(history), range(4, 1003));
    const oldest = await owner.ok({ type: 'history', channel, before: 5, limit: 10 });
    assert.deepEqual(offsets(oldest.messages), [4]);
    assert.equal(oldest.hasMore, false);
    owner.close();
  });

  test('an idempotency key outlives the trimming of its message', async () => {
    const channel = 'topic:idem-trimmed';
    const keyed = { token: admin, body: { data: 'deploy #7', idempotencyKey: 'deploy-7' } };
    const first = await server.http('POST', `/publish/${channel}`, keyed);
    assert.equal(first.body.offset, 1);
    const filler = await signedIn(server, 'ops', 'admin');
    await publishOverWs(filler, channel, 1000);
    const oldest = await filler.ok({ type: 'history', channel, before: 3, limit: 10 });
    assert.deepEqual(offsets(oldest.messages), [2], 'offset 1 has been trimmed');

    const retry = await server.http('POST', `/publish/${channel}`, keyed);
    assert.equal(retry.status, 202);
    assert.deepEqual(retry.body, first.body, 'the retry answers with the first message');
    const next = await filler.ok({ type: 'publish', channel, data: 'next' });
    assert.equal(next.offset, 1002, 'the retry stored nothing');
    filler.close();
  });

  test('rooms and DMs keep every message (more than 1000)', async () => {
    const amy = await signedIn(server, 'amy');
    const ben = await signedIn(server, 'ben');
    for (const [socket, channel] of [
      [amy, 'room:archive'],
      [ben, 'dm:amy:ben'],
    ] as const) {
      const stored = await publishOverWs(socket, channel, 1005);
      assert.deepEqual(offsets(stored), range(1, 1005), `${channel}: stored in the order sent`);
      const history = await wholeHistory(amy, channel);
      assert.deepEqual(offsets(history), range(1, 1005), `${channel}: everything kept`);
      assert.deepEqual(
        history.map((m) => m.data.k),
        range(1, 1005),
      );
      const first = await amy.ok({ type: 'history', channel, before: 3 });
      assert.deepEqual(offsets(first.messages), [1, 2]);
      assert.equal(first.hasMore, false);
      const sub = await amy.ok({ type: 'subscribe', channel, since: { offset: 1, epoch: history[0].epoch } });
      assert.equal(sub.recovered, true, `${channel}: nothing trimmed, so it recovers from offset 1`);
      assert.equal(sub.messages.length, 1004);
      await amy.ok({ type: 'unsubscribe', channel });
    }
    amy.close();
    ben.close();
  });
});

describe('commands that leave no trace', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server.close());

  test('unsubscribe from a channel never subscribed, or twice, answers {}', async () => {
    const socket = await signedIn(server, 'alice');
    assert.deepEqual(await socket.ok({ type: 'unsubscribe', channel: 'room:never-joined' }), {});
    assert.deepEqual(await socket.ok({ type: 'unsubscribe', channel: 'topic:nothing' }), {});
    await socket.ok({ type: 'subscribe', channel: 'room:once' });
    assert.deepEqual(await socket.ok({ type: 'unsubscribe', channel: 'room:once' }), {});
    assert.deepEqual(await socket.ok({ type: 'unsubscribe', channel: 'room:once' }), {});
    // Still subscribable afterwards: the idempotent unsubscribes left no half state behind.
    const again = await socket.ok({ type: 'subscribe', channel: 'room:once' });
    assert.equal(again.channel, 'room:once');
    socket.close();
  });

  test('typing is relayed but never stored: history and offsets are unchanged', async () => {
    const channel = 'room:typing-only';
    const alice = await signedIn(server, 'alice');
    const bob = await signedIn(server, 'bob');
    await alice.ok({ type: 'subscribe', channel });
    await bob.ok({ type: 'subscribe', channel });
    await alice.ok({ type: 'publish', channel, data: 'before' });
    const historyBefore = await alice.ok({ type: 'history', channel });

    for (let i = 0; i < 5; i++) bob.send({ type: 'typing', channel });
    // Typing is relayed to alice: once she has all five, the server has handled them.
    const typings = () => alice.frames.filter((f) => f.type === 'typing').length;
    await alice.next((f) => f.type === 'typing' && typings() === 5, 5000, 'five typing frames');
    assert.deepEqual(await alice.ok({ type: 'history', channel }), historyBefore);
    const next = await bob.ok({ type: 'publish', channel, data: 'after' });
    assert.equal(next.offset, 2, 'typing took no offset');
    const watcher = await signedIn(server, 'carol');
    const sub = await watcher.ok({
      type: 'subscribe',
      channel,
      since: { offset: 0, epoch: next.epoch },
    });
    assert.deepEqual(
      sub.messages.map((m: any) => m.data),
      ['before', 'after'],
    );
    alice.close();
    bob.close();
    watcher.close();
  });

  test('topic: and user: subscriptions produce no join or leave (a room does, as a control)', async () => {
    const admin = await server.token('ops', 'admin');
    const dana = await signedIn(server, 'dana');
    await dana.ok({ type: 'subscribe', channel: 'topic:quiet' });
    await dana.ok({ type: 'subscribe', channel: 'user:dana' });
    await dana.ok({ type: 'subscribe', channel: 'room:control' });
    await dana.next((f) => f.type === 'join' && f.channel === 'room:control', 5000, 'own join in the room');

    const eli = await signedIn(server, 'eli');
    await eli.ok({ type: 'subscribe', channel: 'topic:quiet' });
    await eli.ok({ type: 'subscribe', channel: 'room:control' });
    await dana.next((f) => f.type === 'join' && f.user === 'eli', 5000, 'eli joins the room');
    await eli.ok({ type: 'unsubscribe', channel: 'topic:quiet' });
    await eli.ok({ type: 'unsubscribe', channel: 'room:control' });
    await dana.next((f) => f.type === 'leave' && f.user === 'eli', 5000, 'eli leaves the room');

    // A message through each channel after the subscribes: any join or leave would be there before it.
    for (const channel of ['topic:quiet', 'user:dana']) {
      await server.http('POST', `/publish/${channel}`, { token: admin, body: { data: 'barrier' } });
      await dana.next((f) => f.type === 'message' && f.channel === channel, 5000, `barrier on ${channel}`);
    }
    const events = dana.frames.filter((f) => (f.type === 'join' || f.type === 'leave') && f.channel !== 'room:control');
    assert.deepEqual(events, []);
    const presence = await dana.ok({ type: 'presence', channel: 'topic:quiet' });
    assert.deepEqual(presence.users, []);
    dana.close();
    eli.close();
  });

  test('GET /healthz answers 200 without credentials', async () => {
    const response = await server.http('GET', '/healthz');
    assert.equal(response.status, 200);
    assert.deepEqual(response.body, { status: 'ok' });
  });
});

describe('JWT_SECRET warning at start-up', () => {
  const WARNING = /JWT_SECRET is not set/;
  const warnings = (logs: string[]) =>
    logs.map((line) => JSON.parse(line)).filter((entry) => entry.level === 40 && WARNING.test(entry.msg));

  test('unset: one loud warning, and the random secret signs working tokens', async () => {
    const server = await startServer({ JWT_SECRET: '', LOG_LEVEL: 'info' }, { captureLogs: true });
    try {
      assert.equal(server.parley.ctx.config.jwtSecretGenerated, true);
      assert.equal(warnings(server.logs).length, 1, `one warning in: ${server.logs.join('\n')}`);
      assert.match(warnings(server.logs)[0].msg, /restart/);
      const socket = await signedIn(server, 'alice');
      socket.close();
    } finally {
      await server.close();
    }
  });

  test('set: no warning', async () => {
    const server = await startServer({ LOG_LEVEL: 'info' }, { captureLogs: true });
    try {
      assert.ok(server.logs.length > 0, 'logs were captured');
      assert.deepEqual(warnings(server.logs), []);
    } finally {
      await server.close();
    }
  });
});

/**
 * Two writers publish 400 messages each into one room (10 in flight each) while a reader drops
 * its socket and comes back with `since` mid-burst; a bystander stays subscribed throughout, so
 * the recovering subscribe joins a channel that is live on this instance.
 */
async function twoWritersRace(server: TestServer, channel: string): Promise<void> {
  const perWriter = 400;
  const total = 2 * perWriter;
  const pauseAt = 100;
  const writers = [await signedIn(server, 'w1'), await signedIn(server, 'w2')];
  const bystander = await signedIn(server, 'bystander');
  await bystander.ok({ type: 'subscribe', channel });
  const reader = await signedIn(server, 'reader');
  const head = await reader.ok({ type: 'subscribe', channel });

  // At `pauseAt` each writer waits until the reader has sent its recovering subscribe, so the
  // rest of the burst (600 publishes) races that subscribe.
  let resume!: () => void;
  const resumed = new Promise<void>((resolve) => {
    resume = resolve;
  });
  const writerOffsets: number[][] = [[], []];
  const bursts = writers.map(async (writer, w) => {
    for (let i = 1; i <= perWriter; i += 10) {
      if (i > pauseAt) await resumed;
      const batch = [];
      for (let k = i; k < i + 10 && k <= perWriter; k++) {
        batch.push(writer.ok({ type: 'publish', channel, data: { w, k } }, 20_000));
      }
      for (const stored of await Promise.all(batch)) writerOffsets[w]?.push(stored.offset);
    }
  });

  const seen = await reader.next((f) => f.type === 'message' && f.message.offset >= 50, 10_000);
  const lastSeen = seen.message.offset;
  reader.terminate();
  const back = await signedIn(server, 'reader');
  const subscribed = back.ok({ type: 'subscribe', channel, since: { offset: lastSeen, epoch: head.epoch } });
  resume();
  const sub = await subscribed;
  await Promise.all(bursts);
  assert.equal(sub.recovered, true);
  assert.ok(sub.offset < total, `the subscribe landed mid-burst (at ${sub.offset} of ${total})`);
  await back.next((f) => f.type === 'message' && f.message.offset === total, 10_000, `offset ${total}`);
  await bystander.next((f) => f.type === 'message' && f.message.offset === total, 10_000, `bystander: ${total}`);

  const replyAt = back.frames.findIndex((f) => f.type === 'reply' && f.result?.channel === channel);
  const firstPushAt = back.frames.findIndex((f) => f.type === 'message');
  assert.ok(replyAt >= 0 && firstPushAt > replyAt, 'no push before the subscribe reply');
  const received = [...offsets(sub.messages), ...offsets(back.messages(channel))];
  assert.deepEqual(received, range(lastSeen + 1, total), 'reply plus pushes: every offset once, in order');
  assert.deepEqual(offsets(bystander.messages(channel)), range(1, total), 'the bystander: every offset once');

  // Both publishers interleave into one gap-free sequence, each in the order it sent.
  const history = await wholeHistory(back, channel);
  assert.deepEqual(offsets(history), range(1, total));
  for (const w of [0, 1]) {
    const mine = history.filter((m) => m.data.w === w);
    assert.deepEqual(
      mine.map((m) => m.data.k),
      range(1, perWriter),
      `writer ${w + 1}: all stored, in order`,
    );
    assert.deepEqual(
      writerOffsets[w],
      mine.map((m) => m.offset),
      `writer ${w + 1}: its replies name those offsets`,
    );
  }
  const span = (w: number) => {
    const mine = history.filter((m) => m.data.w === w).map((m) => m.offset);
    return { from: mine[0] as number, to: mine[mine.length - 1] as number };
  };
  const [one, two] = [span(0), span(1)];
  assert.ok(one.from < two.to && two.from < one.to, 'the two bursts overlapped in the channel');
  for (const socket of [...writers, bystander, back]) socket.close();
}

const FAST = { RATE_LIMIT_PER_SEC: '100000', RATE_LIMIT_BURST: '100000' };

describe('ordering: two publishers racing a recovering subscriber (SQLite, in-process broker)', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer(FAST);
  });
  after(() => server.close());

  test('a subscribe with since mid-burst sees every offset once, in order, from both publishers', () =>
    twoWritersRace(server, 'room:two-writers'));
});

// Here the store and the broker answer over the network, so pushes really arrive between the
// subscribe's hold and its read of the store: the reply and the held pushes must not overlap.
describe('ordering: two publishers racing a recovering subscriber (PostgreSQL, Redis)', {
  skip: (await postgresSkipReason()) || (await redisSkipReason()),
}, () => {
  let database: TestDatabase;
  let prefix: string;
  let server: TestServer;
  before(async () => {
    database = await createTestDatabase();
    prefix = uniqueRedisPrefix('edges');
    server = await startServer({
      ...FAST,
      DATABASE_URL: database.url,
      REDIS_URL: REDIS_TEST_URL,
      REDIS_KEY_PREFIX: prefix,
    });
  });
  after(async () => {
    await server?.close();
    await database?.drop();
    if (prefix) await cleanupRedisPrefix(prefix);
  });

  test('a subscribe with since mid-burst sees every offset once, in order, from both publishers', () =>
    twoWritersRace(server, 'room:two-writers'));
});
