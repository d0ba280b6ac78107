/**
 * Redis memory per presence entry, for docs/scaling.md: registers
 * `entries` (connection, channel) entries (rooms of 50 by default, 5 rooms
 * per user, as the 1 M plan assumes) through the real RedisPresenceStore under a prefix of its own,
 * reads MEMORY USAGE of every key it created, prints bytes per (connection,
 * channel) entry, and deletes its keys.
 *
 *   cd packages/server && node --import tsx test/support/measure-presence-memory.ts 20000 [room size]
 *
 * Uses REDIS_TEST_URL (default redis://127.0.0.1:6379); touches only its own prefix.
 */
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { RedisPresenceStore } from '../../src/presence/redis.ts';
import { cleanupRedisPrefix, REDIS_TEST_URL, redisKeys, testRedisClient, uniqueRedisPrefix } from './redis.ts';

const entries = Number(process.argv[2] ?? 20_000);
const roomSize = Number(process.argv[3] ?? 50);
const roomsPerUser = 5;
const prefix = uniqueRedisPrefix('measure');
const presence = await RedisPresenceStore.connect({
  url: REDIS_TEST_URL,
  prefix,
  instanceId: 'parley-measure',
  log: pino({ level: 'silent' }),
});
const client = testRedisClient();
try {
  await client.connect();
  const users = Math.ceil(entries / roomsPerUser);
  const rooms = Math.ceil(entries / roomSize);
  const adds: Array<Promise<boolean>> = [];
  for (let i = 0; i < entries; i++) {
    const user = `user${i % users}`;
    // Each user's connection id is a UUID, as the gateway's are.
    adds.push(presence.add(`room:room${i % rooms}`, user, randomUUID()));
    if (adds.length >= 1000) await Promise.all(adds.splice(0));
  }
  await Promise.all(adds);
  let bytes = 0;
  const keys = (await redisKeys(prefix)).filter((key) => key.includes('presence:'));
  for (const key of keys) bytes += Number(await client.call('MEMORY', 'USAGE', key, 'SAMPLES', '0'));
  console.log(
    `${entries} entries in ${rooms} rooms of ${roomSize}: ${keys.length} keys, ${bytes} bytes, ` +
      `${(bytes / entries).toFixed(0)} bytes per (connection, channel) entry`,
  );
} finally {
  client.disconnect();
  await presence.close();
  await cleanupRedisPrefix(prefix);
}
