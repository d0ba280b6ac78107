/**
 * The parts of the contract (PROTOCOL §3) the SDK acts on, owned here so the
 * built package runs on its own: no import of `@parley/server` at run time
 * or in the published types. test/wire.test.ts checks every table and type
 * against the server's, so a change there fails until it is made here too.
 */

/** WebSocket close codes. */
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  POLICY: 1008,
  TOO_LARGE: 1009,
  INTERNAL: 1011,
  TRY_AGAIN_LATER: 1013,
  TOKEN_EXPIRED: 4001,
  AUTH_TIMEOUT: 4002,
  RATE_LIMITED: 4008,
  TOO_SLOW: 4009,
} as const;

export type CloseCodeValue = (typeof CloseCode)[keyof typeof CloseCode];

export type ClientAdvice = 'stop' | 'reconnect' | 'backoff' | 'refresh' | 'fix-sender';

/** What a client does on each close code. */
export const CLOSE_ADVICE: Record<CloseCodeValue, ClientAdvice> = {
  1000: 'stop',
  1001: 'reconnect',
  1008: 'stop',
  1009: 'fix-sender',
  1011: 'backoff',
  1013: 'backoff',
  4001: 'refresh',
  4002: 'reconnect',
  4008: 'backoff',
  4009: 'reconnect',
};

/** The server's error codes, in error frames and as the reason of close 1008. */
export const ERROR_CODES = [
  'bad_request',
  'unauthorized',
  'forbidden',
  'not_found',
  'conflict',
  'too_large',
  'rate_limited',
  'internal',
  'unavailable',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && (ERROR_CODES as readonly string[]).includes(value);
}

/** A message as stored and delivered. */
export interface StoredMessage {
  id: string;
  channel: string;
  offset: number;
  epoch: string;
  from: string;
  data: unknown;
  /** ISO 8601 */
  ts: string;
}

/** A client command as sent, before it gets its id. */
export type CommandBody =
  | { type: 'auth'; token: string }
  | { type: 'subscribe'; channel: string; since?: { offset: number; epoch: string } }
  | { type: 'unsubscribe'; channel: string }
  | { type: 'publish'; channel: string; data: unknown; idempotencyKey?: string }
  | { type: 'history'; channel: string; before?: number; limit?: number }
  | { type: 'presence'; channel: string }
  | { type: 'typing'; channel: string }
  | { type: 'refresh'; token: string }
  | { type: 'ping' };
