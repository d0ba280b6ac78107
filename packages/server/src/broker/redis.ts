import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Broker, Publication, PublicationHandler } from './broker.ts';
import { closeRedis, openRedis, redisUnavailable } from './redis-connection.ts';

export interface RedisBrokerOptions {
  url: string;
  /** Prefix of every Redis key and pub/sub channel (REDIS_KEY_PREFIX). */
  prefix: string;
  log: Logger;
  /** How long `connect` waits for Redis (default 5 s). */
  connectTimeoutMs?: number | undefined;
}

/** Channels per SUBSCRIBE command when resubscribing after a reconnect. */
const RESUBSCRIBE_BATCH = 1000;

/**
 * Wire format of one publication on a Redis channel, built once per publish:
 *
 *     <offset>,<publishedAt>,<skipUser length>,<skipUser><frame>
 *
 * e.g. `42,1763805600000,0,{"type":"message",…}` or `0,,5,alice{"type":"typing",…}`
 * (publishedAt empty when unset). The channel is the Redis channel's name,
 * so it is not repeated. The receiver reads three decimal numbers and
 * slices: no JSON parse, one string for the frame (and one for skipUser
 * when there is one).
 */
export function encodePublication(publication: Publication): string {
  const skip = publication.skipUser;
  const head = `${publication.offset},${publication.publishedAt ?? ''},`;
  return skip === undefined || skip === ''
    ? `${head}0,${publication.frame}`
    : `${head}${skip.length},${skip}${publication.frame}`;
}

const COMMA = 44;
const ZERO = 48;
const NINE = 57;

/** The inverse of `encodePublication`; undefined for a payload it did not write. */
export function decodePublication(channel: string, payload: string): Publication | undefined {
  let i = 0;
  let offset = 0;
  for (let code = payload.charCodeAt(i); code >= ZERO && code <= NINE; code = payload.charCodeAt(++i)) {
    offset = offset * 10 + (code - ZERO);
  }
  if (i === 0 || payload.charCodeAt(i) !== COMMA) return undefined;
  const publishedStart = ++i;
  let publishedAt = 0;
  for (let code = payload.charCodeAt(i); code >= ZERO && code <= NINE; code = payload.charCodeAt(++i)) {
    publishedAt = publishedAt * 10 + (code - ZERO);
  }
  const hasPublishedAt = i > publishedStart;
  if (payload.charCodeAt(i) !== COMMA) return undefined;
  const lengthStart = ++i;
  let skipLength = 0;
  for (let code = payload.charCodeAt(i); code >= ZERO && code <= NINE; code = payload.charCodeAt(++i)) {
    skipLength = skipLength * 10 + (code - ZERO);
  }
  if (i === lengthStart || payload.charCodeAt(i) !== COMMA) return undefined;
  const skipStart = i + 1;
  const frameStart = skipStart + skipLength;
  if (frameStart > payload.length) return undefined;
  const publication: Publication = { channel, offset, frame: payload.slice(frameStart) };
  if (skipLength > 0) publication.skipUser = payload.slice(skipStart, frameStart);
  if (hasPublishedAt) publication.publishedAt = publishedAt;
  return publication;
}

interface Subscription {
  /** The Parley channel name (the hub's own string, handed back on every publication). */
  readonly channel: string;
  /** Settles when Redis acknowledged the SUBSCRIBE. */
  ready: Promise<void>;
  /** Set once it has: from then on Redis echoes this instance's publications on the channel back. */
  acknowledged: boolean;
  /**
   * This instance's publications on the channel that were handed to the
   * local handlers at once and are not echoed back yet, oldest first.
   */
  inFlight: string[];
}

/** Own publications awaiting their echo, per channel, at most: past it the oldest are forgotten. */
const MAX_IN_FLIGHT = 10_000;

/** Drops one own publication from those awaiting their echo. */
function forget(subscription: Subscription, payload: string): void {
  const at = subscription.inFlight.lastIndexOf(payload);
  if (at >= 0) subscription.inFlight.splice(at, 1);
}

/**
 * The broker shared by every instance given the same REDIS_URL: Redis
 * pub/sub on `${prefix}ch:${channel}`.
 *
 * Two connections: one publishes, one subscribes. The publisher's socket is
 * corked on the first publication of an event-loop turn and uncorked once
 * the turn's synchronous work and microtasks are done, so the publications
 * of one turn leave in one write, in order. (ioredis's auto-pipelining
 * batches too, through a Pipeline object per turn sent on setImmediate:
 * measured here, twice the CPU for a lone publication in a turn, 1.6–2.5×
 * for 5–20 in a turn.) One
 * PUBLISH per publication whatever the number of instances and sockets;
 * one SUBSCRIBE per channel per instance, on its first local subscriber.
 *
 * An instance's own publications reach its own subscribers at once, not
 * after a round trip through Redis: they are handed to the local handlers
 * in publish(), and their echo is recognised (the same payload, in the same
 * order) and dropped. Redis keeps one connection's publications in order, so
 * an echo that arrives means every older own publication still waiting for
 * its echo was lost, and those are forgotten. An echo is told from another
 * instance's publication by its payload: a stored message's names its
 * offset, unique in the channel; two ephemeral ones (typing) alike in every
 * byte are alike to every subscriber too, so which of the two was dropped
 * does not matter.
 *
 * At most once, as the contract says: Redis pub/sub drops what is published
 * while a subscriber is disconnected. While either connection is down
 * `isReady()` is false and `publish` rejects at once (nothing is queued); the
 * message is already stored, and subscribers fill the gap from the store.
 * ioredis reconnects with a capped backoff; once the subscriber is ready
 * again every channel is subscribed again, then the `onReconnect` handlers
 * run so the hub re-reads positions and delivers what Redis dropped.
 */
export class RedisBroker implements Broker {
  readonly name = 'redis';
  readonly delivery = 'at-most-once' as const;
  private readonly handlers: PublicationHandler[] = [];
  private readonly reconnectHandlers: Array<() => void> = [];
  /** Redis channel name → subscription, for every channel the hub wants. */
  private readonly subscriptions = new Map<string, Subscription>();
  private readonly channelPrefix: string;
  private readonly log: Logger;
  /** False from a subscriber disconnect until every channel is subscribed again. */
  private resubscribed = true;
  /** Counts subscriber connections, so a stale resubscription does not mark a newer one done. */
  private subscriberGeneration = 0;
  private lost = false;
  private closed = false;
  /** The publisher's socket while corked for the current turn (ioredis makes a new one per reconnect). */
  private corkedStream: Redis['stream'] | undefined;

  private constructor(
    private readonly publisher: Redis,
    private readonly subscriber: Redis,
    options: RedisBrokerOptions,
  ) {
    this.channelPrefix = `${options.prefix}ch:`;
    this.log = options.log;
    subscriber.on('message', (redisChannel: string, payload: string) => this.receive(redisChannel, payload));
    subscriber.on('close', () => {
      this.subscriberGeneration++;
      this.resubscribed = false;
      // Their echoes will not come: the connection that would have brought them is gone.
      for (const subscription of this.subscriptions.values()) subscription.inFlight.length = 0;
      this.connectionLost();
    });
    subscriber.on('ready', () => void this.resubscribe());
    publisher.on('close', () => this.connectionLost());
    publisher.on('ready', () => this.maybeRestored());
  }

  /** Opens both connections; rejects (naming REDIS_URL) when Redis cannot be reached in time. */
  static async connect(options: RedisBrokerOptions): Promise<RedisBroker> {
    const common = { url: options.url, log: options.log, connectTimeoutMs: options.connectTimeoutMs };
    const [publisher, subscriber] = await Promise.allSettled([
      openRedis({ ...common, role: 'publisher' }),
      openRedis({ ...common, role: 'subscriber' }),
    ]);
    if (publisher.status === 'rejected' || subscriber.status === 'rejected') {
      if (publisher.status === 'fulfilled') await closeRedis(publisher.value);
      if (subscriber.status === 'fulfilled') await closeRedis(subscriber.value);
      throw publisher.status === 'rejected' ? publisher.reason : (subscriber as PromiseRejectedResult).reason;
    }
    return new RedisBroker(publisher.value, subscriber.value, options);
  }

  onPublication(handler: PublicationHandler): void {
    this.handlers.push(handler);
  }

  onReconnect(handler: () => void): void {
    this.reconnectHandlers.push(handler);
  }

  publish(publication: Publication): Promise<void> {
    const key = this.channelPrefix + publication.channel;
    const payload = encodePublication(publication);
    const subscription = this.subscriptions.get(key);
    // Handed out here when Redis would echo it back to this instance.
    const local = subscription?.acknowledged && this.subscriberLive() ? subscription : undefined;
    if (local) {
      if (local.inFlight.length >= MAX_IN_FLIGHT) local.inFlight.shift();
      local.inFlight.push(payload);
      this.handOut(publication);
    }
    if (this.publisher.status !== 'ready') {
      if (local) forget(local, payload);
      return Promise.reject(redisUnavailable());
    }
    this.corkForTurn();
    return this.publisher.publish(key, payload).then(
      () => undefined,
      (error: unknown) => {
        // Not published, so no echo will come.
        if (local) forget(local, payload);
        throw redisUnavailable(error);
      },
    );
  }

  subscribe(channel: string): Promise<void> {
    const key = this.channelPrefix + channel;
    const existing = this.subscriptions.get(key);
    if (existing) return existing.ready;
    if (this.closed || this.subscriber.status !== 'ready') return Promise.reject(redisUnavailable());
    const subscription: Subscription = { channel, ready: Promise.resolve(), acknowledged: false, inFlight: [] };
    subscription.ready = this.subscriber.subscribe(key).then(
      () => {
        subscription.acknowledged = true;
      },
      (error: unknown) => {
        // Forget it unless an unsubscribe (and maybe a new subscribe) came since.
        if (this.subscriptions.get(key) === subscription) this.subscriptions.delete(key);
        throw redisUnavailable(error);
      },
    );
    this.subscriptions.set(key, subscription);
    return subscription.ready;
  }

  async unsubscribe(channel: string): Promise<void> {
    const key = this.channelPrefix + channel;
    if (!this.subscriptions.delete(key)) return;
    // A connection that is down has no subscriptions; it will not get this one back.
    if (this.subscriber.status !== 'ready') return;
    try {
      await this.subscriber.unsubscribe(key);
    } catch {
      // Dropped meanwhile: the same.
    }
  }

  isReady(): boolean {
    return !this.closed && this.resubscribed && this.publisher.status === 'ready' && this.subscriber.status === 'ready';
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.subscriptions.clear();
    await Promise.all([closeRedis(this.publisher), closeRedis(this.subscriber)]);
  }

  private receive(redisChannel: string, payload: string): void {
    const subscription = this.subscriptions.get(redisChannel);
    if (!subscription) return;
    const inFlight = subscription.inFlight;
    if (inFlight.length > 0) {
      const own = inFlight.indexOf(payload);
      if (own >= 0) {
        // Ours, handed out already; the older ones before it lost their echo.
        inFlight.splice(0, own + 1);
        return;
      }
    }
    const publication = decodePublication(subscription.channel, payload);
    if (!publication) {
      this.log.warn({ channel: subscription.channel }, 'ignored a malformed publication from redis');
      return;
    }
    this.handOut(publication);
  }

  /** Corks the publisher's socket until the end of this turn, unless it is already. */
  private corkForTurn(): void {
    if (this.corkedStream !== undefined) return;
    const stream = this.publisher.stream;
    stream.cork();
    this.corkedStream = stream;
    process.nextTick(this.uncork);
  }

  private readonly uncork = (): void => {
    const stream = this.corkedStream;
    this.corkedStream = undefined;
    stream?.uncork();
  };

  private handOut(publication: Publication): void {
    for (const handler of this.handlers) handler(publication);
  }

  /** True while the subscriber connection is up with every channel subscribed. */
  private subscriberLive(): boolean {
    return !this.closed && this.resubscribed && this.subscriber.status === 'ready';
  }

  private connectionLost(): void {
    if (this.closed || this.lost) return;
    this.lost = true;
    this.log.warn('redis connection lost');
  }

  /** The subscriber is connected again: subscribe every channel, then report the reconnect. */
  private async resubscribe(): Promise<void> {
    const generation = this.subscriberGeneration;
    const keys = [...this.subscriptions.keys()];
    try {
      for (let i = 0; i < keys.length; i += RESUBSCRIBE_BATCH) {
        // Skip what was unsubscribed meanwhile, so no stale subscription comes back.
        const batch = keys.slice(i, i + RESUBSCRIBE_BATCH).filter((key) => this.subscriptions.has(key));
        if (batch.length > 0) await this.subscriber.subscribe(...batch);
      }
    } catch (error) {
      // Dropped again; the next 'ready' starts over.
      this.log.debug({ err: error }, 'redis resubscribe interrupted');
      return;
    }
    if (this.closed || generation !== this.subscriberGeneration) return;
    this.resubscribed = true;
    this.maybeRestored();
  }

  private maybeRestored(): void {
    if (!this.lost || !this.isReady()) return;
    this.lost = false;
    this.log.info({ channels: this.subscriptions.size }, 'redis connection restored');
    for (const handler of this.reconnectHandlers) {
      try {
        handler();
      } catch (error) {
        this.log.error({ err: error }, 'broker reconnect handler failed');
      }
    }
  }
}
