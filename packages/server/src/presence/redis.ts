import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { closeRedis, openRedis, redisUnavailable } from '../broker/redis-connection.ts';
import type { PresenceEntry, PresenceStore } from './presence.ts';

export interface RedisPresenceOptions {
  url: string;
  /** Prefix of every Redis key (REDIS_KEY_PREFIX). */
  prefix: string;
  /** This instance (INSTANCE_ID); its liveness key is `${prefix}alive:${instanceId}:<random per process>`. */
  instanceId: string;
  log: Logger;
  /** Lifetime of the liveness key (default 15 s): how long after its last refresh an instance counts as dead. */
  livenessTtlMs?: number | undefined;
  /** How often the liveness key is refreshed (default 5 s); keep it well under the TTL. */
  refreshMs?: number | undefined;
  /** How long `connect` waits for Redis (default 5 s). */
  connectTimeoutMs?: number | undefined;
}

export const LIVENESS_TTL_MS = 15_000;
export const LIVENESS_REFRESH_MS = 5_000;
/** Channels per reap script, so one call never holds Redis long. */
const REAP_BATCH = 200;
/** Script calls per pipeline when re-registering local members. */
const RESTORE_BATCH = 1000;
/** Most removals kept for retry while Redis is away; beyond it they are dropped (and reaped when this instance dies). */
const MAX_PENDING_REMOVALS = 100_000;

/*
 * Keys of one channel (the `{channel}` hash tag keeps them in one cluster slot):
 *   …presence:{c}:conns   HASH  `${user}\0${connectionId}` → owner
 *   …presence:{c}:users   HASH  user → connections
 *   …presence:{c}:owners  HASH  owner → connections
 * and one per instance process:
 *   …alive:<owner>        STRING '1', PX livenessTtlMs
 * An owner is `<instanceId>:<incarnation>`, the incarnation random per
 * process: a restarted instance with the same INSTANCE_ID is a new owner (the
 * old process's members are still reaped), and two instances given the same
 * INSTANCE_ID by mistake do not take each other for dead. An owner is alive
 * while its liveness key exists. Empty hashes vanish.
 */

const OWNER_ALIVE_LUA = `
local function alive(prefix, owner, self, cache)
  if owner == self then return true end
  local known = cache[owner]
  if known == nil then
    known = redis.call('EXISTS', prefix .. owner) == 1
    cache[owner] = known
  end
  return known
end
local function userOf(field)
  return string.sub(field, 1, string.find(field, '\\0', 1, true) - 1)
end
`;

/** KEYS conns, users, owners; ARGV field, user, owner. 1 when it is the user's first connection. */
const ADD_LUA = `
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then return 1 end
return 0
`;

/** KEYS conns, users, owners; ARGV field, user. 1 when it removed the user's last connection. */
const REMOVE_LUA = `
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if not owner then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HINCRBY', KEYS[3], owner, -1) <= 0 then redis.call('HDEL', KEYS[3], owner) end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  return 1
end
return 0
`;

/**
 * KEYS conns, users, owners; ARGV alive-key prefix, own owner. Flat
 * [user, count, …] of live owners' connections: the users hash as it is
 * when every owner is alive, else counted from the connections (read only:
 * taking the dead out is reap's job, which announces the leaves).
 */
const LIST_LUA = `${OWNER_ALIVE_LUA}
local cache = {}
local dead = nil
for _, owner in ipairs(redis.call('HKEYS', KEYS[3])) do
  if not alive(ARGV[1], owner, ARGV[2], cache) then
    dead = dead or {}
    dead[owner] = true
  end
end
if not dead then return redis.call('HGETALL', KEYS[2]) end
local counts, order = {}, {}
local conns = redis.call('HGETALL', KEYS[1])
for i = 1, #conns, 2 do
  if not dead[conns[i + 1]] then
    local user = userOf(conns[i])
    if counts[user] then counts[user] = counts[user] + 1 else counts[user] = 1; order[#order + 1] = user end
  end
end
local out = {}
for _, user in ipairs(order) do out[#out + 1] = user; out[#out + 1] = counts[user] end
return out
`;

/**
 * KEYS conns, users, owners of each channel in turn; ARGV alive-key prefix,
 * own owner. Removes the connections of dead owners and returns flat
 * [channel index (0-based), user, …] for each user whose last connection
 * went. Atomic, so of two instances reaping at once only one sees a leave.
 */
const REAP_LUA = `${OWNER_ALIVE_LUA}
local cache = {}
local out = {}
for c = 0, #KEYS / 3 - 1 do
  local conns, users, owners = KEYS[c * 3 + 1], KEYS[c * 3 + 2], KEYS[c * 3 + 3]
  local dead = nil
  for _, owner in ipairs(redis.call('HKEYS', owners)) do
    if not alive(ARGV[1], owner, ARGV[2], cache) then
      dead = dead or {}
      dead[owner] = true
    end
  end
  if dead then
    local all = redis.call('HGETALL', conns)
    for i = 1, #all, 2 do
      if dead[all[i + 1]] then
        local user = userOf(all[i])
        redis.call('HDEL', conns, all[i])
        if redis.call('HINCRBY', users, user, -1) <= 0 then
          redis.call('HDEL', users, user)
          out[#out + 1] = c
          out[#out + 1] = user
        end
      end
    end
    for owner in pairs(dead) do redis.call('HDEL', owners, owner) end
  end
end
return out
`;

interface PresenceScripts {
  parleyPresenceAdd(
    conns: string,
    users: string,
    owners: string,
    field: string,
    user: string,
    owner: string,
  ): Promise<number>;
  parleyPresenceRemove(conns: string, users: string, owners: string, field: string, user: string): Promise<number>;
  parleyPresenceList(
    conns: string,
    users: string,
    owners: string,
    alivePrefix: string,
    self: string,
  ): Promise<Array<string | number>>;
  parleyPresenceReap(numberOfKeys: number, ...args: string[]): Promise<Array<string | number>>;
}

type ScriptedRedis = Redis & PresenceScripts;
type ScriptedPipeline = ReturnType<Redis['pipeline']> & {
  parleyPresenceAdd(...args: string[]): unknown;
  parleyPresenceRemove(...args: string[]): unknown;
};

const byUser = (a: PresenceEntry, b: PresenceEntry) => (a.user < b.user ? -1 : a.user > b.user ? 1 : 0);

/**
 * Presence shared by every instance given the same REDIS_URL. Each
 * operation is one Lua script, so join/leave decisions are atomic across
 * instances: `add` is true only for a user's first connection in the
 * channel on any instance, `remove` only for the last.
 *
 * Instance death: every connection records its owner (this process), and
 * each process keeps its liveness key `${prefix}alive:${instanceId}:<random>`
 * with a TTL (15 s) refreshed every 5 s by one unref'd timer. `reap` (called
 * by the channel service every PRESENCE_REAP_MS = 5 s, in the channels the
 * instance serves) removes the connections of owners whose key is gone.
 * Bound: the key of a process killed without a word lapses at most TTL after
 * its death (it was refreshed at most 5 s before it), and the next reap
 * follows within 5 s, so its users' leaves are announced within about
 * TTL + reap interval = 20 s. `list` already hides a dead owner's
 * connections once its key is gone, before they are reaped. A channel no
 * live instance serves is not reaped (nobody is there to tell); its dead
 * entries stay hidden and are reaped once an instance serves it again.
 *
 * Redis losing its data (a restart without persistence) or this instance
 * being cut off longer than the TTL (and reaped by others) is healed: the
 * store keeps a mirror of its own members, and when its liveness key was
 * found missing or after any failed write it registers them all again
 * (joins are not re-announced; removals that failed meanwhile are retried,
 * their leaves are not announced).
 */
export class RedisPresenceStore implements PresenceStore {
  readonly name = 'redis';
  private readonly client: ScriptedRedis;
  private readonly prefix: string;
  private readonly alivePrefix: string;
  /** This process as the owner of its members. */
  readonly owner: string;
  /** `${prefix}alive:${owner}`: exists while this process is alive. */
  readonly livenessKey: string;
  private readonly livenessTtlMs: number;
  private readonly refreshMs: number;
  private readonly log: Logger;
  /** This process's members: channel → field → user. */
  private readonly local = new Map<string, Map<string, string>>();
  /** Removals that failed while Redis was away, retried on restore: `${channel}\n${field}` → user. */
  private readonly pendingRemovals = new Map<string, { channel: string; field: string; user: string }>();
  /** Redis may not hold every local member (a write failed, the connection dropped). */
  private dirty = false;
  private lost = false;
  private refreshing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(client: Redis, options: RedisPresenceOptions) {
    this.client = client as ScriptedRedis;
    this.prefix = options.prefix;
    this.alivePrefix = `${options.prefix}alive:`;
    this.owner = `${options.instanceId}:${randomBytes(6).toString('hex')}`;
    this.livenessKey = this.alivePrefix + this.owner;
    this.livenessTtlMs = options.livenessTtlMs ?? LIVENESS_TTL_MS;
    this.refreshMs = options.refreshMs ?? LIVENESS_REFRESH_MS;
    this.log = options.log;
    client.defineCommand('parleyPresenceAdd', { numberOfKeys: 3, lua: ADD_LUA });
    client.defineCommand('parleyPresenceRemove', { numberOfKeys: 3, lua: REMOVE_LUA });
    client.defineCommand('parleyPresenceList', { numberOfKeys: 3, lua: LIST_LUA, readOnly: true });
    client.defineCommand('parleyPresenceReap', { lua: REAP_LUA });
    client.on('close', () => {
      if (this.closed) return;
      this.dirty = true;
      if (!this.lost) {
        this.lost = true;
        this.log.warn('redis presence connection lost');
      }
    });
    client.on('ready', () => {
      if (this.closed || !this.lost) return;
      this.lost = false;
      this.log.info({ channels: this.local.size }, 'redis presence connection restored');
      void this.refresh();
    });
  }

  /** Connects, registers this instance as alive and starts the refresh timer. */
  static async connect(options: RedisPresenceOptions): Promise<RedisPresenceStore> {
    const client = await openRedis({
      url: options.url,
      role: 'presence',
      log: options.log,
      connectTimeoutMs: options.connectTimeoutMs,
    });
    const store = new RedisPresenceStore(client, options);
    try {
      await store.client.set(store.livenessKey, '1', 'PX', store.livenessTtlMs);
    } catch (error) {
      await closeRedis(client);
      throw error;
    }
    store.timer = setInterval(() => void store.refresh(), store.refreshMs);
    store.timer.unref();
    return store;
  }

  async add(channel: string, user: string, connectionId: string): Promise<boolean> {
    const field = `${user}\u0000${connectionId}`;
    let members = this.local.get(channel);
    if (!members) {
      members = new Map();
      this.local.set(channel, members);
    }
    members.set(field, user);
    this.pendingRemovals.delete(`${channel}\n${field}`);
    const base = this.base(channel);
    return this.write(
      () => this.client.parleyPresenceAdd(`${base}conns`, `${base}users`, `${base}owners`, field, user, this.owner),
      (result) => result === 1,
    );
  }

  async remove(channel: string, user: string, connectionId: string): Promise<boolean> {
    const field = `${user}\u0000${connectionId}`;
    const members = this.local.get(channel);
    if (members?.delete(field) && members.size === 0) this.local.delete(channel);
    const base = this.base(channel);
    try {
      return await this.write(
        () => this.client.parleyPresenceRemove(`${base}conns`, `${base}users`, `${base}owners`, field, user),
        (result) => result === 1,
      );
    } catch (error) {
      if (this.pendingRemovals.size < MAX_PENDING_REMOVALS) {
        this.pendingRemovals.set(`${channel}\n${field}`, { channel, field, user });
      }
      throw error;
    }
  }

  async list(channel: string): Promise<PresenceEntry[]> {
    const base = this.base(channel);
    const flat = await this.read(() =>
      this.client.parleyPresenceList(`${base}conns`, `${base}users`, `${base}owners`, this.alivePrefix, this.owner),
    );
    const entries: PresenceEntry[] = [];
    for (let i = 0; i < flat.length; i += 2) {
      const connections = Number(flat[i + 1]);
      if (connections > 0) entries.push({ user: String(flat[i]), connections });
    }
    return entries.sort(byUser);
  }

  async reap(channels: string[]): Promise<Array<{ channel: string; user: string }>> {
    const left: Array<{ channel: string; user: string }> = [];
    for (let start = 0; start < channels.length; start += REAP_BATCH) {
      const batch = channels.slice(start, start + REAP_BATCH);
      const keys: string[] = [];
      for (const channel of batch) {
        const base = this.base(channel);
        keys.push(`${base}conns`, `${base}users`, `${base}owners`);
      }
      const flat = await this.read(() =>
        this.client.parleyPresenceReap(keys.length, ...keys, this.alivePrefix, this.owner),
      );
      for (let i = 0; i < flat.length; i += 2) {
        left.push({ channel: batch[Number(flat[i])] as string, user: String(flat[i + 1]) });
      }
    }
    return left;
  }

  isReady(): boolean {
    return !this.closed && this.client.status === 'ready';
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.timer = undefined;
    if (this.client.status === 'ready') {
      try {
        // Whatever is left of ours becomes reapable at once.
        await this.client.del(this.livenessKey);
      } catch (error) {
        this.log.debug({ err: error }, 'could not delete the liveness key');
      }
    }
    this.local.clear();
    this.pendingRemovals.clear();
    await closeRedis(this.client);
  }

  /**
   * Refreshes the liveness key; when it was gone (expired while Redis was
   * unreachable, or Redis lost its data) or a write failed, registers every
   * local member again. One at a time.
   */
  private refresh(): Promise<void> {
    this.refreshing ??= this.refreshOnce().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private async refreshOnce(): Promise<void> {
    if (this.closed || this.client.status !== 'ready') return;
    try {
      const previous = await this.client.set(this.livenessKey, '1', 'PX', this.livenessTtlMs, 'GET');
      if (previous === null || this.dirty) await this.restore(previous === null);
    } catch (error) {
      this.log.warn({ err: error }, 'presence liveness refresh failed');
    }
  }

  /** Retries failed removals, then adds every local member again (idempotent), in one ordered burst. */
  private async restore(expired: boolean): Promise<void> {
    this.dirty = false;
    const removals = [...this.pendingRemovals.values()];
    this.pendingRemovals.clear();
    let members = 0;
    // Every pipeline is written in this same turn, so no later add or remove can overtake them.
    const pipelines: Array<Promise<unknown>> = [];
    let pipeline = this.client.pipeline() as ScriptedPipeline;
    let queued = 0;
    const flushIfFull = () => {
      if (++queued < RESTORE_BATCH) return;
      pipelines.push(pipeline.exec());
      pipeline = this.client.pipeline() as ScriptedPipeline;
      queued = 0;
    };
    for (const { channel, field, user } of removals) {
      const base = this.base(channel);
      pipeline.parleyPresenceRemove(`${base}conns`, `${base}users`, `${base}owners`, field, user);
      flushIfFull();
    }
    for (const [channel, fields] of this.local) {
      const base = this.base(channel);
      for (const [field, user] of fields) {
        pipeline.parleyPresenceAdd(`${base}conns`, `${base}users`, `${base}owners`, field, user, this.owner);
        members++;
        flushIfFull();
      }
    }
    if (queued > 0) pipelines.push(pipeline.exec());
    try {
      const results = await Promise.all(pipelines);
      for (const batch of results as Array<Array<[Error | null, unknown]> | null>) {
        const failed = batch?.find(([error]) => error !== null);
        if (failed) throw failed[0];
      }
    } catch (error) {
      this.dirty = true;
      for (const removal of removals) {
        this.pendingRemovals.set(`${removal.channel}\n${removal.field}`, removal);
      }
      throw error;
    }
    if (expired || removals.length > 0) {
      this.log.info({ members, removals: removals.length, expired }, 'presence re-registered with redis');
    }
  }

  private base(channel: string): string {
    return `${this.prefix}presence:{${channel}}:`;
  }

  /** A write: while Redis is away it rejects `unavailable` and marks the store for a restore. */
  private async write<T, R>(op: () => Promise<T>, map: (result: T) => R): Promise<R> {
    try {
      return map(await this.read(op));
    } catch (error) {
      this.dirty = true;
      throw error;
    }
  }

  private async read<T>(op: () => Promise<T>): Promise<T> {
    if (this.closed || this.client.status !== 'ready') throw redisUnavailable();
    try {
      return await op();
    } catch (error) {
      // A script error is a bug, not an outage: let it surface as internal.
      if (error instanceof Error && error.name === 'ReplyError' && !/^(LOADING|BUSY|READONLY)/.test(error.message)) {
        throw error;
      }
      throw redisUnavailable(error);
    }
  }
}
