import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dmChannel, parseChannel } from '../src/channels/names.ts';
import { type ErrorCode, ParleyError } from '../src/errors.ts';

/** Asserts parseChannel rejects `channel` with `code`, returning the error message. */
function rejects(channel: unknown, code: ErrorCode): string {
  let caught: unknown;
  try {
    parseChannel(channel);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ParleyError, `${JSON.stringify(channel)} should be rejected, got ${String(caught)}`);
  assert.equal(caught.code, code, `${JSON.stringify(channel)}: ${caught.message}`);
  return caught.message;
}

const NAME_64 = `${'a'.repeat(60)}Z9_.`;
const NAME_65 = `${NAME_64}-`;

describe('parseChannel: valid names', () => {
  it('room', () => {
    assert.deepEqual(parseChannel('room:general'), { channel: 'room:general', namespace: 'room', name: 'general' });
  });

  it('topic', () => {
    assert.deepEqual(parseChannel('topic:deploys'), { channel: 'topic:deploys', namespace: 'topic', name: 'deploys' });
  });

  it('user', () => {
    assert.deepEqual(parseChannel('user:alice'), { channel: 'user:alice', namespace: 'user', name: 'alice' });
  });

  it('dm, with its two members', () => {
    assert.deepEqual(parseChannel('dm:alice:bob'), {
      channel: 'dm:alice:bob',
      namespace: 'dm',
      name: 'alice:bob',
      members: ['alice', 'bob'],
    });
    // Sorted by code unit: upper case before lower case, digits before letters.
    assert.deepEqual(parseChannel('dm:Bob:alice').members, ['Bob', 'alice']);
    assert.deepEqual(parseChannel('dm:1user:a').members, ['1user', 'a']);
  });

  it('every allowed character: A-Z a-z 0-9 _ . -', () => {
    for (const name of ['ABCXYZ', 'abcxyz', '0123456789', '_', '.', '-', 'a.b-c_D9', '...', 'x']) {
      for (const namespace of ['room', 'topic', 'user']) {
        assert.equal(parseChannel(`${namespace}:${name}`).name, name);
      }
    }
  });

  it('a name of 64 characters', () => {
    assert.equal(NAME_64.length, 64);
    for (const namespace of ['room', 'topic', 'user']) {
      assert.equal(parseChannel(`${namespace}:${NAME_64}`).name, NAME_64);
    }
    const other = `b${NAME_64.slice(1)}`;
    assert.deepEqual(parseChannel(`dm:${NAME_64}:${other}`).members, [NAME_64, other]);
  });
});

describe('parseChannel: invalid names', () => {
  it('a name of 65 characters is bad_request', () => {
    assert.equal(NAME_65.length, 65);
    for (const namespace of ['room', 'topic', 'user']) rejects(`${namespace}:${NAME_65}`, 'bad_request');
    rejects(`dm:${NAME_65}:zz`, 'bad_request');
    rejects(`dm:a:${NAME_65}`, 'bad_request');
  });

  it('an empty name is bad_request', () => {
    for (const channel of ['room:', 'topic:', 'user:', 'dm:', 'dm::', 'dm:a:', 'dm::b'])
      rejects(channel, 'bad_request');
  });

  it('characters outside A-Z a-z 0-9 _ . - are bad_request', () => {
    for (const name of [
      'has space',
      'slash/name',
      'at@sign',
      'hash#',
      'ünïcode',
      'emoji🎉',
      'tab\t',
      'new\nline',
      'a:b',
      'a*',
      '%20',
    ]) {
      rejects(`room:${name}`, 'bad_request');
      rejects(`topic:${name}`, 'bad_request');
    }
    rejects('dm:al ice:bob', 'bad_request');
    rejects('dm:alice:b*b', 'bad_request');
  });

  it('a missing namespace is bad_request', () => {
    for (const channel of ['general', ':general', '', ':']) {
      assert.match(rejects(channel, 'bad_request'), /namespace:name/);
    }
  });

  it('a value that is not a string, or too long, is bad_request', () => {
    for (const channel of [undefined, null, 42, {}, ['room:a']]) rejects(channel, 'bad_request');
    rejects(`room:${'a'.repeat(200)}`, 'bad_request');
  });

  it('an unknown namespace is forbidden (deny by default)', () => {
    for (const channel of ['chat:general', 'ROOM:general', 'Room:general', 'rooms:general', 'admin:x', '__proto__:x']) {
      const message = rejects(channel, 'forbidden');
      assert.match(message, /namespace/);
    }
  });

  it('a dm with unsorted users is bad_request, saying which name to use', () => {
    const message = rejects('dm:bob:alice', 'bad_request');
    assert.match(message, /sorted/);
    assert.ok(message.includes('dm:alice:bob'), `suggests the sorted name: ${message}`);
    assert.ok(rejects('dm:alice:Bob', 'bad_request').includes('dm:Bob:alice'));
  });

  it('a dm with the same user twice is bad_request', () => {
    assert.match(rejects('dm:alice:alice', 'bad_request'), /distinct/);
  });

  it('a dm without exactly two users is bad_request', () => {
    for (const channel of ['dm:alice', 'dm:alice:bob:carol', 'dm:a:b:']) {
      assert.match(rejects(channel, 'bad_request'), /dm:<user>:<user>/);
    }
  });
});

describe('dmChannel', () => {
  it('names the dm between two users in sorted order', () => {
    assert.equal(dmChannel('alice', 'bob'), 'dm:alice:bob');
    assert.equal(dmChannel('bob', 'alice'), 'dm:alice:bob');
    assert.equal(dmChannel('alice', 'Bob'), 'dm:Bob:alice');
    const channel = dmChannel('zed', 'amy');
    assert.deepEqual(parseChannel(channel).members, ['amy', 'zed']);
  });
});
