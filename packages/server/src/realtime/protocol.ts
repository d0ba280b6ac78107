import { type Static, type TSchema, Type } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import type { ErrorCode } from '../errors.ts';
import { DATA_TOO_DEEP, MAX_DATA_DEPTH, nestsDeeperThan } from '../json-depth.ts';

/**
 * Client-to-server frames (PROTOCOL §3), one JSON Schema each, compiled once.
 * Parsing is a pure function of the frame text so it is tested without
 * sockets (test/protocol.test.ts).
 */

const Channel = Type.String({ minLength: 1, maxLength: 140 });
const Token = Type.String({ minLength: 1, maxLength: 8192 });

export const ClientFrames = {
  auth: Type.Object({ token: Token }),
  subscribe: Type.Object({
    channel: Channel,
    since: Type.Optional(
      Type.Object({
        offset: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
        epoch: Type.String({ maxLength: 200 }),
      }),
    ),
  }),
  unsubscribe: Type.Object({ channel: Channel }),
  publish: Type.Object({
    channel: Channel,
    data: Type.Unknown(),
    idempotencyKey: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  }),
  history: Type.Object({
    channel: Channel,
    before: Type.Optional(Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
  }),
  presence: Type.Object({ channel: Channel }),
  typing: Type.Object({ channel: Channel }),
  refresh: Type.Object({ token: Token }),
  ping: Type.Object({}),
} satisfies Record<string, TSchema>;

export type CommandType = keyof typeof ClientFrames;
export type Command = {
  [K in CommandType]: { type: K; id: number | undefined } & Static<(typeof ClientFrames)[K]>;
}[CommandType];
export type CommandOf<K extends CommandType> = Extract<Command, { type: K }>;

const validators = Object.fromEntries(
  Object.entries(ClientFrames).map(([type, schema]) => [type, TypeCompiler.Compile(schema)]),
) as unknown as Record<CommandType, ReturnType<typeof TypeCompiler.Compile>>;

export type ParseResult =
  | { ok: true; command: Command }
  | { ok: false; id: number | undefined; code: ErrorCode; message: string };

function fail(id: number | undefined, message: string): ParseResult {
  return { ok: false, id, code: 'bad_request', message };
}

/** Parses one text frame into a validated command, or says why not. */
export function parseClientFrame(text: string): ParseResult {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return fail(undefined, 'frame is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return fail(undefined, 'frame must be a JSON object');
  }
  const frame = value as Record<string, unknown>;
  const rawId = frame.id;
  let id: number | undefined;
  if (rawId !== undefined && rawId !== null) {
    if (typeof rawId !== 'number' || !Number.isSafeInteger(rawId) || rawId < 1) {
      return fail(undefined, 'id must be a positive integer');
    }
    id = rawId;
  }
  const type = frame.type;
  if (typeof type !== 'string') return fail(id, 'type is required');
  if (!Object.hasOwn(validators, type)) return fail(id, `unknown command type "${type.slice(0, 40)}"`);
  if (type === 'publish' && !('data' in frame)) return fail(id, 'publish needs data');
  const validator = validators[type as CommandType];
  if (!validator.Check(frame)) {
    const first = validator.Errors(frame).First();
    const where = first?.path ? first.path.slice(1).replaceAll('/', '.') : type;
    return fail(id, `${where}: ${first?.message ?? 'invalid'}`);
  }
  if (type === 'publish' && nestsDeeperThan(frame.data, MAX_DATA_DEPTH)) return fail(id, DATA_TOO_DEEP);
  frame.id = id;
  return { ok: true, command: frame as Command };
}

/** Whether a text frame on a room shortcut is a command (a JSON object with a type). */
export function looksLikeCommand(text: string): boolean {
  const first = text.trimStart()[0];
  if (first !== '{') return false;
  try {
    const value = JSON.parse(text);
    return typeof value === 'object' && value !== null && typeof value.type === 'string';
  } catch {
    return false;
  }
}
