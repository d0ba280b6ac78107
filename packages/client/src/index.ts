export { type BackoffOptions, backoffDelay } from './backoff.ts';
export {
  type ChannelUserEvent,
  type ConnectionState,
  type HistoryResult,
  newIdempotencyKey,
  ParleyClient,
  type ParleyClientOptions,
  type PresenceEntry,
  type SubscribeResult,
  type WelcomeEvent,
} from './client.ts';
export { type ClientErrorCode, ParleyError } from './errors.ts';
export { decodeJwtExp } from './jwt.ts';
export { ChannelSequencer, type Gap } from './sequencer.ts';
export { CLOSE_ADVICE, CloseCode, type ErrorCode, type StoredMessage } from './wire.ts';
