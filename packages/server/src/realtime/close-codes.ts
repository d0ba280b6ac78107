/**
 * WebSocket close codes (PROTOCOL §3) and what a client should do on each.
 * The client SDK reads the same table.
 */
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
