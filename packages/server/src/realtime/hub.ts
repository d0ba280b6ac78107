import type { Logger } from 'pino';
import type { Broker, Publication } from '../broker/broker.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { MessageStore, StoredMessage } from '../store/store.ts';
import { encodeMessagePush } from './frames.ts';
import { Outbound } from './outbound.ts';

/** A local socket as the hub sees it. */
export interface Subscriber {
  readonly id: string;
  readonly user: string;
  /** Sends a frame that is already encoded; the same Outbound goes to every subscriber. */
  push(frame: Outbound): void;
}

/** How often a hub on a lossy broker compares its channels with the store. */
export const POSITION_CHECK_MS = 2000;
const POSITION_BATCH = 1000;
/** First and longest pause before reading a gap from the store again after the read failed. */
export const FILL_RETRY_MIN_MS = 100;
export const FILL_RETRY_MAX_MS = 2000;

interface HeldPush {
  offset: number;
  frame: Outbound;
}

interface Hold {
  pushes: HeldPush[];
  /**
   * Set when the reply went out at an offset the hub has not delivered yet
   * (the store was read ahead of the broker): the hold lasts until the hub
   * reaches it, so nothing at or below the reply's offset is pushed again.
   */
  releaseAfter: number | undefined;
}

interface ChannelEntry {
  readonly name: string;
  readonly subscribers: Set<Subscriber>;
  /** Subscribers whose subscribe reply is not out yet (or not caught up with), with the pushes held for them. */
  readonly held: Map<Subscriber, Hold>;
  /** Highest offset delivered here; -1 until the entry knows the store's position. */
  last: number;
  /** Initializing or filling a gap: publications wait in `queue`, in arrival order. */
  busy: boolean;
  queue: Publication[];
  ready: Promise<void>;
  /** A gap whose store read failed: the fill to retry (still busy meanwhile); `timer` unset while it runs. */
  retry: { upTo: number; failures: number; timer: NodeJS.Timeout | undefined } | undefined;
}

/**
 * Local fan-out for one instance. It subscribes the broker to a channel on
 * the channel's first local subscriber and unsubscribes after the last.
 *
 * The broker is at most once, so the hub checks offsets: a publication at or
 * below the last delivered offset is a duplicate and dropped; one past a gap
 * makes the hub read the missing messages from the store first. Every local
 * subscriber thus sees each offset once, in order.
 */
export class Hub {
  private readonly channels = new Map<string, ChannelEntry>();
  private positionTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly broker: Broker,
    private readonly store: MessageStore,
    private readonly log: Logger,
    private readonly metrics?: Metrics,
  ) {
    broker.onPublication((publication) => this.receive(publication));
    broker.onReconnect(() => {
      this.log.info({ channels: this.channels.size }, 'broker reconnected: re-reading channel positions');
      void this.resync();
    });
  }

  /**
   * On a broker that may lose publications, a lost message is noticed when
   * the next one arrives; a lost *last* message would never be. So every
   * `intervalMs` the hub reads all its channels' positions in one query and
   * fills what it missed.
   */
  start(intervalMs = POSITION_CHECK_MS): void {
    if (this.broker.delivery !== 'at-most-once' || this.positionTimer) return;
    this.positionTimer = setInterval(() => void this.resync(), intervalMs);
    this.positionTimer.unref();
  }

  stop(): void {
    clearInterval(this.positionTimer);
    this.positionTimer = undefined;
    for (const entry of this.channels.values()) if (entry.retry) clearTimeout(entry.retry.timer);
  }

  /** Channels with local subscribers. */
  channelNames(): IterableIterator<string> {
    return this.channels.keys();
  }

  /** Compares every channel with the store and delivers what the broker did not. */
  async resync(): Promise<void> {
    const names = [...this.channels.keys()];
    for (let i = 0; i < names.length; i += POSITION_BATCH) {
      let positions: Map<string, number>;
      try {
        positions = await this.store.positions(names.slice(i, i + POSITION_BATCH));
      } catch (error) {
        this.log.warn({ err: error }, 'position check failed');
        return;
      }
      for (const [name, offset] of positions) {
        const entry = this.channels.get(name);
        if (!entry) continue;
        if (entry.retry) {
          // The store answers again: retry the failed fill now rather than at its backoff.
          if (offset > entry.last) this.retryFill(entry, offset);
          continue;
        }
        if (entry.busy || offset <= entry.last) continue;
        entry.busy = true;
        void this.fillGap(entry, offset);
      }
    }
  }

  /** Number of channels with at least one local subscriber. */
  get channelCount(): number {
    return this.channels.size;
  }

  /**
   * Adds a subscriber whose pushes are held until `release`. Resolves when
   * the broker delivers the channel here, so reading the store after this
   * cannot miss a message: a later one is held.
   */
  async hold(channel: string, subscriber: Subscriber): Promise<void> {
    let entry = this.channels.get(channel);
    if (!entry) {
      entry = {
        name: channel,
        subscribers: new Set(),
        held: new Map(),
        last: -1,
        busy: true,
        queue: [],
        ready: Promise.resolve(),
        retry: undefined,
      };
      this.channels.set(channel, entry);
      entry.ready = this.initialize(entry);
    }
    entry.subscribers.add(subscriber);
    entry.held.set(subscriber, { pushes: [], releaseAfter: undefined });
    try {
      await entry.ready;
    } catch (error) {
      this.remove(channel, subscriber);
      throw error;
    }
  }

  /** The subscribe reply (up to `offset`) is sent: deliver the held pushes after it. */
  release(channel: string, subscriber: Subscriber, offset: number): void {
    const entry = this.channels.get(channel);
    const hold = entry?.held.get(subscriber);
    if (!entry || !hold) return;
    hold.releaseAfter = offset;
    if (entry.last >= offset) {
      this.settle(entry, subscriber, hold);
      return;
    }
    // The reply is ahead of this hub: stay held until it catches up, and
    // read the store now rather than wait for the broker.
    if (!entry.busy) {
      entry.busy = true;
      void this.fillGap(entry, offset);
    }
  }

  /** Ends a hold whose reply offset the hub has reached. */
  private settle(entry: ChannelEntry, subscriber: Subscriber, hold: Hold): void {
    entry.held.delete(subscriber);
    const after = hold.releaseAfter as number;
    for (const push of hold.pushes) if (push.offset > after) subscriber.push(push.frame);
  }

  private settleCaughtUp(entry: ChannelEntry): void {
    for (const [subscriber, hold] of entry.held) {
      if (hold.releaseAfter !== undefined && entry.last >= hold.releaseAfter) this.settle(entry, subscriber, hold);
    }
  }

  remove(channel: string, subscriber: Subscriber): void {
    const entry = this.channels.get(channel);
    if (!entry?.subscribers.delete(subscriber)) return;
    entry.held.delete(subscriber);
    if (entry.subscribers.size > 0) return;
    this.channels.delete(channel);
    if (entry.retry) clearTimeout(entry.retry.timer);
    entry.retry = undefined;
    this.broker.unsubscribe(channel).catch((error) => {
      this.log.warn({ err: error, channel }, 'broker unsubscribe failed');
    });
  }

  private async initialize(entry: ChannelEntry): Promise<void> {
    try {
      await this.broker.subscribe(entry.name);
      const position = await this.store.position(entry.name);
      entry.last = position.offset;
    } catch (error) {
      if (this.channels.get(entry.name) === entry) this.channels.delete(entry.name);
      throw error;
    }
    this.drain(entry);
  }

  private receive(publication: Publication): void {
    const entry = this.channels.get(publication.channel);
    if (!entry) return;
    if (publication.offset === 0) {
      // Ephemeral events carry no order; subscribers still waiting for their reply miss them.
      this.deliver(entry, 0, new Outbound(Buffer.from(publication.frame)), publication.skipUser);
      return;
    }
    if (entry.busy) {
      entry.queue.push(publication);
      return;
    }
    this.accept(entry, publication);
  }

  /** Delivers a publication in order, or starts filling the gap before it. */
  private accept(entry: ChannelEntry, publication: Publication): void {
    if (publication.offset <= entry.last) return;
    if (publication.offset === entry.last + 1) {
      entry.last = publication.offset;
      this.deliver(entry, publication.offset, new Outbound(Buffer.from(publication.frame)), undefined);
      if (publication.publishedAt !== undefined && this.metrics) {
        this.metrics.deliveryLatency.observe((Date.now() - publication.publishedAt) / 1000);
      }
      return;
    }
    entry.busy = true;
    entry.queue.unshift(publication);
    void this.fillGap(entry, publication.offset - 1);
  }

  /**
   * Reads `entry.last < offset <= upTo` from the store and delivers it, then
   * what queued meanwhile. Called with `entry.busy` set. When the read fails
   * the channel stays busy (later publications keep queueing behind the gap)
   * and the read is tried again after a backoff (FILL_RETRY_MIN_MS doubling
   * to FILL_RETRY_MAX_MS) or at the next position check, whichever is first:
   * skipping the gap would break "no gap" for every subscriber here.
   */
  private async fillGap(entry: ChannelEntry, upTo: number): Promise<void> {
    // A retry is the same gap: counted once.
    if (this.metrics && !entry.retry) this.metrics.stats.gapFills++;
    let missing: StoredMessage[];
    try {
      missing = await this.store.range(entry.name, entry.last, upTo);
    } catch (error) {
      if (this.channels.get(entry.name) !== entry) return;
      const failures = (entry.retry?.failures ?? 0) + 1;
      if (failures === 1) {
        this.log.warn(
          { err: error, channel: entry.name, from: entry.last + 1, to: upTo },
          'could not fill an offset gap from the store; retrying, later messages wait behind it',
        );
      }
      const delay = Math.min(FILL_RETRY_MAX_MS, FILL_RETRY_MIN_MS * 2 ** (failures - 1));
      const timer = setTimeout(() => this.retryFill(entry, upTo), delay);
      timer.unref();
      entry.retry = { upTo, failures, timer };
      return;
    }
    if (entry.retry) {
      this.log.info({ channel: entry.name, failures: entry.retry.failures }, 'filled the offset gap after retrying');
      clearTimeout(entry.retry.timer);
      entry.retry = undefined;
    }
    for (const message of missing) {
      if (message.offset <= entry.last) continue;
      entry.last = message.offset;
      this.deliver(entry, message.offset, new Outbound(encodeMessagePush(message)), undefined);
    }
    if (entry.last < upTo) {
      // Trimmed by retention before this hub read it: nothing to deliver; clients reload history.
      this.log.warn({ channel: entry.name, from: entry.last + 1, to: upTo }, 'messages missing from the store');
      entry.last = upTo;
    }
    this.drain(entry);
  }

  /** Runs a failed fill again (up to `upTo` at least), unless that is already running. */
  private retryFill(entry: ChannelEntry, upTo: number): void {
    const retry = entry.retry;
    if (!retry?.timer || this.channels.get(entry.name) !== entry) return;
    clearTimeout(retry.timer);
    retry.timer = undefined;
    void this.fillGap(entry, Math.max(retry.upTo, upTo));
  }

  private drain(entry: ChannelEntry): void {
    entry.busy = false;
    if (this.channels.get(entry.name) !== entry) return;
    if (entry.held.size > 0) this.settleCaughtUp(entry);
    const queue = entry.queue;
    entry.queue = [];
    queue.sort((a, b) => a.offset - b.offset);
    for (let i = 0; i < queue.length; i++) {
      this.accept(entry, queue[i] as Publication);
      if (entry.busy) {
        // A gap again: the rest waits behind it.
        entry.queue.push(...queue.slice(i + 1));
        return;
      }
    }
  }

  private deliver(entry: ChannelEntry, offset: number, frame: Outbound, skipUser: string | undefined): void {
    const holding = entry.held.size > 0;
    if (offset > 0 && this.metrics) this.metrics.stats.deliveries += entry.subscribers.size - entry.held.size;
    for (const subscriber of entry.subscribers) {
      if (holding) {
        const hold = entry.held.get(subscriber);
        if (hold) {
          if (offset > 0) hold.pushes.push({ offset, frame });
          continue;
        }
      }
      if (skipUser !== undefined && subscriber.user === skipUser) continue;
      subscriber.push(frame);
    }
    if (holding && offset > 0) this.settleCaughtUp(entry);
  }
}
