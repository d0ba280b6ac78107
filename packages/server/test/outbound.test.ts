import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as ws from 'ws';
import { CorkBatch, Outbound, PING_FRAME, textFrame, textFrameOf } from '../src/realtime/outbound.ts';

// ws's own framer, the reference for ours (not in its published types).
const { Sender } = ws as unknown as {
  Sender: { frame(data: Buffer, options: Record<string, unknown>): Buffer[] };
};

test('textFrame is byte for byte what ws frames, at every length class', () => {
  for (const length of [0, 1, 125, 126, 127, 1000, 65535, 65536, 70000]) {
    const payload = Buffer.alloc(length, 0x61);
    const reference = Buffer.concat(
      Sender.frame(payload, { fin: true, opcode: 1, mask: false, readOnly: false, rsv1: false }),
    );
    assert.ok(textFrame(payload).equals(reference), `length ${length}`);
  }
});

test('textFrameOf frames a string as textFrame frames its UTF-8, at every length class', () => {
  for (const length of [0, 1, 125, 126, 127, 1000, 65535, 65536, 70000]) {
    // Multi-byte characters: the header carries the byte length, not the string length.
    const text = 'é'.repeat(Math.floor(length / 2)) + 'a'.repeat(length % 2);
    const reference = Buffer.concat(
      Sender.frame(Buffer.from(text), { fin: true, opcode: 1, mask: false, readOnly: false, rsv1: false }),
    );
    assert.ok(textFrameOf(text).equals(reference), `length ${length}`);
  }
});

test('PING_FRAME is the ping ws sends without a payload', () => {
  const reference = Buffer.concat(
    Sender.frame(Buffer.alloc(0), { fin: true, opcode: 0x9, mask: false, readOnly: false, rsv1: false }),
  );
  assert.ok(PING_FRAME.equals(reference));
});

test('an Outbound frames its payload once, however many sockets take it', () => {
  const out = new Outbound(Buffer.from('{"type":"message"}'));
  assert.equal(out.wire, out.wire, 'the same Buffer each time');
  assert.equal(out.wire.length, 2 + out.payload.length);
});

test('CorkBatch uncorks every holder once, after the current turn', async () => {
  const batch = new CorkBatch();
  const uncorked: string[] = [];
  const seen = (): string[] => [...uncorked];
  batch.add({ uncork: () => uncorked.push('a') });
  batch.add({ uncork: () => uncorked.push('b') });
  await Promise.resolve();
  assert.deepEqual(seen(), [], 'not within the microtasks of the turn');
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(seen(), ['a', 'b']);
  batch.add({ uncork: () => uncorked.push('c') });
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(seen(), ['a', 'b', 'c'], 'a new batch after a flush');
});
