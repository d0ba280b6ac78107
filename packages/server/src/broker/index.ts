import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { Broker } from './broker.ts';
import { MemoryBroker } from './memory.ts';

/** The broker named by the config: Redis when REDIS_URL is set, else in-process. */
export async function createBroker(config: Config, log: Logger): Promise<Broker> {
  if (!config.redisUrl) return new MemoryBroker();
  // Loaded only when used, so an embedded instance never loads ioredis.
  const { RedisBroker } = await import('./redis.ts');
  return RedisBroker.connect({ url: config.redisUrl, prefix: config.redisKeyPrefix, log });
}
