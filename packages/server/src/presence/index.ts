import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { MemoryPresenceStore } from './memory.ts';
import type { PresenceStore } from './presence.ts';

/** The presence store named by the config: Redis when REDIS_URL is set, else in-process. */
export async function createPresence(config: Config, log: Logger): Promise<PresenceStore> {
  if (!config.redisUrl) return new MemoryPresenceStore();
  const { RedisPresenceStore } = await import('./redis.ts');
  return RedisPresenceStore.connect({
    url: config.redisUrl,
    prefix: config.redisKeyPrefix,
    instanceId: config.instanceId,
    log,
  });
}
