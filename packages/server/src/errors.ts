/**
 * The one registry of error codes (PROTOCOL §3 and §4). Each code has one
 * HTTP status; the WebSocket close codes live in `realtime/close-codes.ts`.
 * A test checks this table against docs/protocol.md, so add a code in both.
 */
export const ERROR_CODES = {
  bad_request: { status: 400, message: 'The request is malformed' },
  unauthorized: { status: 401, message: 'Missing or invalid credentials' },
  forbidden: { status: 403, message: 'Not allowed' },
  not_found: { status: 404, message: 'Not found' },
  conflict: { status: 409, message: 'Conflict' },
  too_large: { status: 413, message: 'Too large' },
  rate_limited: { status: 429, message: 'Too many requests' },
  internal: { status: 500, message: 'Internal error' },
  unavailable: { status: 503, message: 'Temporarily unavailable' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value);
}

/** An expected failure with a stable code; anything else thrown is `internal`. */
export class ParleyError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** Seconds a client should wait, sent as Retry-After on 429/503. */
  readonly retryAfter: number | undefined;

  constructor(code: ErrorCode, message: string = ERROR_CODES[code].message, retryAfter?: number) {
    super(message);
    this.name = 'ParleyError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.retryAfter = retryAfter;
  }

  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

export const badRequest = (message: string) => new ParleyError('bad_request', message);
export const forbidden = (message: string) => new ParleyError('forbidden', message);
export const notFound = (message: string) => new ParleyError('not_found', message);
export const unauthorized = (message: string = ERROR_CODES.unauthorized.message) =>
  new ParleyError('unauthorized', message);

/** The body of every HTTP error and the `error` of every error frame. */
export function errorBody(error: ParleyError): { code: ErrorCode; message: string } {
  return { code: error.code, message: error.message };
}
