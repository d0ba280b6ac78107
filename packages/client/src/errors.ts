import { type ErrorCode, isErrorCode } from './wire.ts';

/** The server's error codes (PROTOCOL §3), plus the two failures only a client sees. */
export type ClientErrorCode = ErrorCode | 'timeout' | 'disconnected';

/**
 * Every failure the SDK reports: a command's error frame (`code` is the
 * server's), no reply in time (`timeout`), or the client closed or gone
 * offline before the reply (`disconnected`).
 */
export class ParleyError extends Error {
  readonly code: ClientErrorCode;
  /**
   * A failed `publish`'s idempotency key. After a `timeout` or
   * `disconnected` the message may have been stored all the same: publishing
   * again with this key stores it at most once.
   */
  readonly idempotencyKey: string | undefined;

  constructor(code: ClientErrorCode, message: string, options?: { cause?: unknown; idempotencyKey?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ParleyError';
    this.code = code;
    this.idempotencyKey = options?.idempotencyKey;
  }
}

/** The ParleyError of an error frame; an unknown code (a newer server) reads as `internal`. */
export function fromErrorFrame(error: { code?: unknown; message?: unknown } | undefined): ParleyError {
  const code = isErrorCode(error?.code) ? error.code : 'internal';
  const message = typeof error?.message === 'string' ? error.message : code;
  return new ParleyError(code, message);
}
