import { badRequest, forbidden } from '../errors.ts';

/** A channel name part, and a username inside a token or a `dm:` channel. */
export const NAME = /^[A-Za-z0-9_.-]{1,64}$/;
export const USERNAME_IN_TOKEN = NAME;

export const NAMESPACES = ['room', 'dm', 'topic', 'user'] as const;
export type Namespace = (typeof NAMESPACES)[number];

export interface ChannelName {
  /** The full name, `namespace:name`. */
  channel: string;
  namespace: Namespace;
  name: string;
  /** For `dm:a:b`: the two users, sorted. */
  members?: readonly [string, string];
}

const MAX_CHANNEL_LENGTH = 140;

/**
 * Parses and validates a channel name (PROTOCOL §2). A malformed name is
 * `bad_request`; a well-formed name in a namespace without rules is
 * `forbidden` (deny by default).
 */
export function parseChannel(channel: unknown): ChannelName {
  if (typeof channel !== 'string' || channel.length > MAX_CHANNEL_LENGTH) {
    throw badRequest('channel must be a string "namespace:name"');
  }
  const colon = channel.indexOf(':');
  if (colon <= 0) throw badRequest(`channel "${channel}" must be "namespace:name"`);
  // The constant, not the slice: a subscription keeps its ChannelName, and the slice is a string of its own.
  const namespace = NAMESPACES.find((known) => channel.startsWith(known) && known.length === colon);
  const name = channel.slice(colon + 1);
  if (namespace === undefined) {
    throw forbidden(`no channel namespace "${channel.slice(0, colon)}" (known: ${NAMESPACES.join(', ')})`);
  }
  if (namespace === 'dm') {
    const parts = name.split(':');
    const [a, b] = parts;
    if (parts.length !== 2 || a === undefined || b === undefined || !NAME.test(a) || !NAME.test(b)) {
      throw badRequest('a direct-message channel is "dm:<user>:<user>"');
    }
    if (!(a < b)) throw badRequest(`direct-message users must be sorted and distinct: use "dm:${b}:${a}"`);
    return { channel, namespace, name, members: [a, b] };
  }
  if (!NAME.test(name)) throw badRequest('a channel name is 1-64 of A-Z a-z 0-9 _ . -');
  return { channel, namespace, name };
}

/** The `dm:` channel between two users. */
export function dmChannel(a: string, b: string): string {
  return a < b ? `dm:${a}:${b}` : `dm:${b}:${a}`;
}
