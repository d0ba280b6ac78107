import { type ErrorCode, isErrorCode } from '@parley/server/errors';

/** The server's error codes (PROTOCOL §3), plus the two failures only a client sees. */
export type ClientErrorCode = ErrorCode | 'timeout' | 'disconnected';

/**
 * Every failure the SDK reports: a command's error frame (`code` is the
 * server's), no reply in time (`timeout`), or the client closed or gone
 * offline before the reply (`disconnected`).
 */
export class ParleyError extends Error {
  readonly code: ClientErrorCode;

  constructor(code: ClientErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ParleyError';
    this.code = code;
  }
}

/** The ParleyError of an error frame; an unknown code (a newer server) reads as `internal`. */
export function fromErrorFrame(error: { code?: unknown; message?: unknown } | undefined): ParleyError {
  const code = isErrorCode(error?.code) ? error.code : 'internal';
  const message = typeof error?.message === 'string' ? error.message : code;
  return new ParleyError(code, message);
}
