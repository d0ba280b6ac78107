import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { startServer, type TestServer } from '@parley/server/test-helpers';
import { type ParleyClient, ParleyError } from '../src/index.ts';
import { makeClient, Network, nextEvent, Recorder, range, startStallingProxy, stateIs } from './support.ts';

describe('ParleyClient against a real server', () => {
  let server: TestServer;
  const clients: ParleyClient[] = [];

  before(async () => {
    server = await startServer({ RECOVERY_MAX: '3', RATE_LIMIT_PER_SEC: '10000', RATE_LIMIT_BURST: '10000' });
  });
  afterEach(() => {
    for (const client of clients.splice(0)) client.close();
  });
  after(() => server.close());

  async function connected(user: string, options: { network?: Network; commandTimeoutMs?: number } = {}) {
    const client = makeClient(clients, {
      url: `${server.wsUrl}/ws`,
      token: () => server.token(user),
      ...(options.network ? { WebSocket: options.network.WebSocket } : {}),
      ...(options.commandTimeoutMs ? { commandTimeoutMs: options.commandTimeoutMs } : {}),
    });
    const recorder = new Recorder(client);
    const welcome = nextEvent(client, 'welcome');
    client.connect();
    await welcome;
    return { client, recorder };
  }

  test('authenticates with the auth frame, never the URL; connecting → open; connect is idempotent', async () => {
    const network = await Network.create();
    const { client, recorder } = await connected('alice', { network });
    client.connect();
    assert.equal(client.state, 'open');
    assert.equal(client.user, 'alice');
    assert.deepEqual(recorder.states, ['connecting', 'open']);
    assert.deepEqual(network.urls, [`${server.wsUrl}/ws`]);
    assert.equal(network.sent[0]?.type, 'auth');
    assert.equal(typeof network.sent[0]?.token, 'string');
    assert.equal(recorder.welcomes[0]?.user, 'alice');
    assert.equal(recorder.welcomes[0]?.instance, server.parley.ctx.config.instanceId);
    await client.ping();
  });

  test('subscribe, publish, history, presence, typing, join and leave', async () => {
    const channel = 'room:round-trip';
    const { client: alice, recorder: aliceSees } = await connected('alice');
    const { client: bob, recorder: bobSees } = await connected('bob');

    const ownJoin = nextEvent(alice, 'join', (e: any) => e.channel === channel && e.user === 'alice');
    const first = await alice.subscribe(channel);
    assert.deepEqual(first.messages, []);
    assert.equal(first.offset, 0);
    await ownJoin;
    assert.deepEqual(await alice.subscribe(channel), { offset: 0, epoch: first.epoch, messages: [] });

    const bobJoins = nextEvent(alice, 'join', (e: any) => e.user === 'bob');
    await bob.subscribe(channel);
    assert.deepEqual(await bobJoins, { channel, user: 'bob' });

    const stored = await bob.publish(channel, { text: 'hi' });
    assert.equal(stored.offset, 1);
    assert.equal(stored.from, 'bob');
    assert.deepEqual(stored.data, { text: 'hi' });
    await bob.publish(channel, 'plain string');
    await aliceSees.reached(channel, 2);
    await bobSees.reached(channel, 2);
    assert.deepEqual(aliceSees.offsets(channel), [1, 2]);
    assert.deepEqual(bobSees.offsets(channel), [1, 2]);
    assert.deepEqual(aliceSees.messages[0], stored);

    const page = await alice.history(channel, { limit: 1 });
    assert.deepEqual(
      page.messages.map((m) => m.data),
      ['plain string'],
    );
    assert.equal(page.hasMore, true);
    assert.deepEqual((await alice.history(channel, { before: 2 })).messages, [stored]);

    const users = await alice.presence(channel);
    assert.deepEqual(
      users.sort((a, b) => a.user.localeCompare(b.user)),
      [
        { user: 'alice', connections: 1 },
        { user: 'bob', connections: 1 },
      ],
    );

    const typing = nextEvent(alice, 'typing');
    bob.typing(channel);
    assert.deepEqual(await typing, { channel, user: 'bob' });

    const leaves = nextEvent(alice, 'leave');
    await bob.unsubscribe(channel);
    assert.deepEqual(await leaves, { channel, user: 'bob' });
    // Unsubscribing again is harmless.
    await bob.unsubscribe(channel);
    await alice.publish(channel, 'after bob left');
    await aliceSees.reached(channel, 3);
    await bob.ping();
    assert.deepEqual(bobSees.offsets(channel), [1, 2]);
  });

  test("error frames become ParleyError with the server's code", async () => {
    const { client } = await connected('carol');
    const code = (promise: Promise<unknown>) =>
      promise.then(
        () => 'resolved',
        (error) => {
          assert.ok(error instanceof ParleyError);
          return error.code;
        },
      );
    assert.equal(await code(client.history('room:never-created')), 'not_found');
    assert.equal(await code(client.history('room:x', { limit: 500 })), 'bad_request');
    assert.equal(await code(client.publish('topic:deploys', { v: 1 })), 'forbidden');
    assert.equal(await code(client.subscribe('dm:alice:bob')), 'forbidden');
    assert.equal(await code(client.subscribe('nonsense')), 'bad_request');
    assert.equal(await code(client.presence('room:never-created')), 'not_found');
    // A failed subscribe is not remembered: subscribing again asks the server again.
    assert.equal(await code(client.subscribe('dm:alice:bob')), 'forbidden');
    // Errors without an id (typing is never answered) reach the 'error' event.
    const error = nextEvent<ParleyError>(client, 'error');
    client.typing('topic:deploys');
    assert.equal((await error).code, 'forbidden');
  });

  test('a command without a reply in time fails with timeout; close() fails the rest with disconnected', async () => {
    const network = await Network.create();
    const { client } = await connected('dave', { network, commandTimeoutMs: 300 });
    network.dropOutgoing = (frame) => frame.type === 'ping' || frame.type === 'presence';
    await assert.rejects(client.ping(), (error: ParleyError) => error.code === 'timeout');
    const waiting = client.presence('room:anything');
    client.close();
    await assert.rejects(waiting, (error: ParleyError) => error.code === 'disconnected');
    assert.equal(client.state, 'closed');
    await assert.rejects(client.ping(), (error: ParleyError) => error.code === 'disconnected');
  });

  test('a publish whose reply was lost is re-sent after reconnecting and stored once', async () => {
    const channel = 'room:lost-reply';
    const network = await Network.create();
    const { client, recorder } = await connected('erin', { network });
    await client.subscribe(channel);
    let dropped: Record<string, any> | undefined;
    network.dropIncoming = (frame) => {
      if (dropped || frame.type !== 'reply' || frame.result?.data?.n !== 1) return false;
      dropped = frame.result;
      // Stored, answered, and the answer lost with the connection.
      network.cut();
      return true;
    };
    const stored = await client.publish(channel, { n: 1 });
    assert.ok(dropped, 'the first reply was dropped');
    assert.equal(stored.id, dropped.id);
    assert.equal(recorder.welcomes.length, 2);
    assert.equal(network.sentOfType('publish').length, 2);
    const keys = new Set(network.sentOfType('publish').map((f) => f.idempotencyKey));
    assert.equal(keys.size, 1);
    const history = await client.history(channel);
    assert.deepEqual(
      history.messages.map((m) => m.data),
      [{ n: 1 }],
    );
    await recorder.reached(channel, 1);
    assert.deepEqual(recorder.offsets(channel), [1]);
  });

  test('a publish stored with its reply lost waits out a reconnect longer than its timeout, and resolves once', async () => {
    const channel = 'room:slow-reconnect';
    const network = await Network.create();
    const { client, recorder } = await connected('olive', { network, commandTimeoutMs: 300 });
    await client.subscribe(channel);
    let dropped: Record<string, any> | undefined;
    let cutAt = 0;
    network.dropIncoming = (frame) => {
      if (dropped || frame.type !== 'reply' || frame.result?.data?.n !== 1) return false;
      dropped = frame.result;
      // Stored, its reply lost with the connection, and no way back for a while.
      network.blocked = true;
      cutAt = Date.now();
      network.cut();
      return true;
    };
    let settled = false;
    const publishing = client.publish(channel, { n: 1 }).finally(() => {
      settled = true;
    });
    // The outage outlasts the command timeout three times over: refused attempts mark the time.
    await network.until(() => cutAt > 0 && (network.attemptedAt.at(-1) ?? 0) > cutAt + 900, 'a long outage');
    assert.equal(settled, false, 'the publish neither failed nor resolved while there was no connection');
    network.blocked = false;
    const stored = await publishing;
    assert.ok(dropped);
    assert.equal(stored.id, dropped.id, 'it resolved with the message the server had stored');
    const sent = network.sentOfType('publish');
    assert.equal(sent.length, 2);
    assert.equal(new Set(sent.map((f) => f.idempotencyKey)).size, 1, 're-sent with its key');
    assert.deepEqual(
      (await client.history(channel)).messages.map((m) => m.data),
      [{ n: 1 }],
    );
    await recorder.reached(channel, 1);
    assert.deepEqual(recorder.offsets(channel), [1]);
  });

  test('a publish without a reply on an open connection times out carrying its key; a retry with it stores once', async () => {
    const channel = 'room:retry-with-key';
    const network = await Network.create();
    const { client } = await connected('pia', { network, commandTimeoutMs: 300 });
    let dropped = 0;
    network.dropIncoming = (frame) => frame.type === 'reply' && frame.result?.data?.n === 1 && dropped++ === 0;
    const error = await client.publish(channel, { n: 1 }).then(
      () => assert.fail('the reply was dropped: the publish cannot resolve'),
      (e: unknown) => e as ParleyError,
    );
    assert.ok(error instanceof ParleyError);
    assert.equal(error.code, 'timeout');
    const key = network.sentOfType('publish')[0]?.idempotencyKey;
    assert.equal(typeof key, 'string');
    assert.equal(error.idempotencyKey, key);
    const retried = await client.publish(channel, { n: 1 }, { idempotencyKey: error.idempotencyKey });
    assert.equal(retried.offset, 1);
    assert.deepEqual(
      (await client.history(channel)).messages.map((m) => m.data),
      [{ n: 1 }],
      'the server had it stored; the retry found it',
    );
    // The other failures of a publish name the key too.
    const refused = await client.publish('topic:deploys', 1, { idempotencyKey: 'k-refused' }).catch((e) => e);
    assert.equal(refused.code, 'forbidden');
    assert.equal(refused.idempotencyKey, 'k-refused');
    network.dropOutgoing = (frame) => frame.type === 'publish';
    const waiting = client.publish(channel, 2, { idempotencyKey: 'k-closed' }).catch((e) => e);
    client.close();
    const closed = await waiting;
    assert.equal(closed.code, 'disconnected');
    assert.equal(closed.idempotencyKey, 'k-closed');
  });

  test('after a dropped connection the subscription resumes from where it was, missed messages in order', async () => {
    const channel = 'room:resume';
    const network = await Network.create();
    const { client, recorder } = await connected('frank', { network });
    const { client: poster } = await connected('gina');
    await client.subscribe(channel);
    await poster.publish(channel, 1);
    await recorder.reached(channel, 1);
    network.blocked = true;
    network.cut();
    await stateIs(client, 'reconnecting');
    for (const n of [2, 3, 4]) await poster.publish(channel, n);
    network.blocked = false;
    await recorder.reached(channel, 4);
    await poster.publish(channel, 5);
    await recorder.reached(channel, 5);
    assert.deepEqual(recorder.offsets(channel), [1, 2, 3, 4, 5]);
    const resubscribe = network.sentOfType('subscribe').at(-1);
    assert.equal(resubscribe?.since?.offset, 1);
    assert.deepEqual(recorder.recoveryFailed, []);
    assert.deepEqual(recorder.states.slice(0, 3), ['connecting', 'open', 'reconnecting']);
    assert.equal(recorder.states.at(-1), 'open');
  });

  test('close() then connect(): the subscriptions resume from where they were', async () => {
    const channel = 'room:close-connect';
    const { client, recorder } = await connected('wes');
    const { client: poster } = await connected('xena');
    await client.subscribe(channel);
    await poster.publish(channel, 1);
    await recorder.reached(channel, 1);
    client.close();
    assert.equal(client.state, 'closed');
    await poster.publish(channel, 2);
    await poster.publish(channel, 3);
    client.connect();
    await recorder.reached(channel, 3);
    assert.deepEqual(recorder.offsets(channel), [1, 2, 3]);
    assert.deepEqual(recorder.states, ['connecting', 'open', 'closed', 'connecting', 'open']);
  });

  test('too much missed to recover: recovery-failed, and the position moves to the latest offset', async () => {
    const channel = 'room:too-far';
    const network = await Network.create();
    const { client, recorder } = await connected('hank', { network });
    const { client: poster } = await connected('ivy');
    await client.subscribe(channel);
    await poster.publish(channel, 1);
    await recorder.reached(channel, 1);
    network.blocked = true;
    network.cut();
    await stateIs(client, 'reconnecting');
    // RECOVERY_MAX is 3 on this server.
    for (const n of range(5, 2)) await poster.publish(channel, n);
    const failed = nextEvent(client, 'recovery-failed');
    network.blocked = false;
    assert.deepEqual(await failed, { channel });
    await poster.publish(channel, 7);
    await recorder.reached(channel, 7);
    assert.deepEqual(recorder.offsets(channel), [1, 7]);
  });

  test('a push that skips ahead is filled from history before later pushes are delivered', async () => {
    const channel = 'room:gap';
    const network = await Network.create();
    const { client, recorder } = await connected('jack', { network });
    const admin = await server.token('jack');
    await client.subscribe(channel);
    network.dropIncoming = (frame) => frame.type === 'message' && frame.message.offset === 3;
    for (const n of range(6)) {
      const response = await server.http('POST', '/rooms/gap/messages', { token: admin, body: { data: { n } } });
      assert.equal(response.status, 201);
    }
    await recorder.reached(channel, 6);
    assert.deepEqual(recorder.offsets(channel), range(6));
    assert.deepEqual(
      network.sentOfType('history').map(({ before, limit }) => ({ before, limit })),
      [{ before: 4, limit: 1 }],
    );
  });

  test('a gap of more than a page is filled a page of 100 at a time, in order', async () => {
    const channel = 'room:long-gap';
    const network = await Network.create();
    const { client, recorder } = await connected('kate', { network });
    const { client: poster } = await connected('leo');
    await client.subscribe(channel);
    network.dropIncoming = (frame) =>
      frame.type === 'message' && frame.message.offset >= 5 && frame.message.offset <= 125;
    const published = [];
    for (const n of range(130)) published.push(poster.publish(channel, { n }));
    await Promise.all(published);
    await recorder.reached(channel, 130);
    assert.deepEqual(recorder.offsets(channel), range(130));
    assert.deepEqual(
      recorder.messages.map((m) => (m.data as { n: number }).n),
      range(130),
    );
    assert.deepEqual(
      network.sentOfType('history').map(({ before, limit }) => ({ before, limit })),
      [
        { before: 105, limit: 100 },
        { before: 126, limit: 21 },
      ],
    );
  });
});

describe('close codes and tokens', () => {
  let server: TestServer;
  const clients: ParleyClient[] = [];

  before(async () => {
    server = await startServer();
  });
  afterEach(() => {
    for (const client of clients.splice(0)) client.close();
  });
  after(() => server.close());

  /** Closes `user`'s connections from the server side with `code`, as the server itself would. */
  function serverCloses(user: string, code: number, reason: string): void {
    for (const connection of server.parley.gateway.connections) {
      if (connection.user === user) connection.close(code, reason);
    }
  }

  test('1008: offline, an unauthorized/forbidden error, no reconnect', async () => {
    const bad = makeClient(clients, { url: `${server.wsUrl}/ws`, token: 'not-a-jwt' });
    const error = nextEvent<ParleyError>(bad, 'error');
    bad.connect();
    assert.equal((await error).code, 'unauthorized');
    assert.equal(bad.state, 'offline');

    const forbidden = makeClient(clients, { url: `${server.wsUrl}/ws`, token: await server.token('mia') });
    const recorder = new Recorder(forbidden);
    forbidden.connect();
    await stateIs(forbidden, 'open');
    const refused = nextEvent<ParleyError>(forbidden, 'error');
    serverCloses('mia', 1008, 'forbidden');
    assert.equal((await refused).code, 'forbidden');
    assert.equal(forbidden.state, 'offline');
    await assert.rejects(forbidden.ping(), (e: ParleyError) => e.code === 'disconnected');
    // connect() starts again after the app has dealt with it.
    forbidden.connect();
    await stateIs(forbidden, 'open');
    assert.deepEqual(recorder.states, ['connecting', 'open', 'offline', 'connecting', 'open']);
  });

  test('1000 from the server: offline without an error', async () => {
    const client = makeClient(clients, { url: `${server.wsUrl}/ws`, token: await server.token('nina') });
    const errors: ParleyError[] = [];
    client.on('error', (e) => errors.push(e));
    client.connect();
    await stateIs(client, 'open');
    serverCloses('nina', 1000, 'normal');
    await stateIs(client, 'offline');
    assert.deepEqual(errors, []);
  });

  test('1009: a frame too large stops the client with too_large', async () => {
    const small = await startServer({ MAX_MESSAGE_BYTES: '1024' });
    try {
      const client = makeClient(clients, { url: `${small.wsUrl}/ws`, token: await small.token('olga') });
      client.connect();
      await stateIs(client, 'open');
      const error = nextEvent<ParleyError>(client, 'error');
      const publish = client.publish('room:big', { text: 'x'.repeat(4096) });
      assert.equal((await error).code, 'too_large');
      assert.equal(client.state, 'offline');
      await assert.rejects(publish, (e: ParleyError) => e.code === 'disconnected');
    } finally {
      await small.close();
    }
  });

  for (const code of [1011, 1013, 4008, 4009, 4002]) {
    test(`${code}: reconnects with backoff and resubscribes`, async () => {
      const client = makeClient(clients, { url: `${server.wsUrl}/ws`, token: await server.token('pete') });
      const recorder = new Recorder(client);
      client.connect();
      await client.subscribe('room:codes');
      serverCloses('pete', code, 'test');
      await recorder.until(() => recorder.welcomes.length === 2, 'a second welcome');
      const users = await client.presence('room:codes');
      assert.deepEqual(users, [{ user: 'pete', connections: 1 }]);
      assert.deepEqual(recorder.states, ['connecting', 'open', 'reconnecting', 'open']);
    });
  }

  /** The delays the client waited between consecutive connection attempts (each attempt's own set-up time included). */
  const gaps = (times: number[]) => times.slice(1).map((time, i) => time - (times[i] as number));
  /** With the jitter at its top, attempt n waits just under 20·2^n ms. */
  const growing = { initialMs: 20, maxMs: 5000, random: () => 0.9999 };
  const expected = [19, 39, 79, 159, 319];

  test('4008 right after every welcome: the reconnect delays keep growing, no tight loop', async () => {
    const network = await Network.create();
    const client = makeClient(clients, {
      url: `${server.wsUrl}/ws`,
      token: () => server.token('wade'),
      WebSocket: network.WebSocket,
      backoff: growing,
    });
    const recorder = new Recorder(client);
    // As a server over its message rate does: the connection is welcomed, then closed 4008.
    client.on('welcome', () => {
      if (recorder.welcomes.length <= expected.length) serverCloses('wade', 4008, 'rate limited');
    });
    client.connect();
    await recorder.until(() => recorder.welcomes.length === expected.length + 1, 'the last welcome', 5000);
    const waited = gaps(network.attemptedAt);
    assert.equal(waited.length, expected.length);
    for (const [n, delay] of expected.entries()) {
      assert.ok((waited[n] as number) >= delay, `attempt ${n + 1} waited ${waited[n]} ms, at least ${delay} expected`);
    }
    await client.ping();
    assert.equal(client.state, 'open');
  });

  test('1013 (too many connections for this user) again and again: backs off, and gets in once there is room', async () => {
    const limited = await startServer({ MAX_CONNECTIONS_PER_USER: '1' });
    try {
      const holder = makeClient(clients, { url: `${limited.wsUrl}/ws`, token: await limited.token('yuri') });
      holder.connect();
      await stateIs(holder, 'open');
      const network = await Network.create();
      const client = makeClient(clients, {
        url: `${limited.wsUrl}/ws`,
        token: () => limited.token('yuri'),
        WebSocket: network.WebSocket,
        backoff: growing,
      });
      const recorder = new Recorder(client);
      client.connect();
      await network.until(() => network.attemptedAt.length === expected.length + 1, 'refused attempts', 5000);
      const waited = gaps(network.attemptedAt);
      for (const [n, delay] of expected.entries()) {
        assert.ok(
          (waited[n] as number) >= delay,
          `attempt ${n + 1} waited ${waited[n]} ms, at least ${delay} expected`,
        );
      }
      assert.equal(recorder.welcomes.length, 0);
      holder.close();
      await recorder.until(() => recorder.welcomes.length === 1, 'a welcome once the other connection is gone');
    } finally {
      await limited.close();
    }
  });

  test('1001: reconnects after a random pause of at most 5 s', async () => {
    const client = makeClient(clients, {
      url: `${server.wsUrl}/ws`,
      token: await server.token('quinn'),
      // Were backoff used instead, the pause could be up to a minute.
      backoff: { initialMs: 60_000, maxMs: 60_000 },
    });
    const recorder = new Recorder(client);
    client.connect();
    await stateIs(client, 'open');
    serverCloses('quinn', 1001, 'server shutting down');
    await recorder.until(() => recorder.welcomes.length === 2, 'a second welcome', 7000);
  });

  test('4001 on a live connection: the getter gives a fresh token and the client reconnects at once', async () => {
    let calls = 0;
    const client = makeClient(clients, {
      url: `${server.wsUrl}/ws`,
      token: () => {
        calls++;
        return server.token('rita');
      },
      backoff: { initialMs: 60_000, maxMs: 60_000 },
    });
    const recorder = new Recorder(client);
    client.connect();
    await stateIs(client, 'open');
    assert.equal(calls, 1);
    serverCloses('rita', 4001, 'token expired');
    await recorder.until(() => recorder.welcomes.length === 2, 'a second welcome', 3000);
    assert.equal(calls, 2);
  });

  test('4001 at connect (the getter gave an expired token): asks the getter again and gets in', async () => {
    const tokens = [await server.token('sam', 'user', { ttl: -60 }), await server.token('sam')];
    let calls = 0;
    const client = makeClient(clients, {
      url: `${server.wsUrl}/ws`,
      token: () => tokens[Math.min(calls++, 1)] as string,
    });
    client.connect();
    const welcome = await nextEvent<{ user: string }>(client, 'welcome');
    assert.equal(welcome.user, 'sam');
    assert.equal(calls, 2);
  });

  test('4001 with a fixed token: offline with unauthorized, since it cannot be renewed', async () => {
    const client = makeClient(clients, { url: `${server.wsUrl}/ws`, token: await server.token('tom') });
    client.connect();
    await stateIs(client, 'open');
    const error = nextEvent<ParleyError>(client, 'error');
    serverCloses('tom', 4001, 'token expired');
    assert.equal((await error).code, 'unauthorized');
    assert.equal(client.state, 'offline');
  });

  test('a token getter that fails is retried; one that throws ParleyError unauthorized stops the client', async () => {
    let calls = 0;
    const flaky = makeClient(clients, {
      url: `${server.wsUrl}/ws`,
      token: () => {
        calls++;
        if (calls === 1) throw new Error('identity provider unreachable');
        return server.token('vera');
      },
    });
    const failed = nextEvent<ParleyError>(flaky, 'error');
    flaky.connect();
    const error = await failed;
    assert.equal(error.code, 'unavailable');
    assert.equal((error.cause as Error).message, 'identity provider unreachable');
    await stateIs(flaky, 'open');
    assert.equal(calls, 2);

    const signedOut = makeClient(clients, {
      url: `${server.wsUrl}/ws`,
      token: () => {
        throw new ParleyError('unauthorized', 'signed out');
      },
    });
    const stopped = nextEvent<ParleyError>(signedOut, 'error');
    signedOut.connect();
    assert.equal((await stopped).message, 'signed out');
    assert.equal(signedOut.state, 'offline');
  });

  test('refresh before expiry keeps the connection past the first token’s expiry', async () => {
    const issued: Array<{ at: number; exp: number }> = [];
    const ttl = 2;
    let firstExpiredAt = Number.POSITIVE_INFINITY;
    let resolvePast: () => void = () => {};
    const pastFirstExpiry = new Promise<void>((resolve) => {
      resolvePast = resolve;
    });
    const refreshing = makeClient(clients, {
      url: `${server.wsUrl}/ws`,
      token: async () => {
        const { token, expiresIn } = await server.parley.ctx.tokens.issue('uma', 'user', { ttl });
        const now = Date.now();
        issued.push({ at: now, exp: now + expiresIn * 1000 });
        if (issued.length === 1) {
          // The server closes at exp plus 5 s of skew, checked once a second.
          firstExpiredAt = Math.ceil(now / 1000 + ttl) * 1000 + 5000 + 1500;
        }
        if (now > firstExpiredAt) resolvePast();
        return token;
      },
      refreshMarginMs: 60_000,
    });
    // The same kind of token, never refreshed, is closed 4001: the server does enforce expiry.
    const fixed = makeClient(clients, {
      url: `${server.wsUrl}/ws`,
      token: (await server.parley.ctx.tokens.issue('uma', 'user', { ttl })).token,
    });
    const recorder = new Recorder(refreshing);
    const fixedExpired = nextEvent<ParleyError>(fixed, 'error', undefined, 15_000);
    refreshing.connect();
    fixed.connect();
    await stateIs(refreshing, 'open');
    await pastFirstExpiry;
    assert.equal((await fixedExpired).code, 'unauthorized');
    await refreshing.ping();
    assert.equal(recorder.welcomes.length, 1);
    assert.deepEqual(recorder.states, ['connecting', 'open']);
    assert.ok(issued.length >= 3, `refreshed ${issued.length - 1} times`);
  });
});

describe('liveness', () => {
  let server: TestServer;
  const clients: ParleyClient[] = [];

  before(async () => {
    // The welcome tells clients the heartbeat: idle this long, they ping.
    server = await startServer({ HEARTBEAT_MS: '300' });
  });
  afterEach(() => {
    for (const client of clients.splice(0)) client.close();
  });
  after(() => server.close());

  test('a link that goes silent: the client pings, gets no answer, reconnects and misses nothing', async () => {
    const channel = 'room:silent-link';
    const proxy = await startStallingProxy({ host: '127.0.0.1', port: Number(new URL(server.url).port) });
    try {
      const network = await Network.create();
      const client = makeClient(clients, {
        url: `ws://127.0.0.1:${proxy.port}/ws`,
        token: () => server.token('lars'),
        WebSocket: network.WebSocket,
      });
      const poster = makeClient(clients, { url: `${server.wsUrl}/ws`, token: () => server.token('mona') });
      const recorder = new Recorder(client);
      client.connect();
      poster.connect();
      await client.subscribe(channel);
      await poster.publish(channel, { n: 1 });
      await recorder.reached(channel, 1);

      // Idle on a healthy link: pings go out, are answered, and the connection stays.
      await network.until(() => network.sentOfType('ping').length >= 2, 'pings while idle');
      assert.equal(recorder.welcomes.length, 1);

      proxy.stall();
      for (const n of range(4, 2)) await poster.publish(channel, { n });
      await recorder.until(() => recorder.welcomes.length === 2, 'a new connection after the silence', 5000);
      assert.deepEqual(
        network.closes,
        [{ code: 4000, reason: 'no answer to ping' }],
        'the client gave up on the silent socket itself',
      );
      assert.equal(proxy.accepted, 2, 'and opened one new connection');
      await recorder.reached(channel, 5);
      assert.deepEqual(recorder.offsets(channel), range(5));
      assert.deepEqual(
        recorder.messages.map((m) => (m.data as { n: number }).n),
        range(5),
      );
      assert.deepEqual(recorder.recoveryFailed, []);
      assert.deepEqual(recorder.states, ['connecting', 'open', 'reconnecting', 'open']);
    } finally {
      for (const client of clients.splice(0)) client.close();
      await proxy.close();
    }
  });
});
