import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Heartbeats } from '../src/realtime/heartbeat.ts';
import { waitUntil } from './helpers.ts';

/** A member that records its pings, and the synchronous batch (timer tick) each came in. */
class Member {
  static batch = 0;
  static inBatch = false;
  static readonly log: Array<{ member: Member; batch: number }> = [];
  onPing: (() => void) | undefined;
  heartbeatBucket: number | undefined;

  heartbeat(): void {
    if (!Member.inBatch) {
      Member.inBatch = true;
      Member.batch++;
      queueMicrotask(() => {
        Member.inBatch = false;
      });
    }
    Member.log.push({ member: this, batch: Member.batch });
    this.onPing?.();
  }
}

describe('Heartbeats', () => {
  test('pings every member exactly once per interval, a slice of them per tick', async () => {
    Member.log.length = 0;
    const members = Array.from({ length: 23 }, () => new Member());
    const heartbeats = new Heartbeats<Member>(200, 5);
    for (const member of members) heartbeats.add(member);
    heartbeats.add(members[0] as Member); // twice: still one member
    assert.equal(heartbeats.size, 23);
    heartbeats.start();
    try {
      await waitUntil(() => Member.log.length >= 3 * members.length, 'three intervals of pings');
    } finally {
      heartbeats.stop();
    }
    for (let round = 0; round < 3; round++) {
      const slice = Member.log.slice(round * members.length, (round + 1) * members.length);
      assert.equal(new Set(slice.map((entry) => entry.member)).size, members.length, `round ${round}: each once`);
    }
    const perBatch = new Map<number, number>();
    for (const { batch } of Member.log) perBatch.set(batch, (perBatch.get(batch) ?? 0) + 1);
    assert.ok(Math.max(...perBatch.values()) <= Math.ceil(23 / 5), 'no tick pings more than its slice');
  });

  test('a member deleted while the heartbeat runs is not pinged again, and the others still are', async () => {
    Member.log.length = 0;
    const heartbeats = new Heartbeats<Member>(100, 1);
    const leaving = new Member();
    const staying = new Member();
    leaving.onPing = () => heartbeats.delete(leaving);
    heartbeats.add(leaving);
    heartbeats.add(staying);
    heartbeats.start();
    try {
      await waitUntil(() => Member.log.filter((entry) => entry.member === staying).length >= 3, 'three pings');
    } finally {
      heartbeats.stop();
    }
    assert.equal(Member.log.filter((entry) => entry.member === leaving).length, 1);
    assert.equal(heartbeats.size, 1);
  });
});
