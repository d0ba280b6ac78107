import type { Generated } from 'kysely';

/**
 * The tables as Kysely sees them, the same on SQLite and PostgreSQL. Times are
 * integer milliseconds since the epoch (`bigint` on PostgreSQL; postgres.ts
 * has its pool parse int8 as a number, but read them through `toMillis`
 * anyway, as pg's default is a string).
 */
export interface Tables {
  meta: { key: string; value: string };
  users: { username: string; password_hash: string; role: string; created_at: number | string };
  refresh_tokens: {
    token_hash: string;
    username: string;
    role: string;
    expires_at: number | string;
    used_at: number | string | null;
    created_at: number | string;
  };
  rooms: { name: string; is_private: number; creator: string; created_at: number | string };
  room_members: { room: string; username: string; added_at: number | string };
  tasks: {
    id: string;
    title: string;
    description: string;
    done: number;
    created_by: string;
    created_at: number | string;
    updated_at: number | string;
  };
  channels: { name: string; last_seq: number | string };
  messages: {
    channel: string;
    seq: number | string;
    id: string;
    sender: string;
    data: string;
    ts: number | string;
    /** Unused since migration 0002 (see idempotency_keys); kept for instances of the previous release. */
    idem_key: string | null;
  };
  /** One row per idempotency key in use: (channel, sender, key) → the first message stored with it. */
  idempotency_keys: {
    channel: string;
    sender: string;
    idem_key: string;
    seq: number | string;
    id: string;
    data: string;
    ts: number | string;
  };
  /** Kysely's own bookkeeping tables are not listed. */
  _unused?: { id: Generated<number> };
}

export function toMillis(value: number | string): number {
  return typeof value === 'number' ? value : Number(value);
}
