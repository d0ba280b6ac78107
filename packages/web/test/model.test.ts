import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  applyTaskEvent,
  type ChatMessage,
  DraftKeys,
  describeNotification,
  dmChannel,
  dmPartner,
  dmStartedBy,
  mergeMessages,
  messageText,
  parseRoute,
  roomAddedTo,
  routeHash,
  startsGroup,
  type Task,
  TypingThrottle,
  typingText,
} from '../src/model.ts';

function message(offset: number, extra: Partial<ChatMessage> = {}): ChatMessage {
  return {
    id: `m${offset}`,
    channel: 'room:general',
    offset,
    epoch: 'e1',
    from: 'alice',
    data: { text: `#${offset}` },
    ts: new Date(Date.UTC(2026, 0, 1, 10, 0, offset)).toISOString(),
    ...extra,
  };
}

function task(id: string, updatedAt: string, extra: Partial<Task> = {}): Task {
  return {
    id,
    title: `task ${id}`,
    description: '',
    done: false,
    createdBy: 'alice',
    createdAt: '2026-01-01T10:00:00.000Z',
    updatedAt,
    ...extra,
  };
}

describe('channel names', () => {
  test('a DM channel sorts its two users as the server does (by code unit)', () => {
    assert.equal(dmChannel('bob', 'alice'), 'dm:alice:bob');
    assert.equal(dmChannel('alice', 'bob'), 'dm:alice:bob');
    // Upper case sorts before lower case by code unit, unlike localeCompare.
    assert.equal(dmChannel('alice', 'Zed'), 'dm:Zed:alice');
  });

  test('the partner of a DM is the other user, and nobody for a channel I am not in', () => {
    assert.equal(dmPartner('dm:alice:bob', 'alice'), 'bob');
    assert.equal(dmPartner('dm:alice:bob', 'bob'), 'alice');
    assert.equal(dmPartner('dm:alice:bob', 'carol'), undefined);
    assert.equal(dmPartner('room:general', 'alice'), undefined);
  });
});

describe('mergeMessages', () => {
  test('orders by offset and keeps each offset once when pages and pushes overlap', () => {
    const merged = mergeMessages([message(3), message(4)], [message(1), message(2), message(3)]);
    assert.deepEqual(
      merged.map((m) => m.offset),
      [1, 2, 3, 4],
    );
  });

  test('a message from a new epoch replaces the list: offsets of a lost history are not comparable', () => {
    const merged = mergeMessages([message(7), message(8)], [message(1, { epoch: 'e2', id: 'n1' })]);
    assert.deepEqual(
      merged.map((m) => [m.epoch, m.offset]),
      [['e2', 1]],
    );
  });

  test('nothing incoming leaves the list as it was', () => {
    assert.deepEqual(mergeMessages([message(1)], []), [message(1)]);
  });
});

describe('message text', () => {
  test('is data.text when the web client sent it, else the JSON, so nothing is hidden', () => {
    assert.equal(messageText({ text: 'hi' }), 'hi');
    assert.equal(messageText('plain'), 'plain');
    assert.equal(messageText({ version: '1.4.2' }), '{"version":"1.4.2"}');
    assert.equal(messageText(42), '42');
    assert.equal(messageText(null), 'null');
  });

  test('a new group starts with another author, after five minutes, or on another day', () => {
    const first = message(1);
    assert.equal(startsGroup(undefined, first), true);
    assert.equal(startsGroup(first, message(2)), false);
    assert.equal(startsGroup(first, message(2, { from: 'bob' })), true);
    assert.equal(startsGroup(first, message(2, { ts: '2026-01-01T10:06:00.000Z' })), true);
  });
});

describe('task events', () => {
  test('created, updated and deleted are applied; an older update does not undo a newer state', () => {
    const deleted = new Set<string>();
    let tasks = applyTaskEvent([], { event: 'task.created', task: task('1', '2026-01-01T10:00:00.000Z') }, deleted);
    tasks = applyTaskEvent(
      tasks,
      { event: 'task.updated', task: task('1', '2026-01-01T10:02:00.000Z', { done: true }) },
      deleted,
    );
    tasks = applyTaskEvent(
      tasks,
      { event: 'task.updated', task: task('1', '2026-01-01T10:01:00.000Z', { title: 'stale' }) },
      deleted,
    );
    assert.equal(tasks.length, 1);
    assert.equal(tasks[0]!.done, true);
    assert.equal(tasks[0]!.title, 'task 1');
    tasks = applyTaskEvent(tasks, { event: 'task.deleted', task: tasks[0]! }, deleted);
    assert.deepEqual(tasks, []);
  });

  test('a late update does not bring a deleted task back', () => {
    const deleted = new Set<string>();
    const gone = applyTaskEvent(
      [task('1', '2026-01-01T10:00:00.000Z')],
      { event: 'task.deleted', task: task('1', '2026-01-01T10:00:00.000Z') },
      deleted,
    );
    const after = applyTaskEvent(gone, { event: 'task.updated', task: task('1', '2026-01-01T10:05:00.000Z') }, deleted);
    assert.deepEqual(after, []);
  });

  test('notifications read as sentences, naming who did it', () => {
    const event = (data: unknown, from = 'bob') => message(1, { channel: 'topic:tasks', data, from });
    const t = task('1', '2026-01-01T10:00:00.000Z', { title: 'Ship it' });
    assert.equal(
      describeNotification(event({ event: 'task.created', task: t }), 'alice'),
      'bob added the task “Ship it”',
    );
    assert.equal(
      describeNotification(event({ event: 'task.updated', task: { ...t, done: true } }, 'alice'), 'alice'),
      'You completed “Ship it”',
    );
    assert.equal(
      describeNotification(event({ event: 'task.deleted', task: t }), 'alice'),
      'bob deleted the task “Ship it”',
    );
    assert.equal(
      describeNotification(event({ title: 'Deploy', body: 'v1.4.2 is live' }), 'alice'),
      'Deploy: v1.4.2 is live',
    );
    assert.equal(describeNotification(event({ text: 'hello' }), 'alice'), 'hello');
  });
});

describe('typing', () => {
  test('a notice goes out at most once per interval while typing, and at once after a send', () => {
    const throttle = new TypingThrottle(2000);
    assert.equal(throttle.shouldSend(10_000), true);
    assert.equal(throttle.shouldSend(10_500), false);
    assert.equal(throttle.shouldSend(11_999), false);
    assert.equal(throttle.shouldSend(12_000), true);
    throttle.reset();
    assert.equal(throttle.shouldSend(12_100), true);
  });

  test('the typing line names one or two people and counts more', () => {
    assert.equal(typingText([]), '');
    assert.equal(typingText(['bob']), 'bob is typing…');
    assert.equal(typingText(['bob', 'carol']), 'bob and carol are typing…');
    assert.equal(typingText(['bob', 'carol', 'dan']), '3 people are typing…');
  });
});

describe('routes', () => {
  test('round-trip through the URL hash; anything unknown is home', () => {
    for (const route of [
      { view: 'room', room: 'general' },
      { view: 'dm', user: 'bob' },
      { view: 'tasks' },
      { view: 'notifications' },
    ] as const) {
      assert.deepEqual(parseRoute(routeHash(route)), route);
    }
    assert.deepEqual(parseRoute(''), { view: 'home' });
    assert.deepEqual(parseRoute('#/room/not a name'), { view: 'home' });
    assert.deepEqual(parseRoute('#/room/%E0%A4%A'), { view: 'home' });
    assert.deepEqual(parseRoute('#/elsewhere'), { view: 'home' });
  });
});

describe('DMs started by others', () => {
  const notice = (data: unknown, channel = 'user:bob') => message(1, { channel, from: 'alice', data });

  test('a dm.started on user:<me> names the partner, and reads as a sentence in the panel', () => {
    const started = notice({ event: 'dm.started', channel: 'dm:alice:bob', from: 'alice' });
    assert.equal(dmStartedBy(started, 'bob'), 'alice');
    assert.equal(describeNotification(started, 'bob'), 'alice sent you a direct message');
  });

  test('anything else is not one: another user channel, a DM without me, other events, other shapes', () => {
    assert.equal(dmStartedBy(notice({ event: 'dm.started', channel: 'dm:alice:bob' }, 'user:carol'), 'bob'), undefined);
    assert.equal(dmStartedBy(notice({ event: 'dm.started', channel: 'dm:alice:carol' }), 'bob'), undefined);
    assert.equal(dmStartedBy(notice({ event: 'dm.started', channel: 'room:general' }), 'bob'), undefined);
    assert.equal(dmStartedBy(notice({ event: 'task.created', channel: 'dm:alice:bob' }), 'bob'), undefined);
    assert.equal(dmStartedBy(notice({ event: 'dm.started' }), 'bob'), undefined);
    assert.equal(dmStartedBy(notice('dm.started'), 'bob'), undefined);
    assert.equal(dmStartedBy(notice(null), 'bob'), undefined);
  });
});

describe('added to a private room', () => {
  const notice = (data: unknown, channel = 'user:bob') => message(1, { channel, from: 'alice', data });

  test('a room.added on user:<me> names the room, and reads as a sentence in the panel', () => {
    const added = notice({ event: 'room.added', room: 'launch-plans', by: 'alice' });
    assert.equal(roomAddedTo(added, 'bob'), 'launch-plans');
    assert.equal(describeNotification(added, 'bob'), 'alice added you to #launch-plans');
  });

  test('anything else is not one: another user channel, a bad room name, other events', () => {
    assert.equal(roomAddedTo(notice({ event: 'room.added', room: 'x' }, 'user:carol'), 'bob'), undefined);
    assert.equal(roomAddedTo(notice({ event: 'room.added', room: 'not a name' }), 'bob'), undefined);
    assert.equal(roomAddedTo(notice({ event: 'room.added' }), 'bob'), undefined);
    assert.equal(roomAddedTo(notice({ event: 'dm.started', room: 'x' }), 'bob'), undefined);
    assert.equal(roomAddedTo(notice(null), 'bob'), undefined);
  });
});

describe('one idempotency key per draft', () => {
  const counter = () => {
    let n = 0;
    return () => `k${++n}`;
  };

  test('sending the failed text again reuses its key; new or edited text gets a new one', () => {
    const drafts = new DraftKeys(counter());
    assert.equal(drafts.take('hello'), 'k1');
    drafts.fail('hello', 'k1');
    assert.equal(drafts.take('hello'), 'k1', 'the retry of a draft that may have been stored');
    assert.equal(drafts.take('hello'), 'k2', 'it went through: the same text again is a new message');
    drafts.fail('hello', 'k2');
    assert.equal(drafts.take('hello!'), 'k3', 'edited: another message');
    assert.equal(drafts.take('hello'), 'k4', 'the failed draft was given up on');
  });
});
