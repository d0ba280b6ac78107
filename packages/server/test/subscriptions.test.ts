import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type ChannelName, parseChannel } from '../src/channels/names.ts';
import { Subscriptions } from '../src/realtime/subscriptions.ts';

const name = (channel: string): ChannelName => parseChannel(channel);

describe('Subscriptions', () => {
  test('holds one, then many, by channel, and back to none', () => {
    const subscriptions = new Subscriptions();
    assert.equal(subscriptions.size, 0);
    assert.deepEqual(subscriptions.names(), []);
    const general = name('room:general');
    subscriptions.set(general);
    assert.equal(subscriptions.size, 1);
    assert.equal(subscriptions.get('room:general'), general);
    assert.equal(subscriptions.has('room:random'), false);

    const random = name('room:random');
    const news = name('topic:news');
    subscriptions.set(random);
    subscriptions.set(news);
    assert.equal(subscriptions.size, 3);
    assert.deepEqual(subscriptions.names(), [general, random, news]);
    assert.equal(subscriptions.get('room:general'), general, 'the first survives the move to a map');

    assert.equal(subscriptions.delete('room:random'), true);
    assert.equal(subscriptions.delete('room:random'), false);
    assert.equal(subscriptions.size, 2);
    assert.equal(subscriptions.has('room:random'), false);

    subscriptions.clear();
    assert.equal(subscriptions.size, 0);
    subscriptions.set(news);
    assert.equal(subscriptions.get('topic:news'), news, 'usable again after clear');
  });

  test('setting the same channel again replaces it; deleting the only one empties it', () => {
    const subscriptions = new Subscriptions();
    subscriptions.set(name('room:general'));
    const again = name('room:general');
    subscriptions.set(again);
    assert.equal(subscriptions.size, 1);
    assert.equal(subscriptions.get('room:general'), again);
    assert.equal(subscriptions.delete('room:other'), false);
    assert.equal(subscriptions.delete('room:general'), true);
    assert.equal(subscriptions.size, 0);
    assert.equal(subscriptions.get('room:general'), undefined);
  });

  test('names() is a copy: unsubscribing while walking it misses none', () => {
    const subscriptions = new Subscriptions();
    for (const channel of ['room:a', 'room:b', 'room:c']) subscriptions.set(name(channel));
    const walked: string[] = [];
    for (const entry of subscriptions.names()) {
      walked.push(entry.channel);
      subscriptions.delete(entry.channel);
    }
    assert.deepEqual(walked, ['room:a', 'room:b', 'room:c']);
    assert.equal(subscriptions.size, 0);
  });
});
