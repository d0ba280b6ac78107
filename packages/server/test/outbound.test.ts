import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import * as ws from 'ws';
import type { Connection } from '../src/realtime/connection.ts';
import { EndOfTurn, Outbound, PING_FRAME, textFrame, textFrameOf } from '../src/realtime/outbound.ts';
import { startServer, type TestServer, waitUntil } from './helpers.ts';
import { recordWrites } from './support/socket-writes.ts';

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

test('EndOfTurn ends the turn of every writer once, after the current turn', async () => {
  const batch = new EndOfTurn();
  const uncorked: string[] = [];
  const seen = (): string[] => [...uncorked];
  batch.add({ endTurn: () => uncorked.push('a') });
  batch.add({ endTurn: () => uncorked.push('b') });
  await Promise.resolve();
  assert.deepEqual(seen(), [], 'not within the microtasks of the turn');
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(seen(), ['a', 'b']);
  batch.add({ endTurn: () => uncorked.push('c') });
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(seen(), ['a', 'b', 'c'], 'a new batch after a flush');
});

describe('a connection writes what it gets in one turn', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server.close());

  /** Alice's socket on both ends, the server's with its writes to the kernel recorded. */
  async function aliceWithWrites() {
    const client = await server.ws('/ws', { token: await server.token('alice') });
    const { connectionId } = await client.welcome();
    const connection = [...server.parley.gateway.connections].find((c) => c.id === connectionId) as Connection;
    const socket = (connection as unknown as { socket: Socket }).socket;
    return { client, connection, socket, writes: recordWrites(socket) };
  }

  const push = (n: number) => new Outbound(Buffer.from(`{"type":"message","n":${n}}`));

  test('one frame as one plain write at the end of the turn; several as one writev, in order', async () => {
    const { client, connection, socket, writes } = await aliceWithWrites();
    connection.push(push(0));
    assert.deepEqual(writes, [], 'held until the turn ends');
    assert.equal(socket.writableCorked, 0, 'a lone frame does not cork the socket');
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(writes, [1]);

    for (let n = 1; n <= 10; n++) connection.push(push(n));
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(writes, [1, 10], 'the ten frames of the next turn in one writev');
    assert.equal(socket.writableCorked, 0, 'uncorked once the turn was over');
    await waitUntil(() => client.frames.filter((f) => f.type === 'message').length === 11, 'the 11 frames');
    assert.deepEqual(
      client.frames.filter((f) => f.type === 'message').map((f) => f.n),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    );
    client.close();
  });

  test('a frame held for the end of the turn goes before a close in the same turn', async () => {
    const { client, connection } = await aliceWithWrites();
    connection.push(push(1));
    connection.close(4000, 'done');
    const { code } = await client.closed;
    assert.equal(code, 4000);
    assert.deepEqual(
      client.frames.filter((f) => f.type === 'message').map((f) => f.n),
      [1],
    );
  });
});
