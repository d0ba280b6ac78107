import { type TSchema, Type } from '@sinclair/typebox';
import { ERROR_CODES, type ErrorCode } from './errors.ts';

/**
 * JSON Schemas shared by the HTTP routes. They validate requests and are
 * published in /openapi.json, so clients see the same shapes the server checks.
 */

export const ErrorResponse = Type.Object(
  {
    error: Type.Object({
      code: Type.Unsafe<ErrorCode>({ type: 'string', enum: Object.keys(ERROR_CODES) }),
      message: Type.String(),
    }),
  },
  { description: 'An error; its code matches the status' },
);

/** Documents the error statuses a route may answer with. */
export function errors(...statuses: number[]): Record<number, TSchema> {
  return Object.fromEntries(statuses.map((status) => [status, ErrorResponse]));
}

type Security = Array<Record<string, string[]>>;
export const BEARER: Security = [{ bearer: [] }];
/** Either credential opens the server API. */
export const API_KEY_OR_BEARER: Security = [{ apiKey: [] }, { bearer: [] }];

/** The part after `namespace:` of a channel, and a room name. */
export const NamePattern = '^[A-Za-z0-9_.-]{1,64}$';
export const Username = Type.String({ pattern: NamePattern, description: '1-64 of A-Z a-z 0-9 _ . -' });

export const IdempotencyKey = Type.String({
  minLength: 1,
  maxLength: 64,
  description: 'A retry with the same key (same sender, same channel, within 10 minutes) returns the first message',
});

export const Message = Type.Object(
  {
    id: Type.String(),
    channel: Type.String(),
    offset: Type.Integer({ minimum: 1, description: '1, 2, 3… per channel, no gaps' }),
    epoch: Type.String({ description: 'Offsets are comparable only within one epoch' }),
    from: Type.String(),
    data: Type.Unknown({ description: 'Any JSON value' }),
    ts: Type.String({ format: 'date-time' }),
  },
  { description: 'A stored message, as pushed over WebSocket' },
);

export const HistoryPage = Type.Object({
  messages: Type.Array(Message, { description: 'Oldest first' }),
  hasMore: Type.Boolean({ description: 'Older messages exist before the first one here' }),
});

/**
 * Query values are strings: `?before=&limit=` (a form with empty fields)
 * means "not given". `nullable` makes ajv's type coercion turn an empty value
 * into null instead of refusing it, and readers take null as absent
 * (`limit ?? 50`; the stores take a null `before` as the latest). The static
 * type stays `number | undefined` so handlers read them as optional.
 */
const EMPTY_AS_ABSENT = { nullable: true } as const;

export const HistoryQuery = Type.Object({
  before: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: Number.MAX_SAFE_INTEGER,
      description: 'Offset, exclusive; empty or absent: the latest',
      ...EMPTY_AS_ABSENT,
    }),
  ),
  limit: Type.Optional(
    Type.Integer({ minimum: 1, maximum: 100, default: 50, description: 'Empty or absent: 50', ...EMPTY_AS_ABSENT }),
  ),
});

export const PublishBody = Type.Object({
  data: Type.Unknown({ description: 'Any JSON value; the web client sends {"text": "…"}' }),
  idempotencyKey: Type.Optional(IdempotencyKey),
});
