import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import WebSocket from 'ws';
import { ERROR_CODES, type ErrorCode, isErrorCode } from '../src/errors.ts';
import { MAX_DATA_DEPTH } from '../src/json-depth.ts';
import { startServer, type TestServer } from './helpers.ts';

/**
 * Hostile input: a seeded fuzz of the WebSocket protocol and of every HTTP
 * route in /openapi.json. Whatever comes in, the answer is an error frame or
 * body with a documented code, a reply (when the input happens to be valid) or
 * a documented close code; never `internal`, a 5xx, a crash or a hang, and
 * nothing accumulates per malformed input.
 *
 * The seed is printed; `FUZZ_SEED=<n>` replays a run exactly (the inputs, not
 * the timing).
 */

const SEED = seedFromEnv(process.env.FUZZ_SEED);
const REPRODUCE = `(reproduce with FUZZ_SEED=${SEED})`;

const MAX_MESSAGE_BYTES = 65536;
const API_KEY = 'fuzz-api-key-0123456789';
const ENV = {
  // The rate limiter has its own tests; here it must not end the run.
  RATE_LIMIT_PER_SEC: '1000000',
  RATE_LIMIT_BURST: '1000000',
  MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES),
  SERVER_API_KEY: API_KEY,
  // Closing the server at the end need not spread its closes over 10 s.
  SHUTDOWN_DRAIN_MS: '0',
};

const WS_CONNECTIONS = 4;
const FRAMES_PER_CONNECTION = 2560;
const HTTP_REQUESTS_PER_OPERATION = 220;
const HTTP_CONCURRENCY = 16;
/** Heap allowed to remain after the run (after GC), above the heap before it. */
const HEAP_SLACK_BYTES = 50 * 1024 * 1024;
const ANSWER_TIMEOUT_MS = 30_000;

/** Close codes PROTOCOL §3 and RFC 6455 document for bad input. */
const DOCUMENTED_CLOSES = new Set([1007, 1008, 1009, 4008]);

function seedFromEnv(value: string | undefined): number {
  if (value === undefined || value === '') return (Date.now() ^ (process.pid << 10)) >>> 0;
  const seed = Number(value);
  if (!Number.isSafeInteger(seed) || seed < 0)
    throw new Error(`FUZZ_SEED must be a non-negative integer, got "${value}"`);
  return seed >>> 0;
}

// ── deterministic randomness ────────────────────────────────────────────────

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** A stream of its own for one part of the run, so parts do not shift each other's inputs. */
  static derive(seed: number, part: number): Rng {
    return new Rng((seed ^ Math.imul(part + 1, 0x9e3779b1)) >>> 0);
  }

  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T;
  }

  weighted<T>(entries: ReadonlyArray<readonly [T, number]>): T {
    const total = entries.reduce((sum, [, weight]) => sum + weight, 0);
    let roll = this.next() * total;
    for (const [value, weight] of entries) {
      roll -= weight;
      if (roll < 0) return value;
    }
    return (entries[entries.length - 1] as readonly [T, number])[0];
  }
}

const ALPHABET = [
  ...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-:',
  ' ',
  '"',
  '\\',
  '/',
  '\u0000',
  '\u0007',
  '\n',
  '\r',
  '\t',
  '\u007f',
  'é',
  'ß',
  '中',
  '🎉',
  '\u202e',
  '\ufeff',
  '\ud800',
  '\udfff',
  '\u2028',
];

function randomString(rng: Rng, length: number): string {
  let text = '';
  for (let i = 0; i < length; i++) text += rng.pick(ALPHABET);
  return text;
}

/** Any JSON value, small. */
function randomJson(rng: Rng, depth: number): unknown {
  switch (rng.int(depth > 0 ? 8 : 5)) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.pick([0, -1, 1.5, 1e308, -1e-308, 2 ** 53, 42, Number.MAX_SAFE_INTEGER]);
    case 3:
      return randomString(rng, rng.int(24));
    case 4:
      return { text: randomString(rng, rng.int(16)) };
    case 5:
    case 6:
      return Array.from({ length: rng.int(4) }, () => randomJson(rng, depth - 1));
    default: {
      const value: Record<string, unknown> = {};
      for (let i = rng.int(4); i > 0; i--) value[randomString(rng, 1 + rng.int(6))] = randomJson(rng, depth - 1);
      return value;
    }
  }
}

const deepArrays = (levels: number) => '['.repeat(levels) + ']'.repeat(levels);
const deepObjects = (levels: number) => `${'{"a":'.repeat(levels)}1${'}'.repeat(levels)}`;

// ── hostile values ──────────────────────────────────────────────────────────

/** Ids that are not positive safe integers: answered without an id. */
const BAD_IDS: unknown[] = [
  0,
  -1,
  1.5,
  1e-7,
  2 ** 53,
  2 ** 53 + 2,
  1e308,
  -1e308,
  Number.MAX_VALUE,
  '1',
  '',
  true,
  false,
  [],
  [1],
  {},
  { id: 1 },
];

/** Wrong for a required or optional string field (channel, token, idempotencyKey, epoch…). */
const NOT_STRINGS: unknown[] = [0, -1, 1.5, 1e308, true, false, null, [], ['room:fuzz-1'], {}, { channel: 'room:x' }];
const BAD_OFFSETS: unknown[] = [-1, 1.5, '1', 2 ** 53, 1e308, null, true, [], {}];
const BAD_BEFORE: unknown[] = [0, -1, 1.5, '1', 2 ** 53, 1e308, null, true, [], {}];
const BAD_LIMIT: unknown[] = [0, 101, -1, 1.5, '50', 1e308, 2 ** 53, null, true, [], {}];
const BAD_SINCE: unknown[] = [
  1,
  'x',
  true,
  null,
  [],
  [0, 'e'],
  {},
  { offset: 0 },
  { epoch: 'e' },
  ...BAD_OFFSETS.map((offset) => ({ offset, epoch: 'e' })),
  { offset: 0, epoch: 5 },
  { offset: 0, epoch: null },
  { offset: 0, epoch: 'x'.repeat(201) },
];
const BAD_KEYS: unknown[] = [1, 0, true, null, [], ['k'], {}, '', 'k'.repeat(65), 'k'.repeat(10_000)];
const JUNK_TOKENS = ['x', 'a.b.c', 'Bearer x', 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.', '\u0000', 't'.repeat(8000)];

/** Channel names that are refused whatever the command (bad_request, or forbidden for an unknown namespace). */
const BAD_CHANNELS = [
  '',
  'x',
  ':x',
  'room:',
  'room',
  'room:a\u0000b',
  'room:\n',
  'room:a\r\nb',
  'room:\u0007',
  'room:\u007f',
  'room:café',
  'room:🎉',
  'room:\u202egnp',
  'room:\ud800',
  'room:\ufeffx',
  `room:${'a'.repeat(65)}`,
  `room:${'a'.repeat(195)}`,
  'room:a:b',
  'room:a b',
  'room:../x',
  'room:%00',
  'room:a/b',
  'dm:a:a',
  'dm:b:a',
  'dm:a:b:c',
  'dm:a',
  'nope:x',
  'ROOM:x',
  ' room:x',
  'room:x ',
  '__proto__:x',
  'constructor:x',
  'topic:*',
  'user:',
];

/** Text that is not JSON, built around a frame that would otherwise be fine. */
function mangle(rng: Rng, valid: string): string {
  switch (rng.int(12)) {
    case 0:
      return valid.slice(0, rng.int(valid.length));
    case 1:
      return valid + rng.pick(['x', ',', '}', ']', ' {}', '\u0000', '//c', 'null', '{"type":"ping"}']);
    case 2:
      return valid.replace(/}$/, ',"n":NaN}');
    case 3:
      return rng.pick([`/* c */${valid}`, `${valid} // c`, `// c\n${valid}`, `# c\n${valid}`]);
    case 4:
      return valid.replaceAll('"', "'");
    case 5:
      return valid.replace(/"([a-z]+)":/g, '$1:');
    case 6:
      return valid.replace(/}$/, ',}');
    case 7:
      return valid.replace(/}$/, rng.pick([',"n":0x10}', ',"n":01}', ',"n":+1}', ',"n":.5}', ',"n":Infinity}']));
    case 8:
      return valid.replace(/}$/, rng.pick([',"s":"a\tb"}', ',"s":"\\x41"}', ',"s":"\\u12"}', ',"s":"a\nb"}']));
    case 9:
      return `\ufeff${valid}`;
    case 10:
      return rng.pick(['', ' ', '\n', '{', '}', '[', '"', '{"', 'nul', 'tru', '-', '1e', '{"type":', 'undefined']);
    default:
      return valid.replace(/}$/, ',"type":"ping"');
  }
}

// ── WebSocket frames ────────────────────────────────────────────────────────

type Outcome = 'parse-error' | 'reply' | 'error' | 'any';
type Expect = 'reply' | 'error' | 'any' | 'optional';

interface WsFrame {
  kind: string;
  payload: string | Buffer;
  binary: boolean;
  /** The valid id the frame carries. */
  id: number | undefined;
  expect: Expect;
  code: ErrorCode | undefined;
  /** Certain to be answered by an error frame without an id. */
  idlessError: boolean;
}

interface WsContext {
  user: string;
  /** The id the next frame with a valid id gets. */
  nextId: number;
  subscribable: string[];
  publishable: string[];
  readable: string[];
  ownToken: string;
  otherToken: string;
}

const SPLICE = 'FUZZ_SPLICE_9c1e';

interface Built {
  kind: string;
  obj: Record<string, unknown>;
  outcome: Outcome;
  /** Raw JSON text replacing the string SPLICE (deep nesting, duplicate keys). */
  splice?: string;
  /** Raw JSON members put first (a `__proto__` key, which an object literal cannot hold). */
  prefix?: string;
}

const COMMAND_TYPES = [
  'auth',
  'subscribe',
  'unsubscribe',
  'publish',
  'history',
  'presence',
  'typing',
  'refresh',
  'ping',
] as const;
type CommandType = (typeof COMMAND_TYPES)[number];

function validCommand(rng: Rng, ctx: WsContext, type: CommandType): { obj: Record<string, unknown>; outcome: Outcome } {
  switch (type) {
    case 'ping':
      return { obj: { type }, outcome: 'reply' };
    case 'auth':
      return { obj: { type, token: rng.pick([ctx.ownToken, ...JUNK_TOKENS]) }, outcome: 'error' };
    case 'refresh':
      return { obj: { type, token: rng.pick(JUNK_TOKENS) }, outcome: 'error' };
    case 'subscribe': {
      const obj: Record<string, unknown> = { type, channel: rng.pick(ctx.subscribable) };
      if (rng.chance(0.3)) obj.since = { offset: rng.int(5), epoch: randomString(rng, rng.int(8)) };
      return { obj, outcome: 'any' };
    }
    case 'unsubscribe':
      return { obj: { type, channel: rng.pick(ctx.subscribable) }, outcome: 'any' };
    case 'publish': {
      const obj: Record<string, unknown> = { type, channel: rng.pick(ctx.publishable), data: randomJson(rng, 3) };
      if (rng.chance(0.3)) obj.idempotencyKey = `k${rng.int(20)}`;
      return { obj, outcome: 'any' };
    }
    case 'history': {
      const obj: Record<string, unknown> = { type, channel: rng.pick(ctx.readable) };
      if (rng.chance(0.5)) obj.before = 1 + rng.int(10);
      if (rng.chance(0.5)) obj.limit = 1 + rng.int(100);
      return { obj, outcome: 'any' };
    }
    case 'presence':
      return { obj: { type, channel: rng.pick(ctx.readable) }, outcome: 'any' };
    case 'typing':
      return { obj: { type, channel: rng.pick(ctx.publishable) }, outcome: 'any' };
  }
}

/** Fields of each command and values that are wrong for them. */
const WRONG_FIELDS: Record<string, Record<string, unknown[]>> = {
  auth: { token: [...NOT_STRINGS, '', 't'.repeat(8193)] },
  subscribe: { channel: [...NOT_STRINGS, '', 'c'.repeat(141)], since: BAD_SINCE },
  unsubscribe: { channel: [...NOT_STRINGS, '', 'c'.repeat(141)] },
  publish: { channel: [...NOT_STRINGS, '', 'c'.repeat(141)], idempotencyKey: BAD_KEYS },
  history: { channel: [...NOT_STRINGS, ''], before: BAD_BEFORE, limit: BAD_LIMIT },
  presence: { channel: [...NOT_STRINGS, ''] },
  typing: { channel: [...NOT_STRINGS, ''] },
  refresh: { token: [...NOT_STRINGS, '', 't'.repeat(8193)] },
};
const REQUIRED: Record<string, string[]> = {
  auth: ['token'],
  subscribe: ['channel'],
  unsubscribe: ['channel'],
  publish: ['channel', 'data'],
  history: ['channel'],
  presence: ['channel'],
  typing: ['channel'],
  refresh: ['token'],
};

const UNKNOWN_TYPES: unknown[] = [
  '__proto__',
  'constructor',
  'toString',
  'hasOwnProperty',
  'valueOf',
  'PING',
  'Ping',
  ' ping',
  'ping ',
  'ping\u0000',
  '',
  'pïng',
  '🎉',
  'reply',
  'error',
  'message',
  'welcome',
  'join',
  'leave',
  't'.repeat(1000),
  1,
  0,
  null,
  true,
  [],
  ['ping'],
  {},
  { type: 'ping' },
];

const WRONG_KINDS = [
  '[]',
  '[1,2]',
  '[{"type":"ping","id":1}]',
  '42',
  '-1.5e3',
  '0',
  '"ping"',
  '"{\\"type\\":\\"ping\\"}"',
  'null',
  'true',
  'false',
  '1e400',
];

function buildCase(rng: Rng, ctx: WsContext): Built | { kind: string; raw: string | Buffer; binary: boolean } {
  const kind = rng.weighted([
    ['bad-json', 10],
    ['wrong-kind', 5],
    ['wrong-field', 16],
    ['missing-field', 4],
    ['unknown-type', 8],
    ['bad-id', 7],
    ['deep', 5],
    ['long-string', 3],
    ['channel-name', 10],
    ['extra-fields', 7],
    ['valid', 12],
    ['binary', 5],
    ['foreign-refresh', 1],
  ] as const);
  switch (kind) {
    case 'bad-json': {
      const { obj } = validCommand(rng, ctx, rng.pick(COMMAND_TYPES));
      if (rng.chance(0.5)) obj.id = 1 + rng.int(1000);
      return { kind, raw: mangle(rng, JSON.stringify(obj)), binary: false };
    }
    case 'wrong-kind':
      return { kind, raw: rng.pick(WRONG_KINDS), binary: false };
    case 'binary': {
      const raw = rng.chance(0.5)
        ? Buffer.from(JSON.stringify({ type: 'ping', id: 1 + rng.int(1000) }))
        : Buffer.from(Array.from({ length: rng.int(64) }, () => rng.int(256)));
      return { kind, raw, binary: true };
    }
    case 'wrong-field': {
      const type = rng.pick(Object.keys(WRONG_FIELDS)) as CommandType;
      const { obj } = validCommand(rng, ctx, type);
      const fields = WRONG_FIELDS[type] as Record<string, unknown[]>;
      const field = rng.pick(Object.keys(fields));
      obj[field] = rng.pick(fields[field] as unknown[]);
      return { kind, obj, outcome: 'parse-error' };
    }
    case 'missing-field': {
      const type = rng.pick(Object.keys(REQUIRED)) as CommandType;
      const { obj } = validCommand(rng, ctx, type);
      if (type === 'publish' && !('data' in obj)) obj.data = 1;
      delete obj[rng.pick(REQUIRED[type] as string[])];
      return { kind, obj, outcome: 'parse-error' };
    }
    case 'unknown-type': {
      const obj: Record<string, unknown> = rng.chance(0.2) ? {} : { type: rng.pick(UNKNOWN_TYPES) };
      if (rng.chance(0.3)) obj.channel = rng.pick(ctx.publishable);
      return { kind, obj, outcome: 'parse-error' };
    }
    case 'bad-id': {
      const { obj, outcome } = validCommand(rng, ctx, rng.pick(COMMAND_TYPES));
      obj.id = rng.pick(BAD_IDS);
      return { kind, obj, outcome };
    }
    case 'deep': {
      const levels = rng.pick([MAX_DATA_DEPTH, MAX_DATA_DEPTH + 1, 100, 1000, 10_000, 25_000]);
      const objects = levels <= 9000 && rng.chance(0.3);
      const splice = objects ? deepObjects(levels) : deepArrays(levels);
      const where = rng.weighted([
        ['data', 6],
        ['channel', 1],
        ['since', 1],
        ['extra', 2],
      ] as const);
      if (where === 'data') {
        const obj = { type: 'publish', channel: 'room:fuzz-deep', data: SPLICE };
        return { kind, obj, splice, outcome: levels <= MAX_DATA_DEPTH ? 'reply' : 'parse-error' };
      }
      if (where === 'channel')
        return { kind, obj: { type: 'subscribe', channel: SPLICE }, splice, outcome: 'parse-error' };
      if (where === 'since') {
        return {
          kind,
          obj: { type: 'subscribe', channel: 'room:fuzz-1', since: SPLICE },
          splice,
          outcome: 'parse-error',
        };
      }
      // Unknown fields are ignored, however deep.
      return { kind, obj: { type: 'ping', extra: SPLICE }, splice, outcome: 'reply' };
    }
    case 'long-string': {
      const long = rng.chance(0.5) ? 'x'.repeat(50_000) : '🎉'.repeat(12_000);
      switch (rng.int(6)) {
        case 0:
          return { kind, obj: { type: 'subscribe', channel: long }, outcome: 'parse-error' };
        case 1:
          return { kind, obj: { type: long }, outcome: 'parse-error' };
        case 2:
          return { kind, obj: { type: 'refresh', token: long }, outcome: 'parse-error' };
        case 3:
          return {
            kind,
            obj: { type: 'publish', channel: 'room:fuzz-long', data: 1, idempotencyKey: long },
            outcome: 'parse-error',
          };
        case 4:
          return { kind, obj: { type: 'publish', channel: 'room:fuzz-long', data: long }, outcome: 'reply' };
        default:
          return { kind, obj: { type: 'ping', [long.slice(0, 1000)]: long }, outcome: 'reply' };
      }
    }
    case 'channel-name': {
      const type = rng.pick(['subscribe', 'publish', 'history', 'presence', 'typing', 'unsubscribe'] as const);
      const { obj } = validCommand(rng, ctx, type);
      const channel = rng.pick(BAD_CHANNELS);
      obj.channel = channel;
      if (channel.length > 140) return { kind, obj, outcome: 'parse-error' };
      // Unsubscribing from a channel the connection is not in is `{}`, whatever its name.
      return { kind, obj, outcome: type === 'unsubscribe' ? 'any' : 'error' };
    }
    case 'extra-fields': {
      const built = validCommand(rng, ctx, rng.pick(COMMAND_TYPES));
      const extras: Record<string, unknown> = {};
      for (let i = 1 + rng.int(rng.chance(0.1) ? 100 : 4); i > 0; i--) {
        extras[rng.pick(['result', 'error', 'message', 'prototype', 'constructor', 'toString', randomString(rng, 6)])] =
          randomJson(rng, 2);
      }
      const obj = { ...extras, ...built.obj };
      const prefix = rng.chance(0.3) ? '"__proto__":{"admin":true,"type":"auth"}' : undefined;
      // A duplicate key: the last one wins, as in JSON.parse.
      if (rng.chance(0.2))
        return { kind, obj, prefix: `"type":${JSON.stringify(rng.pick(UNKNOWN_TYPES))}`, outcome: built.outcome };
      return { kind, obj, prefix, outcome: built.outcome };
    }
    case 'foreign-refresh':
      return { kind, obj: { type: 'refresh', token: ctx.otherToken }, outcome: 'error' };
    default: {
      const built = validCommand(rng, ctx, rng.pick(COMMAND_TYPES));
      return { kind, ...built };
    }
  }
}

function nextFrame(rng: Rng, ctx: WsContext): WsFrame {
  const built = buildCase(rng, ctx);
  if ('raw' in built) {
    // Not a JSON object (or binary): an error without an id, whatever it holds.
    return {
      kind: built.kind,
      payload: built.raw,
      binary: built.binary,
      id: undefined,
      expect: 'any',
      code: undefined,
      idlessError: true,
    };
  }
  const { kind, obj, outcome } = built;
  const typing = obj.type === 'typing';
  const idMode =
    'id' in obj
      ? 'invalid'
      : rng.weighted([
          ['valid', 75],
          ['absent', 12],
          ['null', 5],
          ['invalid', 8],
        ] as const);
  let id: number | undefined;
  let expect: Expect = 'any';
  let code: ErrorCode | undefined;
  let idlessError = false;
  if (idMode === 'invalid') {
    if (!('id' in obj)) obj.id = rng.pick(BAD_IDS);
    idlessError = true;
  } else if (idMode === 'valid') {
    id = ctx.nextId++;
    obj.id = id;
    if (outcome === 'parse-error') {
      expect = 'error';
      code = 'bad_request';
    } else if (typing) {
      // `typing` never gets a reply; when it fails after parsing, its error carries its id (docs/protocol.md).
      expect = 'optional';
    } else {
      expect = outcome;
    }
  } else {
    if (idMode === 'null') obj.id = null;
    idlessError = outcome === 'parse-error' || outcome === 'error';
  }
  let text = JSON.stringify(obj);
  if (built.splice !== undefined) text = text.replace(`"${SPLICE}"`, built.splice);
  if (built.prefix !== undefined) text = `{${built.prefix},${text.slice(1)}`;
  return { kind, payload: text, binary: false, id, expect, code, idlessError };
}

// ── a WebSocket client that counts instead of keeping frames ────────────────

interface Tally {
  replies: number;
  errorsWithId: number;
  errorsWithoutId: number;
  pushes: number;
  codes: Map<string, number>;
}

class FuzzClient {
  readonly expectations = new Map<number, { kind: string; expect: Expect; code: ErrorCode | undefined }>();
  readonly answers = new Map<number, { type: string; code: string | undefined }>();
  private readonly pending = new Set<number>();
  readonly problems: string[] = [];
  readonly tally: Tally = { replies: 0, errorsWithId: 0, errorsWithoutId: 0, pushes: 0, codes: new Map() };
  closed: { code: number; reason: string } | undefined;
  private welcomed = false;
  private wake: (() => void) | undefined;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => this.onMessage(data as Buffer, isBinary));
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.wake?.();
    });
    ws.on('error', () => undefined);
  }

  static async open(url: string, token: string): Promise<FuzzClient> {
    const client = new FuzzClient(new WebSocket(url, { headers: { authorization: `Bearer ${token}` } }));
    await client.until(() => client.welcomed, 5000, 'welcome');
    return client;
  }

  private problem(text: string): void {
    if (this.problems.length < 50) this.problems.push(text);
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      this.problem('the server sent a binary frame');
      return;
    }
    let frame: any;
    try {
      frame = JSON.parse(data.toString());
    } catch {
      this.problem(`the server sent a frame that is not JSON: ${data.toString().slice(0, 200)}`);
      return;
    }
    if (frame?.type === 'welcome') {
      this.welcomed = true;
    } else if (frame?.type === 'error') {
      const code = frame.error?.code;
      if (!isErrorCode(code) || typeof frame.error?.message !== 'string') {
        this.problem(`malformed error frame: ${data.toString().slice(0, 200)}`);
      }
      this.tally.codes.set(String(code), (this.tally.codes.get(String(code)) ?? 0) + 1);
      if (frame.id === undefined) this.tally.errorsWithoutId++;
      else this.tally.errorsWithId++;
    } else if (frame?.type === 'reply') {
      if (!('result' in frame)) this.problem(`reply without result: ${data.toString().slice(0, 200)}`);
      this.tally.replies++;
    } else {
      this.tally.pushes++;
    }
    if (frame?.id !== undefined) this.onAnswer(frame);
    if (this.pending.size === 0) this.wake?.();
  }

  private onAnswer(frame: any): void {
    const id = frame.id;
    if (!Number.isSafeInteger(id) || id < 1) this.problem(`answer with a bad id: ${JSON.stringify(frame.id)}`);
    else if (this.answers.has(id)) this.problem(`a second answer for id ${id}`);
    else if (!this.expectations.has(id)) this.problem(`an answer for id ${id}, which was never sent`);
    else this.answers.set(id, { type: frame.type, code: frame.error?.code });
    this.pending.delete(id);
  }

  send(frame: WsFrame, rng: Rng): void {
    if (frame.id !== undefined) {
      this.expectations.set(frame.id, { kind: frame.kind, expect: frame.expect, code: frame.code });
      if (frame.expect !== 'optional') this.pending.add(frame.id);
    }
    const bytes = typeof frame.payload === 'string' ? Buffer.from(frame.payload) : frame.payload;
    if (bytes.length > 8 && rng.chance(0.1)) {
      // Fragmented: cut at random bytes (UTF-8 sequences included); a ping may come between fragments.
      const cuts = [...new Set(Array.from({ length: 1 + rng.int(4) }, () => rng.int(bytes.length)))].sort(
        (a, b) => a - b,
      );
      let start = 0;
      for (const cut of [...cuts, bytes.length]) {
        const fin = cut === bytes.length;
        this.ws.send(bytes.subarray(start, cut), { binary: frame.binary, fin, compress: false });
        if (!fin && rng.chance(0.2)) this.ws.ping();
        start = cut;
      }
      return;
    }
    this.ws.send(bytes, { binary: frame.binary, compress: false });
  }

  /** Resolves once every frame sent with an id is answered. */
  answered(timeoutMs: number): Promise<void> {
    return this.until(() => this.pending.size === 0, timeoutMs, 'answers').catch((error: Error) => {
      const missing = [...this.pending].slice(0, 10).map((id) => `${id} (${this.expectations.get(id)?.kind})`);
      throw new Error(`${error.message}: ${this.pending.size} unanswered, e.g. ${missing.join(', ')} ${REPRODUCE}`);
    });
  }

  until(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (done()) {
          clearTimeout(timer);
          this.wake = undefined;
          resolve();
        } else if (this.closed) {
          clearTimeout(timer);
          this.wake = undefined;
          reject(new Error(`closed ${this.closed.code} "${this.closed.reason}" while waiting for ${what}`));
        }
      };
      const timer = setTimeout(() => {
        this.wake = undefined;
        reject(new Error(`timed out waiting for ${what}`));
      }, timeoutMs);
      this.wake = check;
      check();
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    const closed = new Promise((resolve) => this.ws.once('close', resolve));
    this.ws.close(1000);
    const timer = setTimeout(() => this.ws.terminate(), 2000);
    await closed;
    clearTimeout(timer);
  }
}

interface WsRunResult {
  frames: number;
  byKind: Map<string, { sent: number; reply: number; error: number; none: number }>;
  tally: Tally;
}

/** Sends `count` frames on each of `connections` sockets, pipelined, and checks every answer. */
async function runWebSocketFuzz(
  server: TestServer,
  rng: Rng,
  connections: number,
  count: number,
): Promise<WsRunResult> {
  const users = Array.from({ length: connections }, (_, i) => `fuzzer${i}`);
  const clients: FuzzClient[] = [];
  const result: WsRunResult = {
    frames: 0,
    byKind: new Map(),
    tally: { replies: 0, errorsWithId: 0, errorsWithoutId: 0, pushes: 0, codes: new Map() },
  };
  try {
    const contexts: WsContext[] = [];
    for (const [i, user] of users.entries()) {
      // One admin: it may publish to topics and user channels, which takes other paths.
      const token = await server.token(user, i === connections - 1 ? 'admin' : 'user');
      clients.push(await FuzzClient.open(`${server.wsUrl}/ws`, token));
      const peer = users[(i + 1) % users.length] as string;
      contexts.push({
        user,
        nextId: 1,
        subscribable: ['room:fuzz-1', 'room:fuzz-2', 'room:fuzz-3', 'topic:fuzz', `user:${user}`, dmOf(user, peer)],
        publishable: ['room:fuzz-1', 'room:fuzz-2', 'room:fuzz-4', 'topic:fuzz', `user:${peer}`, dmOf(user, peer)],
        readable: ['room:fuzz-1', 'room:fuzz-2', 'room:fuzz-nowhere', 'topic:fuzz', `user:${user}`, dmOf(user, peer)],
        ownToken: token,
        otherToken: await server.token(`${user}-other`),
      });
    }
    const bookkeeping = clients.map(() => ({ frames: [] as WsFrame[], idless: 0, idlessUpper: 0 }));
    for (const [i, client] of clients.entries()) {
      const ctx = contexts[i] as WsContext;
      const book = bookkeeping[i] as (typeof bookkeeping)[number];
      for (let n = 0; n < count; n++) {
        const frame = nextFrame(rng, ctx);
        book.frames.push(frame);
        if (frame.idlessError) book.idless++;
        if (frame.id === undefined) book.idlessUpper++;
        client.send(frame, rng);
      }
      // The marker: a publish answers after every earlier command, publishes included.
      const marker: WsFrame = {
        kind: 'marker',
        payload: JSON.stringify({ type: 'publish', channel: 'room:fuzz-marker', data: { marker: i }, id: ctx.nextId }),
        binary: false,
        id: ctx.nextId++,
        expect: 'reply',
        code: undefined,
        idlessError: false,
      };
      client.send(marker, rng);
    }
    await Promise.all(clients.map((client) => client.answered(ANSWER_TIMEOUT_MS)));

    for (const [i, client] of clients.entries()) {
      const book = bookkeeping[i] as (typeof bookkeeping)[number];
      const where = `connection ${i} ${REPRODUCE}`;
      assert.deepEqual(client.problems, [], `protocol violations on ${where}`);
      assert.equal(client.closed, undefined, `the server closed ${where}`);
      for (const frame of book.frames) {
        const counts = result.byKind.get(frame.kind) ?? { sent: 0, reply: 0, error: 0, none: 0 };
        result.byKind.set(frame.kind, counts);
        counts.sent++;
        const answer = frame.id === undefined ? undefined : client.answers.get(frame.id);
        if (answer) counts[answer.type === 'reply' ? 'reply' : 'error']++;
        else counts.none++;
        if (frame.id === undefined) continue;
        const what = `${frame.kind} frame id ${frame.id} ${String(frame.payload).slice(0, 160)} on ${where}`;
        if (frame.expect === 'optional') {
          assert.ok(answer === undefined || answer.type === 'error', `a typing command got a reply: ${what}`);
          continue;
        }
        assert.ok(answer, `no answer to ${what}`);
        if (frame.expect !== 'any') assert.equal(answer.type, frame.expect, `answer to ${what}`);
        if (frame.code !== undefined) assert.equal(answer.code, frame.code, `error code for ${what}`);
      }
      // Frames without a valid id: those certain to fail got an error each, and no more errors came than frames.
      assert.ok(
        client.tally.errorsWithoutId >= book.idless,
        `${client.tally.errorsWithoutId} errors without id, expected at least ${book.idless} on ${where}`,
      );
      assert.ok(
        client.tally.errorsWithoutId <= book.idlessUpper,
        `${client.tally.errorsWithoutId} errors without id, expected at most ${book.idlessUpper} on ${where}`,
      );
      result.frames += book.frames.length + 1;
      result.tally.replies += client.tally.replies;
      result.tally.errorsWithId += client.tally.errorsWithId;
      result.tally.errorsWithoutId += client.tally.errorsWithoutId;
      result.tally.pushes += client.tally.pushes;
      for (const [code, n] of client.tally.codes) result.tally.codes.set(code, (result.tally.codes.get(code) ?? 0) + n);
    }
    assert.equal(result.tally.codes.get('internal'), undefined, `internal errors ${REPRODUCE}`);
    // Nothing here is the store's or the broker's fault: a malformed frame must not surface as one.
    assert.equal(result.tally.codes.get('unavailable'), undefined, `unavailable errors ${REPRODUCE}`);
    return result;
  } finally {
    await Promise.all(clients.map((client) => client.close()));
  }
}

function dmOf(a: string, b: string): string {
  return a < b ? `dm:${a}:${b}` : `dm:${b}:${a}`;
}

// ── frames that end the connection ──────────────────────────────────────────

interface ClosingCase {
  name: string;
  /** Authenticate on upgrade (true) or send garbage before authenticating (false). */
  authenticated: boolean;
  send(ws: WebSocket): void;
  close: number;
}

const INVALID_UTF8 = [
  [0xff],
  [0xfe, 0xff],
  [0xc3, 0x28],
  [0xc0, 0xaf],
  [0xe2, 0x82],
  [0xed, 0xa0, 0x80],
  [0xf5, 0x80, 0x80, 0x80],
  [0xf0, 0x9f, 0x8e],
  [0x80],
];

function closingCases(rng: Rng): ClosingCase[] {
  const cases: ClosingCase[] = [];
  for (const bytes of INVALID_UTF8) {
    const text = Buffer.concat([Buffer.from('{"type":"ping","id":1,"x":"'), Buffer.from(bytes), Buffer.from('"}')]);
    cases.push({
      name: `invalid UTF-8 ${Buffer.from(bytes).toString('hex')} in a text frame`,
      authenticated: true,
      send: (ws) => ws.send(text, { binary: false, compress: false }),
      close: 1007,
    });
  }
  const bad = Buffer.from(rng.pick(INVALID_UTF8));
  cases.push({
    name: 'invalid UTF-8 in the last fragment of a text message',
    authenticated: true,
    send: (ws) => {
      ws.send(Buffer.from('{"type":"ping","x":"'), { binary: false, fin: false, compress: false });
      ws.send(Buffer.concat([bad, Buffer.from('"}')]), { binary: false, fin: true, compress: false });
    },
    close: 1007,
  });
  cases.push({
    name: 'a UTF-8 sequence cut by a fragment boundary and never completed',
    authenticated: true,
    send: (ws) => {
      ws.send(Buffer.from([0x22, 0xe2, 0x82]), { binary: false, fin: false, compress: false });
      ws.send(Buffer.from([0x28, 0x22]), { binary: false, fin: true, compress: false });
    },
    close: 1007,
  });
  cases.push({
    name: 'invalid UTF-8 before authenticating',
    authenticated: false,
    send: (ws) => ws.send(Buffer.from([0xff, 0xfe]), { binary: false, compress: false }),
    close: 1007,
  });
  cases.push({
    name: 'a text frame above MAX_MESSAGE_BYTES',
    authenticated: true,
    send: (ws) => ws.send(`{"type":"ping","x":"${'x'.repeat(MAX_MESSAGE_BYTES)}"}`),
    close: 1009,
  });
  cases.push({
    name: 'a binary frame above MAX_MESSAGE_BYTES',
    authenticated: true,
    send: (ws) => ws.send(Buffer.alloc(MAX_MESSAGE_BYTES + 1), { binary: true }),
    close: 1009,
  });
  cases.push({
    name: 'fragments adding up to more than MAX_MESSAGE_BYTES',
    authenticated: true,
    send: (ws) => {
      const part = Buffer.alloc(MAX_MESSAGE_BYTES / 4 + 1, 0x20);
      for (let i = 0; i < 4; i++) ws.send(part, { binary: false, fin: false, compress: false });
      ws.send(Buffer.from('{}'), { binary: false, fin: true, compress: false });
    },
    close: 1009,
  });
  const preAuth: Array<[string, string | Buffer, boolean]> = [
    ['bad JSON', mangle(rng, '{"type":"auth","token":"x"}'), false],
    ['an array', '[{"type":"auth"}]', false],
    ['a ping', '{"type":"ping","id":1}', false],
    ['auth with a number token', '{"type":"auth","token":42}', false],
    ['auth with a junk token', `{"type":"auth","token":${JSON.stringify(rng.pick(JUNK_TOKENS))}}`, false],
    ['auth with a bad id', '{"type":"auth","token":"x","id":1e308}', false],
    ['a binary frame', Buffer.from('{"type":"auth","token":"x"}'), true],
  ];
  for (const [what, payload, binary] of preAuth) {
    cases.push({
      name: `${what} as the first frame, unauthenticated`,
      authenticated: false,
      send: (ws) => ws.send(payload, { binary, compress: false }),
      close: 1008,
    });
  }
  return cases;
}

async function expectClose(server: TestServer, index: number, closing: ClosingCase): Promise<number> {
  const headers: Record<string, string> = {};
  if (closing.authenticated) headers.authorization = `Bearer ${await server.token(`closer${index}`)}`;
  const ws = new WebSocket(`${server.wsUrl}/ws`, { headers });
  ws.on('error', () => undefined);
  try {
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    const welcomed = new Promise<void>((resolve) => {
      ws.on('message', (data) => {
        if (String(data).includes('"welcome"')) resolve();
      });
    });
    await Promise.race([new Promise((resolve) => ws.once('open', resolve)), closed]);
    if (closing.authenticated) await Promise.race([welcomed, closed]);
    closing.send(ws);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no close after ${closing.name} ${REPRODUCE}`)), 5000);
    });
    try {
      return await Promise.race([closed, timeout]);
    } finally {
      clearTimeout(timer);
    }
  } finally {
    ws.terminate();
  }
}

// ── HTTP ────────────────────────────────────────────────────────────────────

interface Operation {
  method: string;
  path: string;
  params: string[];
  query: string[];
  bodySchema: any;
  contentTypes: string[];
}

interface RawResponse {
  status: number;
  contentType: string;
  text: string;
}

function httpRequest(
  base: URL,
  agent: http.Agent | false,
  method: string,
  path: string,
  headers: Record<string, string>,
  body: Buffer | undefined,
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        host: base.hostname,
        port: base.port,
        method,
        path,
        agent,
        headers: body === undefined ? headers : { ...headers, 'content-length': String(body.length) },
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            contentType: String(response.headers['content-type'] ?? ''),
            text: Buffer.concat(chunks).toString(),
          }),
        );
        response.on('error', reject);
      },
    );
    request.setTimeout(10_000, () => request.destroy(new Error(`timed out: ${method} ${path.slice(0, 200)}`)));
    request.on('error', reject);
    request.end(body);
  });
}

/** Why a response breaks the contract (PROTOCOL §4), or undefined when it keeps it. */
function contractBreach(response: RawResponse): string | undefined {
  const { status } = response;
  if (status >= 200 && status < 300) return undefined;
  if (status < 400 || status >= 500) return `status ${status}`;
  if (!response.contentType.startsWith('application/json'))
    return `${status} with content-type "${response.contentType}"`;
  let body: any;
  try {
    body = JSON.parse(response.text);
  } catch {
    return `${status} with a body that is not JSON`;
  }
  const code = body?.error?.code;
  if (!isErrorCode(code) || typeof body.error.message !== 'string' || Object.keys(body).length !== 1) {
    return `${status} with a body that is not {"error":{"code","message"}}`;
  }
  if (ERROR_CODES[code].status !== status) return `${status} with code ${code} (${ERROR_CODES[code].status})`;
  return undefined;
}

async function operationsOf(server: TestServer): Promise<Operation[]> {
  const spec = (await server.http('GET', '/openapi.json')).body;
  const operations: Operation[] = [];
  for (const [path, item] of Object.entries<any>(spec.paths)) {
    for (const method of ['get', 'post', 'put', 'patch', 'delete']) {
      const operation = item[method];
      if (!operation) continue;
      const parameters: any[] = operation.parameters ?? [];
      const content = operation.requestBody?.content ?? {};
      const contentTypes = Object.keys(content);
      operations.push({
        method: method.toUpperCase(),
        path,
        params: parameters.filter((p) => p.in === 'path').map((p) => p.name),
        query: parameters.filter((p) => p.in === 'query').map((p) => p.name),
        bodySchema: contentTypes.length > 0 ? content[contentTypes[0] as string].schema : undefined,
        contentTypes,
      });
    }
  }
  return operations;
}

/** A value the schema accepts (as far as these routes go). */
function validValue(rng: Rng, schema: any, name = ''): unknown {
  if (schema === undefined) return { text: 'fuzz' };
  if ('const' in schema) return schema.const;
  if (Array.isArray(schema.enum)) return schema.enum[0];
  switch (schema.type) {
    case 'string':
      // Passwords never match (a sign-in fails and counts towards the lock-out instead of hashing again
      // and again), and few distinct names (a second registration is 409 before any hashing).
      if (name === 'password') return `fuzzpassword${rng.int(1_000_000)}`;
      return name === 'username' ? 'fuzzvalue0' : `fuzzvalue${rng.int(4)}`;
    case 'integer':
    case 'number':
      return 1;
    case 'boolean':
      return rng.chance(0.5);
    case 'array':
      return [];
    case 'object': {
      const value: Record<string, unknown> = {};
      for (const [name, property] of Object.entries<any>(schema.properties ?? {})) {
        if ((schema.required ?? []).includes(name) || rng.chance(0.5)) value[name] = validValue(rng, property, name);
      }
      return value;
    }
    default:
      return randomJson(rng, 2);
  }
}

const JUNK_VALUES: unknown[] = [
  null,
  0,
  -1,
  1.5,
  1e308,
  true,
  '',
  'x'.repeat(5000),
  [],
  [1],
  ['fuzzvalue'],
  {},
  { a: { b: {} } },
  '\u0000',
  '🎉',
  '\ud800',
];

const JUNK_PATH_PARAMS = [
  '%00',
  '..',
  '.',
  '%2e%2e',
  '..%2F..%2Fetc%2Fpasswd',
  '%2F',
  'a%2Fb',
  '%zz',
  '%',
  '%E0%A4%A',
  '%C0%AF',
  '%EF%BF%BF',
  '%F0%9F%8E%89',
  '%0d%0a',
  '%20',
  '%u0041',
  "'%20OR%201=1--",
  '%3Cscript%3E',
  '__proto__',
  'constructor',
  'room%3Ax',
  'dm:a:b',
  'topic:x',
  'user:x',
  'nope:x',
  '-1',
  '0',
  '1e308',
  'null',
  ';',
  '~',
  '*',
  'a'.repeat(65),
  'a'.repeat(141),
  'a'.repeat(600),
  'a'.repeat(5000),
];

const JUNK_QUERIES = [
  '?',
  '?before=-1',
  '?before=0',
  '?before=1.5',
  '?before=abc',
  '?before=1e308',
  '?before=9007199254740993',
  '?before=%00',
  '?limit=0',
  '?limit=101',
  '?limit=abc',
  '?limit=',
  '?limit=1&limit=2',
  '?limit[]=1',
  '?limit=%zz',
  '?%zz=1',
  '?__proto__=1',
  '?constructor=x',
  '?token=junk',
  '?token=',
  `?x=${'a'.repeat(5000)}`,
  '?limit=50&before=1',
];

const JUNK_BODIES = [
  '',
  ' ',
  '{',
  '}',
  '{"a":',
  '{"a":1}x',
  "{'a':1}",
  '{a:1}',
  '{"a":NaN}',
  '{"a":1,}',
  '/* c */{}',
  '\ufeff{}',
  '[]',
  '[1,2]',
  '1',
  '"x"',
  'null',
  'true',
  '{"__proto__":{"admin":true}}',
  '{"constructor":{"prototype":{"admin":true}}}',
];

const CONTENT_TYPES = [
  'text/plain',
  'application/xml',
  'multipart/form-data; boundary=x',
  'application/json; charset=utf-16',
  'application/JSON',
  'application/merge-patch+json',
  '*/*',
  'application/x-www-form-urlencoded',
  'application/octet-stream',
  'application/json, text/plain',
];

interface HttpContext {
  userToken: string;
  adminToken: string;
  taskIds: string[];
}

function httpCase(
  rng: Rng,
  op: Operation,
  ctx: HttpContext,
): { method: string; path: string; headers: Record<string, string>; body: Buffer | undefined; fresh: boolean } {
  const headers: Record<string, string> = {};
  switch (
    rng.weighted([
      ['user', 40],
      ['admin', 15],
      ['none', 10],
      ['garbage', 15],
      ['api-key', 8],
      ['bad-api-key', 5],
      ['query-token', 7],
    ] as const)
  ) {
    case 'user':
      headers.authorization = `Bearer ${ctx.userToken}`;
      break;
    case 'admin':
      headers.authorization = `Bearer ${ctx.adminToken}`;
      break;
    case 'garbage':
      headers.authorization = rng.pick([
        'Bearer',
        'Bearer ',
        'Bearer a.b.c',
        'Bearer a b',
        `Bearer ${ctx.userToken}x`,
        `Bearer ${ctx.userToken.split('.').slice(0, 2).join('.')}.`,
        'Basic YTpi',
        'bearer',
        `Bearer ${'t'.repeat(8000)}`,
        'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiIsInJvbGUiOiJhZG1pbiJ9.',
      ]);
      break;
    case 'api-key':
      headers['x-api-key'] = API_KEY;
      break;
    case 'bad-api-key':
      headers['x-api-key'] = rng.pick(['', 'x', `${API_KEY}x`, 'k'.repeat(4000)]);
      break;
    default:
      break;
  }
  let path = op.path;
  for (const name of op.params) {
    const valid =
      name === 'room'
        ? ['fuzz-room', 'general']
        : name === 'channel'
          ? [
              'room:fuzz-room',
              'topic:fuzz',
              'user:fuzzuser',
              'dm:fuzzuser:zed',
              `dm:${'a'.repeat(64)}:${'b'.repeat(64)}`,
            ]
          : [...ctx.taskIds, 'nope'];
    path = path.replace(`{${name}}`, rng.chance(0.4) ? rng.pick(valid) : rng.pick(JUNK_PATH_PARAMS));
  }
  let query = '';
  if (op.query.length > 0 && rng.chance(0.6)) query = rng.pick(JUNK_QUERIES);
  if (rng.chance(0.05)) query += `${query ? '&' : '?'}token=${rng.chance(0.5) ? ctx.userToken : 'junk'}`;
  let method = op.method;
  if (rng.chance(0.04)) method = rng.pick(['OPTIONS', 'PUT', 'PATCH', 'DELETE', 'POST', 'GET', 'TRACE']);

  let body: string | undefined;
  let fresh = false;
  const hasBody = op.bodySchema !== undefined || rng.chance(0.15);
  if (hasBody && method !== 'TRACE') {
    const valid = validValue(rng, op.bodySchema);
    const bodyKind = rng.weighted([
      ['valid', 8],
      ['junk-text', 15],
      ['wrong-type', 25],
      ['missing', 8],
      ['unknown-fields', 10],
      ['huge', 3],
      ['too-large', 2],
      ['deep', 6],
      ['form', 6],
      ['random-json', 10],
    ] as const);
    headers['content-type'] = 'application/json';
    switch (bodyKind) {
      case 'valid':
        body = JSON.stringify(valid);
        break;
      case 'junk-text':
        body = rng.pick(JUNK_BODIES);
        break;
      case 'wrong-type': {
        const value = typeof valid === 'object' && valid !== null && !Array.isArray(valid) ? { ...valid } : {};
        const names = Object.keys(op.bodySchema?.properties ?? { data: 1 });
        (value as Record<string, unknown>)[rng.pick(names)] = rng.pick(JUNK_VALUES);
        body = JSON.stringify(value);
        break;
      }
      case 'missing':
        body = '{}';
        break;
      case 'unknown-fields':
        body = JSON.stringify({ ...(valid as object), [randomString(rng, 5)]: randomJson(rng, 2), zzz: 1 });
        break;
      case 'huge': {
        const names = Object.keys(op.bodySchema?.properties ?? { data: 1 });
        body = JSON.stringify({ ...(valid as object), [rng.pick(names)]: 'x'.repeat(60_000) });
        break;
      }
      case 'too-large':
        body = JSON.stringify({ data: 'x'.repeat(100_000) });
        fresh = true;
        break;
      case 'deep': {
        const levels = rng.pick([MAX_DATA_DEPTH, MAX_DATA_DEPTH + 1, 1000, 10_000, 30_000]);
        const deep = levels <= 9000 && rng.chance(0.3) ? deepObjects(levels) : deepArrays(levels);
        const names = Object.keys(op.bodySchema?.properties ?? { data: 1 });
        body = `{"${rng.pick(names)}":${deep}}`;
        break;
      }
      case 'form':
        headers['content-type'] = 'application/x-www-form-urlencoded';
        body = rng.pick([
          'username=fuzzvalue1&password=fuzzpassword',
          'username=%zz&password=%',
          'username[a]=1&password=2',
          'username=a&username=b&password=2',
          'refresh_token=x&refresh_token=y',
          '&&&==',
          `data=${'x'.repeat(3000)}`,
          '{"title":"x"}',
        ]);
        break;
      default:
        body = JSON.stringify(randomJson(rng, 3));
    }
    if (rng.chance(0.15)) {
      const contentType = rng.pick([...CONTENT_TYPES, '']);
      if (contentType === '') delete headers['content-type'];
      else headers['content-type'] = contentType;
    }
  }
  return { method, path: path + query, headers, body: body === undefined ? undefined : Buffer.from(body), fresh };
}

interface HttpRunResult {
  requests: number;
  statuses: Map<number, number>;
}

async function runHttpFuzz(server: TestServer, rng: Rng, perOperation: number): Promise<HttpRunResult> {
  const base = new URL(server.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: HTTP_CONCURRENCY });
  const userToken = await server.token('fuzzuser');
  const adminToken = await server.token('fuzzadmin', 'admin');
  const taskIds: string[] = [];
  for (let i = 0; i < 3; i++) {
    const created = await server.http('POST', '/tasks', { token: userToken, body: { title: `fuzz task ${i}` } });
    assert.equal(created.status, 201);
    taskIds.push(created.body.id);
  }
  const ctx: HttpContext = { userToken, adminToken, taskIds };
  const operations = await operationsOf(server);
  assert.ok(operations.length >= 10, `only ${operations.length} operations in /openapi.json`);
  // Sign-up and sign-in hash passwords (scrypt, 32 MiB and ~0.3 s each in the libuv pool): they get a
  // lane of two workers, so parallel sign-ups of one name do not all hash before the first is stored.
  const hashing: Array<ReturnType<typeof httpCase>> = [];
  const others: Array<ReturnType<typeof httpCase>> = [];
  for (const op of operations) {
    const lane = op.path === '/auth/register' || op.path === '/auth/token' ? hashing : others;
    for (let i = 0; i < perOperation; i++) lane.push(httpCase(rng, op, ctx));
  }
  const result: HttpRunResult = { requests: 0, statuses: new Map() };
  const breaches: string[] = [];
  const worker = async (queue: typeof others) => {
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) {
      const headers = item.fresh ? { ...item.headers, connection: 'close' } : item.headers;
      let response: RawResponse;
      try {
        response = await httpRequest(base, item.fresh ? false : agent, item.method, item.path, headers, item.body);
      } catch (error) {
        breaches.push(`${item.method} ${item.path.slice(0, 120)}: ${(error as Error).message}`);
        continue;
      }
      result.requests++;
      result.statuses.set(response.status, (result.statuses.get(response.status) ?? 0) + 1);
      const breach = contractBreach(response);
      if (breach && breaches.length < 20) {
        const sent = item.body?.toString().slice(0, 120) ?? '';
        breaches.push(
          `${item.method} ${item.path.slice(0, 120)} [${headers['content-type'] ?? ''}] ${sent}: ${breach}: ${response.text.slice(0, 200)}`,
        );
      }
    }
  };
  try {
    await Promise.all([
      ...Array.from({ length: 2 }, () => worker(hashing)),
      ...Array.from({ length: HTTP_CONCURRENCY - 2 }, () => worker(others)),
    ]);
  } finally {
    agent.destroy();
  }
  assert.deepEqual(breaches, [], `HTTP contract breaches ${REPRODUCE}`);
  return result;
}

/** Sends bytes that are not a well-formed HTTP/1.1 request and parses what comes back. */
function rawHttp(port: number, request: string): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer to ${JSON.stringify(request.slice(0, 80))}`));
    }, 5000);
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString();
      const head = /^HTTP\/1\.1 (\d{3})[^\r]*\r\n([\s\S]*?)\r\n\r\n/.exec(text);
      if (!head) return reject(new Error(`not an HTTP response: ${JSON.stringify(text.slice(0, 200))}`));
      const contentType = /^content-type:\s*(.*)$/im.exec(head[2] as string)?.[1] ?? '';
      resolve({ status: Number(head[1]), contentType: contentType.trim(), text: text.slice(head[0].length) });
    });
    socket.write(request);
  });
}

// ── heap ────────────────────────────────────────────────────────────────────

/** `global.gc` when node runs with --expose-gc (npm test does), else the same function obtained in process. */
function findGc(): (() => void) | undefined {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (typeof exposed === 'function') return exposed;
  try {
    v8.setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc');
    return typeof gc === 'function' ? gc : undefined;
  } catch {
    return undefined;
  }
}

async function settledHeap(gc: (() => void) | undefined): Promise<number> {
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    gc?.();
  }
  return process.memoryUsage().heapUsed;
}

const MiB = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

// ── the tests ───────────────────────────────────────────────────────────────

describe('fuzz: hostile input', () => {
  let server: TestServer;
  const gc = findGc();
  let heapBefore = 0;

  before(async () => {
    server = await startServer(ENV);
    // Warm-up with its own seed: compiled validators, prepared statements and JIT code are not growth.
    await runWebSocketFuzz(server, Rng.derive(SEED, 100), 2, 200);
    await runHttpFuzz(server, Rng.derive(SEED, 101), 5);
    heapBefore = await settledHeap(gc);
  });

  after(async () => {
    await server?.close();
  });

  test('websocket: 10,000 malformed frames get an error, a reply or a documented close', async (t) => {
    t.diagnostic(`FUZZ_SEED=${SEED}`);
    const started = Date.now();
    const result = await runWebSocketFuzz(server, Rng.derive(SEED, 1), WS_CONNECTIONS, FRAMES_PER_CONNECTION);
    assert.ok(result.frames >= 10_000, `only ${result.frames} frames`);
    t.diagnostic(`${result.frames} frames over ${WS_CONNECTIONS} connections in ${Date.now() - started} ms`);
    const { tally } = result;
    t.diagnostic(
      `replies ${tally.replies}, errors with id ${tally.errorsWithId}, errors without id ${tally.errorsWithoutId}, pushes ${tally.pushes}`,
    );
    t.diagnostic(`error codes: ${[...tally.codes].map(([code, n]) => `${code} ${n}`).join(', ')}`);
    for (const [kind, counts] of [...result.byKind].sort()) {
      t.diagnostic(
        `  ${kind}: sent ${counts.sent}, reply ${counts.reply}, error ${counts.error}, no answer by id ${counts.none}`,
      );
    }
  });

  test('websocket: invalid UTF-8, oversized frames and garbage before auth close with a documented code', async (t) => {
    t.diagnostic(`FUZZ_SEED=${SEED}`);
    const cases = closingCases(Rng.derive(SEED, 2));
    const seen = new Map<number, number>();
    for (const [i, closing] of cases.entries()) {
      const code = await expectClose(server, i, closing);
      assert.ok(DOCUMENTED_CLOSES.has(code), `${closing.name}: closed ${code} ${REPRODUCE}`);
      assert.equal(code, closing.close, `${closing.name} ${REPRODUCE}`);
      seen.set(code, (seen.get(code) ?? 0) + 1);
    }
    t.diagnostic(`${cases.length} connections closed: ${[...seen].map(([code, n]) => `${code} ×${n}`).join(', ')}`);
  });

  test('http: malformed requests to every route in /openapi.json get a 4xx with the error body', async (t) => {
    t.diagnostic(`FUZZ_SEED=${SEED}`);
    const started = Date.now();
    const result = await runHttpFuzz(server, Rng.derive(SEED, 3), HTTP_REQUESTS_PER_OPERATION);
    assert.ok(result.requests >= 3000, `only ${result.requests} requests`);
    t.diagnostic(`${result.requests} requests in ${Date.now() - started} ms`);
    t.diagnostic(
      `statuses: ${[...result.statuses]
        .sort(([a], [b]) => a - b)
        .map(([status, n]) => `${status} ×${n}`)
        .join(', ')}`,
    );
  });

  test('http: what Node refuses before routing also gets the error body', async () => {
    const port = Number(new URL(server.url).port);
    const cases: Array<[string, number]> = [
      ['GARBAGE\r\n\r\n', 400],
      ['GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n', 400],
      ['GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', 400],
      [
        'POST /tasks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n\r\n',
        400,
      ],
      ['GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n', 400],
      [`GET /me HTTP/1.1\r\nHost: x\r\nX-Long: ${'a'.repeat(20_000)}\r\n\r\n`, 413],
      [`GET /rooms/${'a'.repeat(20_000)}/messages HTTP/1.1\r\nHost: x\r\n\r\n`, 413],
    ];
    for (const [request, status] of cases) {
      const response = await rawHttp(port, request);
      const what = JSON.stringify(request.slice(0, 60));
      assert.equal(contractBreach(response), undefined, `${what}: ${response.status} ${response.text.slice(0, 200)}`);
      assert.equal(response.status, status, what);
    }
    // Fastify's own refusals before a route runs.
    const base = new URL(server.url);
    for (const [path, message] of [
      ['/rooms/%zz/messages?token=secret-in-url', /percent-encoding/],
      [`/tasks/${'x'.repeat(600)}`, /longer than/],
    ] as const) {
      const response = await httpRequest(base, false, 'GET', path, {}, undefined);
      assert.equal(contractBreach(response), undefined, `${path.slice(0, 60)}: ${response.text.slice(0, 200)}`);
      assert.equal(response.status, 400);
      assert.match(response.text, message);
      assert.doesNotMatch(response.text, /secret-in-url/, 'the URL (and its token) is not echoed');
    }
    // A dm: channel of two 64-character names is 132 characters: it must route.
    const dm = `dm:${'a'.repeat(64)}:${'b'.repeat(64)}`;
    const published = await server.http('POST', `/publish/${dm}`, {
      headers: { 'x-api-key': API_KEY },
      body: { data: 1 },
    });
    assert.equal(published.status, 202, published.text);
  });

  test('data nested deeper than MAX_DATA_DEPTH is bad_request on every path that publishes', async () => {
    const token = await server.token('deepuser');
    const admin = await server.token('deepadmin', 'admin');
    const tooDeep = `{"data":${deepArrays(MAX_DATA_DEPTH + 1)}}`;
    const deepest = `{"data":${deepArrays(MAX_DATA_DEPTH)}}`;
    for (const [path, auth, created] of [
      ['/rooms/fuzz-deep-http/messages', token, 201],
      ['/publish/room:fuzz-deep-http', admin, 202],
    ] as const) {
      const refused = await server.http('POST', path, { token: auth, body: tooDeep });
      assert.equal(refused.status, 400, refused.text);
      assert.equal(refused.body.error.code, 'bad_request');
      assert.match(refused.body.error.message, /nested too deeply/);
      const accepted = await server.http('POST', path, { token: auth, body: deepest });
      assert.equal(accepted.status, created, accepted.text);
    }
    const socket = await server.ws('/ws', { token });
    await socket.welcome();
    const answer = socket.waitFor((f) => f.id === 999_999, 5000, 'the deep publish answer');
    socket.send(`{"type":"publish","channel":"room:fuzz-deep-ws","id":999999,"data":${deepArrays(10_000)}}`);
    const refused = await answer;
    assert.equal(refused.type, 'error');
    assert.equal(refused.error.code, 'bad_request');
    assert.match(refused.error.message, /nested too deeply/);
    // A deep publish does not take down the publishes committed with it.
    const ids = [1_000_001, 1_000_002, 1_000_003];
    const answers = ids.map((id) => socket.waitFor((f) => f.id === id, 5000, `answer ${id}`));
    socket.send({ type: 'publish', channel: 'room:fuzz-deep-ws', data: 'before', id: ids[0] });
    socket.send(`{"type":"publish","channel":"room:fuzz-deep-ws","id":${ids[1]},"data":${deepArrays(10_000)}}`);
    socket.send({ type: 'publish', channel: 'room:fuzz-deep-ws', data: 'after', id: ids[2] });
    const [first, deep, last] = await Promise.all(answers);
    assert.equal(first?.type, 'reply');
    assert.equal(deep?.type, 'error');
    assert.equal(last?.type, 'reply');
    socket.close(1000);
    await socket.closed;
  });

  test('the heap after the run, after GC, is within a generous bound of the heap before', async (t) => {
    const heapAfter = await settledHeap(gc);
    t.diagnostic(`gc ${gc ? 'available' : 'NOT available: numbers include garbage'}`);
    t.diagnostic(`heapUsed before ${MiB(heapBefore)}, after ${MiB(heapAfter)}, growth ${MiB(heapAfter - heapBefore)}`);
    assert.ok(
      heapAfter - heapBefore < HEAP_SLACK_BYTES,
      `heap grew by ${MiB(heapAfter - heapBefore)} (before ${MiB(heapBefore)}, after ${MiB(heapAfter)})`,
    );
  });

  test('the server still serves a subscribe/publish round trip', async () => {
    const alice = await server.ws('/ws', { token: await server.token('roundtrip-alice') });
    const bob = await server.ws('/ws', { token: await server.token('roundtrip-bob') });
    await alice.welcome();
    await bob.welcome();
    const subscribed = await alice.ok({ type: 'subscribe', channel: 'room:fuzz-after' });
    assert.equal(subscribed.channel, 'room:fuzz-after');
    const published = await bob.ok({ type: 'publish', channel: 'room:fuzz-after', data: { text: 'still here' } });
    const push = await alice.next((f) => f.type === 'message' && f.message.id === published.id, 5000, 'the push');
    assert.deepEqual(push.message.data, { text: 'still here' });
    assert.equal(push.message.offset, subscribed.offset + 1);
    alice.close(1000);
    bob.close(1000);
    assert.equal((await alice.closed).code, 1000);
    assert.equal((await bob.closed).code, 1000);
  });
});
