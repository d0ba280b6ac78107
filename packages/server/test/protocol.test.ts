import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  encodeMessagePush,
  errorText,
  eventText,
  messageJson,
  messagePushText,
  replyText,
} from '../src/realtime/frames.ts';
import { type Command, looksLikeCommand, type ParseResult, parseClientFrame } from '../src/realtime/protocol.ts';
import type { StoredMessage } from '../src/store/store.ts';

/** The wire codec as pure functions: no sockets (ARCHITECTURE "Wire codec tested without sockets"). */

const parse = (frame: unknown): ParseResult =>
  parseClientFrame(typeof frame === 'string' ? frame : JSON.stringify(frame));

/** Asserts the frame parses and returns the command. */
function ok(frame: unknown): Command {
  const result = parse(frame);
  if (!result.ok) assert.fail(`expected ${JSON.stringify(frame)} to parse, got: ${result.message}`);
  return result.command;
}

/** Asserts the frame is rejected as bad_request and returns the failure. */
function bad(frame: unknown, expected: { id?: number | undefined; message?: RegExp } = {}) {
  const result = parse(frame);
  if (result.ok) assert.fail(`expected ${JSON.stringify(frame)} to be rejected`);
  assert.equal(result.code, 'bad_request');
  assert.equal(result.id, expected.id, 'error id');
  assert.equal(typeof result.message, 'string');
  assert.ok(result.message.length > 0);
  if (expected.message) assert.match(result.message, expected.message);
  return result;
}

describe('parseClientFrame: valid commands', () => {
  it('auth', () => {
    assert.deepEqual(ok({ type: 'auth', token: 'a.b.c' }), { type: 'auth', token: 'a.b.c', id: undefined });
  });

  it('subscribe, with and without since', () => {
    assert.deepEqual(ok({ type: 'subscribe', channel: 'room:general', id: 1 }), {
      type: 'subscribe',
      channel: 'room:general',
      id: 1,
    });
    const since = { offset: 0, epoch: 'e1' };
    assert.deepEqual(ok({ type: 'subscribe', channel: 'room:general', since }), {
      type: 'subscribe',
      channel: 'room:general',
      since,
      id: undefined,
    });
    ok({ type: 'subscribe', channel: 'room:general', since: { offset: Number.MAX_SAFE_INTEGER, epoch: '' } });
  });

  it('unsubscribe', () => {
    assert.deepEqual(ok({ type: 'unsubscribe', channel: 'topic:x', id: 7 }), {
      type: 'unsubscribe',
      channel: 'topic:x',
      id: 7,
    });
  });

  it('publish with any JSON data', () => {
    for (const data of [{ text: 'hi' }, 'a string', '', 42, -1.5, 0, true, false, null, [], [1, { a: [2] }], {}]) {
      const command = ok({ type: 'publish', channel: 'room:a', data, id: 3 });
      assert.equal(command.type, 'publish');
      assert.deepEqual(command.type === 'publish' && command.data, data);
    }
  });

  it('publish with an idempotencyKey of 1 to 64 characters', () => {
    for (const key of ['k', 'x'.repeat(64), 'ünï-cødé 🎉']) {
      const command = ok({ type: 'publish', channel: 'room:a', data: 1, idempotencyKey: key });
      assert.equal(command.type === 'publish' && command.idempotencyKey, key);
    }
  });

  it('history with and without before/limit', () => {
    assert.deepEqual(ok({ type: 'history', channel: 'room:a' }), { type: 'history', channel: 'room:a', id: undefined });
    assert.deepEqual(ok({ type: 'history', channel: 'room:a', before: 1, limit: 1, id: 2 }), {
      type: 'history',
      channel: 'room:a',
      before: 1,
      limit: 1,
      id: 2,
    });
    ok({ type: 'history', channel: 'room:a', limit: 100 });
    ok({ type: 'history', channel: 'room:a', before: Number.MAX_SAFE_INTEGER });
  });

  it('presence, typing, refresh, ping', () => {
    assert.deepEqual(ok({ type: 'presence', channel: 'room:a', id: 1 }), {
      type: 'presence',
      channel: 'room:a',
      id: 1,
    });
    assert.deepEqual(ok({ type: 'typing', channel: 'room:a' }), { type: 'typing', channel: 'room:a', id: undefined });
    assert.deepEqual(ok({ type: 'refresh', token: 't', id: 5 }), { type: 'refresh', token: 't', id: 5 });
    assert.deepEqual(ok({ type: 'ping', id: 9 }), { type: 'ping', id: 9 });
    assert.deepEqual(ok('{"type":"ping"}'), { type: 'ping', id: undefined });
  });

  it('accepts the largest safe integer as id', () => {
    assert.equal(ok({ type: 'ping', id: Number.MAX_SAFE_INTEGER }).id, Number.MAX_SAFE_INTEGER);
  });

  it('treats id null as absent', () => {
    const command = ok({ type: 'ping', id: null });
    assert.equal(command.id, undefined);
    const failure = bad({ type: 'subscribe', id: null });
    assert.equal(failure.id, undefined);
  });

  it('allows extra unknown fields', () => {
    const command = ok({ type: 'subscribe', channel: 'room:a', id: 4, client: 'cli/1.0', extra: { nested: true } });
    assert.equal(command.type, 'subscribe');
    assert.equal(command.id, 4);
    ok({ type: 'ping', whatever: [1, 2, 3] });
    ok({ type: 'subscribe', channel: 'room:a', since: { offset: 1, epoch: 'e', more: 1 } });
  });

  it('accepts surrounding whitespace', () => {
    ok('  \n{"type":"ping","id":1}\n ');
  });
});

describe('parseClientFrame: invalid frames', () => {
  it('rejects text that is not JSON, without an id', () => {
    for (const text of ['', 'hello', '{', '{"type":"ping",}', "{'type':'ping'}", '{"type":"ping"} trailing']) {
      bad(text, { message: /JSON/ });
    }
  });

  it('rejects JSON that is not an object, without an id', () => {
    for (const text of ['[]', '[{"type":"ping","id":1}]', 'null', '42', '"ping"', 'true']) {
      bad(text, { message: /object/ });
    }
  });

  it('rejects a missing or non-string type, keeping the id', () => {
    bad({ id: 3 }, { id: 3, message: /type/ });
    bad({ id: 4, type: 5 }, { id: 4, message: /type/ });
    bad({ type: null }, { message: /type/ });
    bad({}, { message: /type/ });
  });

  it('rejects an unknown type, keeping the id', () => {
    bad({ type: 'shout', id: 12 }, { id: 12, message: /unknown command type "shout"/ });
    bad({ type: 'shout' }, { message: /shout/ });
    bad({ type: 'welcome', id: 1 }, { id: 1 });
    bad({ type: 'PING', id: 1 }, { id: 1 });
    bad({ type: '', id: 1 }, { id: 1 });
  });

  it('does not take inherited property names for command types', () => {
    for (const type of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
      bad(`{"type":${JSON.stringify(type)},"id":2}`, { id: 2, message: /unknown command type/ });
    }
  });

  it('truncates a very long type in the message', () => {
    const type = `${'a'.repeat(40)}${'b'.repeat(10_000)}`;
    const failure = bad({ type, id: 1 }, { id: 1 });
    assert.ok(failure.message.includes('a'.repeat(40)));
    assert.ok(!failure.message.includes('b'), 'the tail is cut off');
    assert.ok(failure.message.length < 100, `message is short: ${failure.message.length} chars`);
  });

  it('rejects an id that is not a positive safe integer, answering without an id', () => {
    for (const id of [0, -1, 1.5, '1', 2 ** 53, true, [1], { n: 1 }, Number.MAX_SAFE_INTEGER + 2]) {
      bad({ type: 'ping', id }, { id: undefined, message: /id/ });
    }
    bad('{"type":"ping","id":1e400}', { id: undefined });
  });

  it('rejects subscribe without a channel, or with a bad one', () => {
    bad({ type: 'subscribe', id: 1 }, { id: 1, message: /channel/ });
    bad({ type: 'subscribe', channel: '', id: 1 }, { id: 1, message: /channel/ });
    bad({ type: 'subscribe', channel: 5, id: 1 }, { id: 1, message: /channel/ });
    bad({ type: 'subscribe', channel: `room:${'x'.repeat(200)}`, id: 1 }, { id: 1, message: /channel/ });
    bad({ type: 'unsubscribe', id: 1 }, { id: 1, message: /channel/ });
    bad({ type: 'presence', id: 1 }, { id: 1, message: /channel/ });
    bad({ type: 'typing' }, { message: /channel/ });
  });

  it('rejects a since that is not {offset, epoch} with a non-negative integer offset', () => {
    const sub = (since: unknown) => ({ type: 'subscribe', channel: 'room:a', since, id: 6 });
    bad(sub({ offset: -1, epoch: 'e' }), { id: 6, message: /since\.offset/ });
    bad(sub({ offset: 1.5, epoch: 'e' }), { id: 6, message: /since\.offset/ });
    bad(sub({ offset: '1', epoch: 'e' }), { id: 6, message: /since\.offset/ });
    bad(sub({ offset: 1 }), { id: 6, message: /since\.epoch/ });
    bad(sub({ epoch: 'e' }), { id: 6, message: /since\.offset/ });
    bad(sub(5), { id: 6, message: /since/ });
    bad(sub(null), { id: 6, message: /since/ });
  });

  it('rejects publish without data or channel', () => {
    bad({ type: 'publish', channel: 'room:a', id: 8 }, { id: 8, message: /data/ });
    bad({ type: 'publish', data: 1, id: 8 }, { id: 8, message: /channel/ });
  });

  it('rejects an idempotencyKey that is empty, longer than 64 or not a string', () => {
    const pub = (idempotencyKey: unknown) => ({ type: 'publish', channel: 'room:a', data: 1, idempotencyKey, id: 9 });
    bad(pub(''), { id: 9, message: /idempotencyKey/ });
    bad(pub('x'.repeat(65)), { id: 9, message: /idempotencyKey/ });
    bad(pub(5), { id: 9, message: /idempotencyKey/ });
    bad(pub(null), { id: 9, message: /idempotencyKey/ });
  });

  it('rejects a history limit outside 1–100 and a before below 1', () => {
    const history = (fields: Record<string, unknown>) => ({ type: 'history', channel: 'room:a', id: 10, ...fields });
    bad(history({ limit: 0 }), { id: 10, message: /limit/ });
    bad(history({ limit: 101 }), { id: 10, message: /limit/ });
    bad(history({ limit: -5 }), { id: 10, message: /limit/ });
    bad(history({ limit: 2.5 }), { id: 10, message: /limit/ });
    bad(history({ limit: '10' }), { id: 10, message: /limit/ });
    ok(history({ limit: 1 }));
    ok(history({ limit: 100 }));
    bad(history({ before: 0 }), { id: 10, message: /before/ });
    bad(history({ before: -1 }), { id: 10, message: /before/ });
    bad(history({ before: 1.5 }), { id: 10, message: /before/ });
  });

  it('rejects auth and refresh without a token', () => {
    bad({ type: 'auth' }, { message: /token/ });
    bad({ type: 'auth', token: '' }, { message: /token/ });
    bad({ type: 'refresh', id: 2 }, { id: 2, message: /token/ });
    bad({ type: 'refresh', token: 42, id: 2 }, { id: 2, message: /token/ });
  });
});

describe('looksLikeCommand', () => {
  it('is true for a JSON object with a string type', () => {
    for (const text of ['{"type":"ping"}', '  {"type":"subscribe","channel":"room:a"}', '\n{"type":"anything"}']) {
      assert.equal(looksLikeCommand(text), true, text);
    }
  });

  it('is false for anything else', () => {
    for (const text of [
      '',
      '   ',
      'hello',
      'type',
      '{not json',
      '{"text":"hi"}',
      '{}',
      '{"type":5}',
      '{"type":null}',
      '[{"type":"ping"}]',
      '"{\\"type\\":\\"ping\\"}"',
      '42',
      'null',
      'hello {"type":"ping"}',
    ]) {
      assert.equal(looksLikeCommand(text), false, text);
    }
  });
});

describe('frame encoders', () => {
  const awkward = ['room:general', 'room:"quoted"\\back', 'room:line\nbreak\ttab', 'room:ünï🎉\u2028\u0001</script>'];

  const message = (channel: string): StoredMessage => ({
    id: '7f1c8f1e-0000-4000-8000-000000000000',
    channel,
    offset: 42,
    epoch: 'epoch-1',
    from: 'alice',
    data: { text: 'hi "there"\n', list: [1, null, { deep: '🎉' }] },
    ts: '2026-11-22T10:00:00.000Z',
  });

  /** The text is valid JSON and exactly what JSON.stringify gives for the equivalent object. */
  function same(text: string, equivalent: unknown): void {
    assert.deepEqual(JSON.parse(text), equivalent);
    assert.equal(text, JSON.stringify(equivalent));
  }

  it('messagePushText and encodeMessagePush', () => {
    for (const channel of awkward) {
      const m = message(channel);
      const expected = { type: 'message', channel, message: m };
      same(messagePushText(channel, JSON.stringify(m)), expected);
      const bytes = encodeMessagePush(m);
      assert.ok(Buffer.isBuffer(bytes));
      same(bytes.toString('utf8'), expected);
    }
  });

  it('messageJson is JSON.stringify of the message, given its data as JSON', () => {
    for (const channel of awkward) {
      for (const data of [{ text: 'hi' }, null, 0, -1.5e-7, 'a "quoted"\nline', [1, [2, { x: '🎉\u2028' }]], {}]) {
        const m = { ...message(channel), from: 'al"ice\\', epoch: 'e\u0001', data };
        assert.equal(messageJson(m, JSON.stringify(data)), JSON.stringify(m));
      }
    }
  });

  it('replyText', () => {
    const result = { channel: awkward[1], offset: 3, epoch: 'e', recovered: false, messages: [] };
    same(replyText(1, JSON.stringify(result)), { id: 1, type: 'reply', result });
    same(replyText(Number.MAX_SAFE_INTEGER, '{}'), { id: Number.MAX_SAFE_INTEGER, type: 'reply', result: {} });
  });

  it('errorText with and without an id', () => {
    for (const text of ['plain', 'unknown command type "x\\"y"\n', '🎉 ünï \u2028']) {
      same(errorText(5, 'bad_request', text), { id: 5, type: 'error', error: { code: 'bad_request', message: text } });
      same(errorText(undefined, 'forbidden', text), { type: 'error', error: { code: 'forbidden', message: text } });
    }
  });

  it('eventText', () => {
    for (const type of ['join', 'leave', 'typing'] as const) {
      for (const channel of awkward) {
        same(eventText(type, channel, 'zoë'), { type, channel, user: 'zoë' });
      }
    }
  });
});
