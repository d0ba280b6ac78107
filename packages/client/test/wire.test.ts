/**
 * The SDK owns its copy of the contract's tables and types (src/wire.ts), so
 * the built package needs nothing of @parley/server. Here they are checked
 * against the server's: a code added there fails this test until it is added
 * here. The type checks run in `npm run typecheck`.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as serverCloseCodes from '@parley/server/close-codes';
import { ERROR_CODES as SERVER_ERROR_CODES } from '@parley/server/errors';
import type { Command } from '@parley/server/protocol';
import type { StoredMessage as ServerStoredMessage } from '@parley/server/store';
import { CLOSE_ADVICE, CloseCode, type CommandBody, ERROR_CODES, type StoredMessage } from '../src/wire.ts';

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
type ServerCommandBody = DistributiveOmit<Command, 'id'>;
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type KeysOf<U, K> = U extends { type: K } ? keyof U : never;
type CommandKeys = {
  [K in CommandBody['type'] | ServerCommandBody['type']]: Same<KeysOf<CommandBody, K>, KeysOf<ServerCommandBody, K>>;
};
// These fail to compile when the client's types drift from the server's schemas: assignable both
// ways, and (so an optional field added on one side is caught too) with the same fields per command.
const sameCommands: Same<CommandBody, ServerCommandBody> = true;
const sameCommandFields: Record<keyof CommandKeys, true> = null as unknown as CommandKeys;
const sameMessage: Same<StoredMessage, ServerStoredMessage> & Same<keyof StoredMessage, keyof ServerStoredMessage> =
  true;

describe("the client's copy of the contract", () => {
  test('close codes and the advice on each are the server’s', () => {
    assert.deepEqual(CloseCode, serverCloseCodes.CloseCode);
    assert.deepEqual(CLOSE_ADVICE, serverCloseCodes.CLOSE_ADVICE);
  });

  test('error codes are the server’s', () => {
    assert.deepEqual([...ERROR_CODES].sort(), Object.keys(SERVER_ERROR_CODES).sort());
  });

  test('command and message types match the server’s schemas (checked by the type checker)', () => {
    assert.equal(sameCommands, true);
    assert.equal(sameMessage, true);
    assert.equal(sameCommandFields, null);
  });
});
