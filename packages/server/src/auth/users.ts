import type { Kysely } from 'kysely';
import { ParleyError } from '../errors.ts';
import type { Tables } from '../store/schema.ts';
import { ROLES, type Role } from './tokens.ts';

export interface UserRecord {
  username: string;
  passwordHash: string;
  role: Role;
}

/** Registered users (only those who sign in with a password; token-only users never appear here). */
export class UsersRepository {
  constructor(private readonly db: Kysely<Tables>) {}

  /** Adds a user; `conflict` when the username is taken. */
  async create(username: string, passwordHash: string, role: Role = 'user'): Promise<void> {
    // ON CONFLICT DO NOTHING rather than catching a driver error: the same on SQLite and
    // PostgreSQL, and a race between two registrations still yields exactly one winner.
    const result = await this.db
      .insertInto('users')
      .values({ username, password_hash: passwordHash, role, created_at: Date.now() })
      .onConflict((conflict) => conflict.column('username').doNothing())
      .executeTakeFirst();
    if (Number(result.numInsertedOrUpdatedRows ?? 0) === 0) {
      throw new ParleyError('conflict', `username "${username}" is taken`);
    }
  }

  async find(username: string): Promise<UserRecord | undefined> {
    const row = await this.db
      .selectFrom('users')
      .select(['username', 'password_hash', 'role'])
      .where('username', '=', username)
      .executeTakeFirst();
    if (!row) return undefined;
    // A role edited by hand into something unknown grants nothing more than `user`.
    const role = (ROLES as readonly string[]).includes(row.role) ? (row.role as Role) : 'user';
    return { username: row.username, passwordHash: row.password_hash, role };
  }

  async updatePasswordHash(username: string, passwordHash: string): Promise<void> {
    await this.db.updateTable('users').set({ password_hash: passwordHash }).where('username', '=', username).execute();
  }
}
