import type { ErrorCode } from '../errors.ts';
import type { StoredMessage } from '../store/store.ts';

/**
 * Encoders of server-to-client frames (PROTOCOL §3). A message is turned into
 * JSON once; the push and the publisher's reply are spliced around that text
 * instead of stringifying the message again per frame or per recipient.
 */

/**
 * `JSON.stringify(message)`, given the JSON of its data: the same text, key
 * for key, but the data (most of a message) is not stringified again. The
 * other fields are short and go through JSON.stringify themselves.
 */
export function messageJson(message: StoredMessage, dataJson: string): string {
  return `{"id":${JSON.stringify(message.id)},"channel":${JSON.stringify(message.channel)},"offset":${message.offset},"epoch":${JSON.stringify(message.epoch)},"from":${JSON.stringify(message.from)},"data":${dataJson},"ts":${JSON.stringify(message.ts)}}`;
}

export function messagePushText(channel: string, messageJson: string): string {
  return `{"type":"message","channel":${JSON.stringify(channel)},"message":${messageJson}}`;
}

export function encodeMessagePush(message: StoredMessage): Buffer {
  return Buffer.from(messagePushText(message.channel, JSON.stringify(message)));
}

/** A reply whose result is already JSON text. */
export function replyText(id: number, resultJson: string): string {
  return `{"id":${id},"type":"reply","result":${resultJson}}`;
}

export function errorText(id: number | undefined, code: ErrorCode, message: string): string {
  const error = JSON.stringify({ code, message });
  return id === undefined ? `{"type":"error","error":${error}}` : `{"id":${id},"type":"error","error":${error}}`;
}

export function eventText(type: 'join' | 'leave' | 'typing', channel: string, user: string): string {
  return JSON.stringify({ type, channel, user });
}
