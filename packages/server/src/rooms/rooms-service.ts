import type { Kysely } from 'kysely';
import { NAME } from '../channels/names.ts';
import { badRequest, forbidden, notFound, ParleyError } from '../errors.ts';
import { type Tables, toMillis } from '../store/schema.ts';

export interface Room {
  name: string;
  private: boolean;
  creator: string;
  /** Members of a private room (the creator included); empty for a public room. */
  members: ReadonlySet<string>;
  createdAt: string;
}

export interface RoomView {
  name: string;
  private: boolean;
  creator: string;
  members?: string[];
  createdAt: string;
}

/**
 * Room metadata is read on every subscribe and every publish by a socket
 * not subscribed to the room, so it is cached. Changes made here drop the
 * entry at once; another instance's changes are seen within CACHE_TTL_MS.
 */
const CACHE_TTL_MS = 2000;

function isUniqueViolation(error: unknown): boolean {
  const e = error as { code?: string; message?: string };
  return (
    e?.code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || e?.code === '23505' || /UNIQUE constraint/.test(e?.message ?? '')
  );
}

export class RoomsService {
  private readonly cache = new Map<string, { room: Room | undefined; expires: number }>();

  constructor(private readonly db: Kysely<Tables>) {}

  async get(name: string): Promise<Room | undefined> {
    const cached = this.cache.get(name);
    const now = Date.now();
    if (cached && cached.expires > now) return cached.room;
    const row = await this.db.selectFrom('rooms').selectAll().where('name', '=', name).executeTakeFirst();
    let room: Room | undefined;
    if (row) {
      const members = row.is_private
        ? (await this.db.selectFrom('room_members').select('username').where('room', '=', name).execute()).map(
            (m) => m.username,
          )
        : [];
      room = {
        name: row.name,
        private: row.is_private === 1,
        creator: row.creator,
        members: new Set(members),
        createdAt: new Date(toMillis(row.created_at)).toISOString(),
      };
    }
    this.cache.set(name, { room, expires: now + CACHE_TTL_MS });
    return room;
  }

  /** A public room is created by its first join; an existing room is returned as it is. */
  async getOrCreatePublic(name: string, creator: string): Promise<Room> {
    const existing = await this.get(name);
    if (existing) return existing;
    await this.db
      .insertInto('rooms')
      .values({ name, is_private: 0, creator, created_at: Date.now() })
      .onConflict((oc) => oc.column('name').doNothing())
      .execute();
    this.cache.delete(name);
    return (await this.get(name)) as Room;
  }

  async create(input: { name: string; private?: boolean; members?: string[] }, creator: string): Promise<Room> {
    if (!NAME.test(input.name)) throw badRequest('a room name is 1-64 of A-Z a-z 0-9 _ . -');
    const isPrivate = input.private === true;
    const members = new Set(isPrivate ? [creator, ...(input.members ?? [])] : []);
    for (const member of members) if (!NAME.test(member)) throw badRequest(`"${member}" is not a valid username`);
    if (!isPrivate && input.members && input.members.length > 0) {
      throw badRequest('members are only for a private room');
    }
    const now = Date.now();
    try {
      await this.db.transaction().execute(async (trx) => {
        await trx
          .insertInto('rooms')
          .values({ name: input.name, is_private: isPrivate ? 1 : 0, creator, created_at: now })
          .execute();
        if (members.size > 0) {
          await trx
            .insertInto('room_members')
            .values([...members].map((username) => ({ room: input.name, username, added_at: now })))
            .execute();
        }
      });
    } catch (error) {
      if (isUniqueViolation(error)) throw new ParleyError('conflict', `room "${input.name}" already exists`);
      throw error;
    }
    this.cache.delete(input.name);
    return (await this.get(input.name)) as Room;
  }

  /** Adds `username` (the creator only may); `added` is false when they were a member already. */
  async addMember(roomName: string, username: string, actor: string): Promise<{ room: Room; added: boolean }> {
    const room = await this.get(roomName);
    if (!room) throw notFound(`no room "${roomName}"`);
    if (room.creator !== actor) throw forbidden('only the room creator adds members');
    if (!room.private) throw badRequest('a public room has no member list: anyone signed in may join');
    if (!NAME.test(username)) throw badRequest(`"${username}" is not a valid username`);
    await this.db
      .insertInto('room_members')
      .values({ room: roomName, username, added_at: Date.now() })
      .onConflict((oc) => oc.columns(['room', 'username']).doNothing())
      .execute();
    this.cache.delete(roomName);
    return { room: (await this.get(roomName)) as Room, added: !room.members.has(username) };
  }

  /** Public rooms and the private rooms the user belongs to, by name. */
  async listVisible(user: string): Promise<RoomView[]> {
    const rows = await this.db
      .selectFrom('rooms')
      .selectAll()
      .where((eb) =>
        eb.or([
          eb('is_private', '=', 0),
          eb('name', 'in', eb.selectFrom('room_members').select('room').where('username', '=', user)),
        ]),
      )
      .orderBy('name')
      .execute();
    const views: RoomView[] = [];
    for (const row of rows) {
      const room = row.is_private ? await this.get(row.name) : undefined;
      views.push(
        toView(
          room ?? {
            name: row.name,
            private: row.is_private === 1,
            creator: row.creator,
            members: new Set(),
            createdAt: new Date(toMillis(row.created_at)).toISOString(),
          },
        ),
      );
    }
    return views;
  }

  static canAccess(room: Room, user: string): boolean {
    return !room.private || room.members.has(user);
  }
}

export function toView(room: Room): RoomView {
  const view: RoomView = { name: room.name, private: room.private, creator: room.creator, createdAt: room.createdAt };
  if (room.private) view.members = [...room.members].sort();
  return view;
}
