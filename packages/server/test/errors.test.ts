import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { ERROR_CODES } from '../src/errors.ts';
import { CLOSE_ADVICE, CloseCode } from '../src/realtime/close-codes.ts';

const doc = readFileSync(new URL('../../../docs/protocol.md', import.meta.url), 'utf8');

test('every error code in the registry is documented with its HTTP status, and only those', () => {
  const documented = new Map<string, number>();
  for (const match of doc.matchAll(/(\d{3}) `([a-z_]+)`/g)) documented.set(match[2] as string, Number(match[1]));
  assert.deepEqual(
    Object.fromEntries([...documented].sort()),
    Object.fromEntries(
      Object.entries(ERROR_CODES)
        .map(([code, meta]) => [code, meta.status])
        .sort(),
    ),
  );
  const listed = /Error codes: ([\s\S]+?)\.\n/.exec(doc)?.[1] ?? '';
  assert.deepEqual([...listed.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]).sort(), Object.keys(ERROR_CODES).sort());
});

test('the close-code table of the docs is the one the server and SDK use', () => {
  const table = doc.slice(doc.indexOf('### Close codes'), doc.indexOf('## 4. HTTP API'));
  const documented = [...table.matchAll(/^\| (\d{4}) \|/gm)].map((m) => Number(m[1])).sort();
  assert.deepEqual(documented, Object.values(CloseCode).sort());
  assert.deepEqual(Object.keys(CLOSE_ADVICE).map(Number).sort(), documented);
});
