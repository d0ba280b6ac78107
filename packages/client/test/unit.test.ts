import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { backoffDelay, DEFAULT_BACKOFF, ReconnectBackoff } from '../src/backoff.ts';
import { newIdempotencyKey } from '../src/client.ts';
import { decodeJwtExp, MIN_REFRESH_DELAY_MS, refreshDelay } from '../src/jwt.ts';
import { ChannelSequencer } from '../src/sequencer.ts';
import { CLOSE_ADVICE, type StoredMessage } from '../src/wire.ts';

describe('idempotency keys', () => {
  const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

  test('a key is a UUID v7 whose first 48 bits are the time in milliseconds', () => {
    const now = Date.UTC(2026, 11, 2, 14, 5, 6, 789);
    const key = newIdempotencyKey(now);
    assert.match(key, UUID_V7);
    assert.equal(Number.parseInt(key.slice(0, 8) + key.slice(9, 13), 16), now);
    assert.match(newIdempotencyKey(), UUID_V7);
  });

  test('keys made later sort after earlier ones, and no two are alike', () => {
    const start = Date.UTC(2026, 0, 1);
    const keys = Array.from({ length: 2000 }, (_, i) => newIdempotencyKey(start + i));
    assert.deepEqual([...keys].sort(), keys);
    const sameMillisecond = Array.from({ length: 2000 }, () => newIdempotencyKey(start));
    assert.equal(new Set([...keys, ...sameMillisecond]).size, 4000);
  });
});

describe('backoff', () => {
  test('full jitter: the delay spans [0, initial·2^attempt), from 0 up to just under the ceiling', () => {
    const options = { initialMs: 100, maxMs: 100_000 };
    for (const attempt of [0, 1, 2, 5]) {
      const ceiling = 100 * 2 ** attempt;
      assert.equal(
        backoffDelay(attempt, options, () => 0),
        0,
      );
      assert.equal(
        backoffDelay(attempt, options, () => 0.5),
        ceiling / 2,
      );
      assert.equal(
        backoffDelay(attempt, options, () => 0.999999),
        ceiling - 1,
      );
    }
  });

  test('the ceiling is capped at maxMs, also for attempts so high that 2^n overflows', () => {
    const options = { initialMs: 100, maxMs: 1000 };
    assert.equal(
      backoffDelay(4, options, () => 0.999999),
      999,
    );
    assert.equal(
      backoffDelay(5000, options, () => 0.5),
      500,
    );
    assert.ok(Number.isFinite(backoffDelay(5000, {}, () => 0.999999)));
  });

  test('defaults are 500 ms initial, 30 s cap, reset after 10 s up; real random delays stay within the bounds', () => {
    assert.deepEqual(DEFAULT_BACKOFF, { initialMs: 500, maxMs: 30_000, resetAfterMs: 10_000 });
    for (let i = 0; i < 200; i++) {
      const first = backoffDelay(0);
      assert.ok(first >= 0 && first < 500, `attempt 0 gave ${first}`);
      const late = backoffDelay(20);
      assert.ok(late >= 0 && late < 30_000, `attempt 20 gave ${late}`);
    }
  });
});

describe('reconnect policy', () => {
  /** A policy on a clock the test moves, with the jitter at its top: each delay is its ceiling less 1 ms. */
  function policy(options: { resetAfterMs?: number } = {}) {
    let now = 1_000_000;
    const backoff = new ReconnectBackoff(
      { initialMs: 100, maxMs: 10_000, random: () => 0.9999999, ...options },
      () => now,
    );
    return {
      backoff,
      advance: (ms: number) => {
        now += ms;
      },
    };
  }

  test('failures before any welcome: the delays double up to the cap', () => {
    const { backoff } = policy();
    const delays = Array.from({ length: 9 }, () => backoff.next());
    assert.deepEqual(delays, [99, 199, 399, 799, 1599, 3199, 6399, 9999, 9999]);
  });

  test('connections closed soon after their welcome (4008, 1013, 4009…) keep the delays growing', () => {
    const { backoff, advance } = policy();
    const delays: number[] = [];
    for (let i = 0; i < 6; i++) {
      backoff.welcomed();
      advance(50);
      delays.push(backoff.next());
      advance(delays.at(-1) as number);
    }
    assert.deepEqual(delays, [99, 199, 399, 799, 1599, 3199]);
  });

  test('a connection that stayed up for resetAfterMs starts the backoff over; one just short of it does not', () => {
    const { backoff, advance } = policy({ resetAfterMs: 10_000 });
    for (let i = 0; i < 4; i++) backoff.next();
    assert.equal(backoff.attempts, 4);
    backoff.welcomed();
    advance(9_999);
    assert.equal(backoff.next(), 1599, 'up 9.999 s: still backing off');
    backoff.welcomed();
    advance(10_000);
    assert.equal(backoff.next(), 99, 'up 10 s: healthy, the first retry is quick again');
    assert.equal(backoff.next(), 199, 'and a failure right after grows again');
  });

  test('reset (the app calls connect()) starts over', () => {
    const { backoff } = policy();
    backoff.next();
    backoff.next();
    backoff.reset();
    assert.equal(backoff.next(), 99);
  });
});

/** A JWT with the given payload and a signature nobody checks. */
function jwt(payload: unknown): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'HS256', typ: 'JWT' })}.${part(payload)}.c2lnbmF0dXJl`;
}

describe('JWT exp decoding', () => {
  test('reads exp from the payload without verifying', () => {
    assert.equal(decodeJwtExp(jwt({ sub: 'alice', exp: 1_900_000_000 })), 1_900_000_000);
  });

  test('base64url payloads with non-ASCII text and without padding', () => {
    // "ü" and "?" characters put '-' and '_' into base64url output.
    const token = jwt({ sub: 'zoë???>>>', exp: 1_800_000_123, pad: 'x' });
    assert.match(token.split('.')[1] ?? '', /[-_]/);
    assert.equal(decodeJwtExp(token), 1_800_000_123);
  });

  test('undefined for anything that is not a JWT with a numeric exp', () => {
    assert.equal(decodeJwtExp('not-a-jwt'), undefined);
    assert.equal(decodeJwtExp('a..c'), undefined);
    assert.equal(decodeJwtExp('a.%%%.c'), undefined);
    assert.equal(decodeJwtExp(jwt({ sub: 'alice' })), undefined);
    assert.equal(decodeJwtExp(jwt({ exp: '1900000000' })), undefined);
    assert.equal(decodeJwtExp(jwt('just a string')), undefined);
  });

  test('refresh delay: margin before exp; half the remaining life when the margin is longer; never a tight loop', () => {
    const now = 1_000_000_000_000;
    const exp = now / 1000 + 900;
    assert.equal(refreshDelay(exp, 60_000, now), 840_000);
    assert.equal(refreshDelay(now / 1000 + 8, 60_000, now), 4000);
    assert.equal(refreshDelay(now / 1000 + 1, 60_000, now), MIN_REFRESH_DELAY_MS);
    assert.equal(refreshDelay(now / 1000 - 30, 60_000, now), MIN_REFRESH_DELAY_MS);
    assert.equal(refreshDelay(now / 1000 + 10 ** 9, 0, now), 2_147_483_647);
  });
});

describe('close codes', () => {
  test('the table the client acts on covers every code of the contract', () => {
    assert.deepEqual(
      Object.keys(CLOSE_ADVICE).map(Number).sort(),
      [1000, 1001, 1008, 1009, 1011, 1013, 4001, 4002, 4008, 4009],
    );
  });
});

const EPOCH = 'e1';
function message(offset: number, epoch = EPOCH): StoredMessage {
  return { id: `m${offset}`, channel: 'room:a', offset, epoch, from: 'alice', data: { n: offset }, ts: '' };
}
const offsets = (messages: StoredMessage[]) => messages.map((m) => m.offset);

describe('ChannelSequencer', () => {
  test('in order: each message is delivered at once', () => {
    const sequencer = new ChannelSequencer(0, EPOCH);
    assert.deepEqual(offsets(sequencer.accept(message(1))), [1]);
    assert.deepEqual(offsets(sequencer.accept(message(2))), [2]);
    assert.deepEqual(sequencer.position, { offset: 2, epoch: EPOCH });
    assert.equal(sequencer.gap(), undefined);
  });

  test('duplicates, already delivered or already held, are dropped', () => {
    const sequencer = new ChannelSequencer(5, EPOCH);
    assert.deepEqual(sequencer.accept(message(5)), []);
    assert.deepEqual(sequencer.accept(message(3)), []);
    assert.deepEqual(offsets(sequencer.accept(message(6))), [6]);
    assert.deepEqual(sequencer.accept(message(6)), []);
    assert.deepEqual(sequencer.accept(message(9)), []);
    assert.deepEqual(sequencer.accept(message(9)), []);
    assert.equal(sequencer.heldCount, 1);
  });

  test('a gap holds later messages back and asks for exactly the missing offsets', () => {
    const sequencer = new ChannelSequencer(10, EPOCH);
    assert.deepEqual(sequencer.accept(message(13)), []);
    assert.deepEqual(sequencer.accept(message(14)), []);
    assert.deepEqual(sequencer.gap(), { after: 10, before: 13 });
    assert.deepEqual(sequencer.fillRequest(), { before: 13, limit: 2 });
    assert.equal(sequencer.offset, 10);
  });

  test('the fill then the held pushes are released in order, once', () => {
    const sequencer = new ChannelSequencer(10, EPOCH);
    sequencer.accept(message(13));
    sequencer.accept(message(15));
    sequencer.accept(message(14));
    // A history page that overlaps what is held delivers each offset once.
    assert.deepEqual(offsets(sequencer.acceptAll([message(11), message(12), message(13)])), [11, 12, 13, 14, 15]);
    assert.equal(sequencer.gap(), undefined);
    assert.equal(sequencer.heldCount, 0);
    assert.deepEqual(offsets(sequencer.accept(message(16))), [16]);
  });

  test('a long gap is filled forward, 100 offsets per page', () => {
    const sequencer = new ChannelSequencer(0, EPOCH);
    sequencer.accept(message(251));
    assert.deepEqual(sequencer.fillRequest(), { before: 101, limit: 100 });
    const page = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => message(from + i));
    assert.equal(sequencer.acceptAll(page(1, 100)).length, 100);
    assert.deepEqual(sequencer.fillRequest(), { before: 201, limit: 100 });
    sequencer.acceptAll(page(101, 200));
    assert.deepEqual(sequencer.fillRequest(), { before: 251, limit: 50 });
    assert.deepEqual(offsets(sequencer.acceptAll(page(201, 250))).slice(-2), [250, 251]);
    assert.equal(sequencer.fillRequest(), undefined);
  });

  test('observe: a subscribe reply saying the channel is further ahead opens a gap up to it', () => {
    const sequencer = new ChannelSequencer(4, EPOCH);
    sequencer.observe(7);
    assert.deepEqual(sequencer.gap(), { after: 4, before: 8 });
    sequencer.observe(3);
    assert.deepEqual(sequencer.gap(), { after: 4, before: 8 });
  });

  test('skipGap gives up on messages that no longer exist and releases the held ones', () => {
    const sequencer = new ChannelSequencer(1, EPOCH);
    sequencer.accept(message(5));
    sequencer.accept(message(6));
    assert.deepEqual(offsets(sequencer.skipGap()), [5, 6]);
    assert.equal(sequencer.offset, 6);
    assert.deepEqual(sequencer.skipGap(), []);
  });

  test('messages of another epoch are ignored; reset moves to a new epoch and offset', () => {
    const sequencer = new ChannelSequencer(3, EPOCH);
    assert.deepEqual(sequencer.accept(message(4, 'e0')), []);
    sequencer.accept(message(8));
    sequencer.reset(2, 'e2');
    assert.equal(sequencer.heldCount, 0);
    assert.deepEqual(sequencer.position, { offset: 2, epoch: 'e2' });
    assert.deepEqual(sequencer.accept(message(3)), []);
    assert.deepEqual(offsets(sequencer.accept(message(3, 'e2'))), [3]);
  });

  test('clearHeld forgets held messages and the gap they implied', () => {
    const sequencer = new ChannelSequencer(0, EPOCH);
    sequencer.accept(message(3));
    sequencer.clearHeld();
    assert.equal(sequencer.gap(), undefined);
    assert.deepEqual(offsets(sequencer.accept(message(1))), [1]);
  });
});
