import { createHash, randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import { type Tables, toMillis } from '../store/schema.ts';
import type { Role } from './tokens.ts';

/** 32 random bytes, base64url: what `issue` hands out. Anything else cannot be ours. */
const TOKEN_SHAPE = /^[A-Za-z0-9_-]{43}$/;

export interface IssuedRefreshToken {
  token: string;
  /** Seconds from now. */
  expiresIn: number;
}

export type RotateResult =
  | { ok: true; username: string; role: string }
  | { ok: false; reason: 'unknown' | 'expired' | 'reused'; username?: string };

/**
 * Opaque refresh tokens. Only a SHA-256 of each is stored, so a leaked
 * database does not hand out sessions; a plain hash (no salt, no scrypt)
 * is enough because the tokens are 256 random bits, not guessable passwords.
 */
export class RefreshTokenRepository {
  constructor(
    private readonly db: Kysely<Tables>,
    private readonly ttlSeconds: number,
    private readonly now: () => number = Date.now,
  ) {}

  async issue(username: string, role: Role): Promise<IssuedRefreshToken> {
    const token = randomBytes(32).toString('base64url');
    const now = this.now();
    await this.db
      .insertInto('refresh_tokens')
      .values({
        token_hash: hashOf(token),
        username,
        role,
        expires_at: now + this.ttlSeconds * 1000,
        used_at: null,
        created_at: now,
      })
      .execute();
    // Expired rows are worthless, even for reuse detection: sweep this user's on each sign-in.
    await this.db
      .deleteFrom('refresh_tokens')
      .where('username', '=', username)
      .where('expires_at', '<=', now)
      .execute();
    return { token, expiresIn: this.ttlSeconds };
  }

  /**
   * Spends a refresh token: it works once. The single conditional UPDATE is
   * the atomic step, so of two concurrent uses exactly one wins, on any
   * number of instances sharing the database.
   *
   * Reuse detection: a token presented again after it was spent means two
   * parties hold it, and one of them stole it (from a log, a backup, a
   * compromised client). We cannot tell which is the thief, so every
   * refresh token of that user still outstanding is revoked and everyone
   * must sign in again with a password; the access tokens already issued
   * run out within ACCESS_TOKEN_TTL. Spent rows are kept until they expire
   * so reuse stays detectable. Clients must therefore never refresh twice
   * with the same token (two tabs racing count as reuse).
   */
  async rotate(token: string): Promise<RotateResult> {
    if (!TOKEN_SHAPE.test(token)) return { ok: false, reason: 'unknown' };
    const tokenHash = hashOf(token);
    const now = this.now();
    const spent = await this.db
      .updateTable('refresh_tokens')
      .set({ used_at: now })
      .where('token_hash', '=', tokenHash)
      .where('used_at', 'is', null)
      .where('expires_at', '>', now)
      .executeTakeFirst();
    const row = await this.db
      .selectFrom('refresh_tokens')
      .select(['username', 'role', 'used_at', 'expires_at'])
      .where('token_hash', '=', tokenHash)
      .executeTakeFirst();
    if (Number(spent.numUpdatedRows) === 1 && row) return { ok: true, username: row.username, role: row.role };
    if (!row) return { ok: false, reason: 'unknown' };
    if (toMillis(row.expires_at) <= now) return { ok: false, reason: 'expired', username: row.username };
    await this.revokeAll(row.username);
    return { ok: false, reason: 'reused', username: row.username };
  }

  /** Revokes every outstanding (unspent) refresh token of a user. */
  async revokeAll(username: string): Promise<void> {
    await this.db.deleteFrom('refresh_tokens').where('username', '=', username).where('used_at', 'is', null).execute();
  }
}

function hashOf(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}
