import type { Logger } from 'pino';
import type { Principal } from '../auth/tokens.ts';
import type { Broker } from '../broker/broker.ts';
import { forbidden, notFound } from '../errors.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { PresenceEntry, PresenceStore } from '../presence/presence.ts';
import { eventText, messageJson, messagePushText } from '../realtime/frames.ts';
import type { Hub, Subscriber } from '../realtime/hub.ts';
import { RoomsService } from '../rooms/rooms-service.ts';
import type { HistoryPage, MessageStore, StoredMessage } from '../store/store.ts';
import { type ChannelName, type Namespace, parseChannel } from './names.ts';

/** What a caller wants to do with a channel. `read` is history and presence. */
export type Action = 'subscribe' | 'publish' | 'read';

interface NamespaceRules {
  /** Messages kept per channel; undefined keeps all. */
  retain: number | undefined;
  presence: boolean;
}

/** PROTOCOL §2. A namespace missing here allows nothing (parseChannel refuses it). */
const RULES: Record<Namespace, NamespaceRules> = {
  room: { retain: undefined, presence: true },
  dm: { retain: undefined, presence: true },
  topic: { retain: 1000, presence: false },
  user: { retain: 1000, presence: false },
};

const isBackEnd = (principal: Principal) => principal.role === 'admin' || principal.role === 'service';

export interface SubscribeResult {
  channel: string;
  offset: number;
  epoch: string;
  recovered: boolean;
  messages: StoredMessage[];
}

export interface Published {
  message: StoredMessage;
  /** The message as JSON text, for replies and HTTP bodies. */
  json: string;
}

export interface ChannelServiceOptions {
  store: MessageStore;
  broker: Broker;
  presence: PresenceStore;
  hub: Hub;
  rooms: RoomsService;
  recoveryMax: number;
  log: Logger;
  metrics: Metrics;
}

/**
 * Who may do what with a channel, and the paths of publish, subscribe with
 * recovery, history, presence and typing. Transport-neutral: the WebSocket
 * connection and the HTTP routes both call it.
 */
/** Logs a recurring warning at most once per interval, saying how many were suppressed. */
class ThrottledWarning {
  private last = 0;
  private suppressed = 0;
  constructor(private readonly intervalMs: number) {}

  warn(log: Logger, fields: Record<string, unknown>, message: string): void {
    const now = Date.now();
    if (now - this.last < this.intervalMs) {
      this.suppressed++;
      return;
    }
    log.warn({ ...fields, suppressed: this.suppressed }, message);
    this.last = now;
    this.suppressed = 0;
  }
}

/** How often presence is reaped of connections whose instance died (shared presence only). */
export const PRESENCE_REAP_MS = 5000;

export class ChannelService {
  private readonly store: MessageStore;
  private readonly broker: Broker;
  private readonly presenceStore: PresenceStore;
  private readonly hub: Hub;
  private readonly rooms: RoomsService;
  private readonly recoveryMax: number;
  private readonly log: Logger;
  private readonly metrics: Metrics;
  private reapTimer: NodeJS.Timeout | undefined;
  // During an outage every publish fails: one line per interval, with a count, not one per message.
  private readonly brokerWarnings = new ThrottledWarning(10_000);
  private readonly reapWarnings = new ThrottledWarning(60_000);
  private readonly dmNoticeWarnings = new ThrottledWarning(10_000);

  constructor(options: ChannelServiceOptions) {
    this.store = options.store;
    this.broker = options.broker;
    this.presenceStore = options.presence;
    this.hub = options.hub;
    this.rooms = options.rooms;
    this.recoveryMax = options.recoveryMax;
    this.log = options.log;
    this.metrics = options.metrics;
  }

  /**
   * With presence shared between instances, an instance killed without a
   * word leaves entries behind; every PRESENCE_REAP_MS each instance reaps
   * them in the channels it serves and announces the leaves.
   */
  start(intervalMs = PRESENCE_REAP_MS): void {
    if (this.presenceStore.name === 'memory' || this.reapTimer) return;
    this.reapTimer = setInterval(() => void this.reap(), intervalMs);
    this.reapTimer.unref();
  }

  stop(): void {
    clearInterval(this.reapTimer);
    this.reapTimer = undefined;
  }

  async reap(): Promise<void> {
    const channels = [...this.hub.channelNames()].filter((channel) => {
      const namespace = channel.slice(0, channel.indexOf(':')) as Namespace;
      return RULES[namespace]?.presence === true;
    });
    if (channels.length === 0) return;
    try {
      for (const { channel, user } of await this.presenceStore.reap(channels)) {
        await this.announce('leave', channel, user);
      }
    } catch (error) {
      this.reapWarnings.warn(this.log, { err: error }, 'presence reaping failed');
    }
  }

  /** Parses the name and checks the caller's right; throws bad_request, forbidden or not_found. */
  async authorize(principal: Principal, channel: unknown, action: Action): Promise<ChannelName> {
    const name = parseChannel(channel);
    switch (name.namespace) {
      case 'room': {
        const room =
          action === 'read'
            ? await this.rooms.get(name.name)
            : await this.rooms.getOrCreatePublic(name.name, principal.user);
        if (!room) throw notFound(`no room "${name.name}"`);
        if (!RoomsService.canAccess(room, principal.user)) throw forbidden(`room "${name.name}" is private`);
        return name;
      }
      case 'dm': {
        if (!name.members?.includes(principal.user)) throw forbidden('a direct-message channel is for its two users');
        return name;
      }
      case 'topic': {
        if (action === 'publish') {
          if (!isBackEnd(principal)) throw forbidden('topics are published by the server API or admin/service tokens');
          return name;
        }
        if (principal.channels && !principal.channels.has(name.channel)) {
          throw forbidden(`this token does not grant ${name.channel}`);
        }
        return name;
      }
      case 'user': {
        if (action === 'publish') {
          if (!isBackEnd(principal))
            throw forbidden('user channels are published by the server API or admin/service tokens');
          return name;
        }
        if (name.name !== principal.user) throw forbidden('a user channel is for that user only');
        return name;
      }
    }
  }

  /** Stores and delivers a message. The caller has authorized it. */
  async publish(name: ChannelName, from: string, data: unknown, idempotencyKey?: string): Promise<Published> {
    const publishedAt = Date.now();
    const stopStoreTimer = this.metrics.storeLatency.startTimer();
    let appended: Awaited<ReturnType<MessageStore['append']>>;
    try {
      appended = await this.store.append({
        channel: name.channel,
        from,
        data,
        idempotencyKey,
        retain: RULES[name.namespace].retain,
      });
    } catch (error) {
      this.metrics.stats.storeErrors++;
      throw error;
    }
    stopStoreTimer();
    const { message, duplicate, dataJson } = appended;
    const json = dataJson === undefined ? JSON.stringify(message) : messageJson(message, dataJson);
    if (!duplicate) {
      this.metrics.stats.publishes++;
      const stopBrokerTimer = this.metrics.brokerLatency.startTimer();
      this.broker
        .publish({
          channel: name.channel,
          offset: message.offset,
          frame: messagePushText(name.channel, json),
          publishedAt,
        })
        .then(
          () => {
            stopBrokerTimer();
          },
          (error) => {
            // The message is stored; subscribers everywhere fill the gap from the store.
            this.metrics.stats.brokerErrors++;
            this.brokerWarnings.warn(this.log, { err: error, channel: name.channel }, 'broker publish failed');
          },
        );
      if (name.namespace === 'dm' && message.offset === 1) this.announceDm(name, from);
    }
    return { message, json };
  }

  /**
   * A conversation's first message: its recipient has no way to know the
   * channel exists (nobody lists a user's DMs), so they are told on their own
   * user channel, stored like any `user:` message so a client that was away
   * finds it in history. The sender's reply does not wait for it. Every
   * member but the sender is told: both of them when a back end (the server
   * API, an admin or service token) opens the conversation.
   */
  private announceDm(name: ChannelName, from: string): void {
    const notice = { event: 'dm.started', channel: name.channel, from };
    for (const recipient of name.members ?? []) {
      if (recipient === from) continue;
      Promise.resolve()
        .then(() => this.publish(parseChannel(`user:${recipient}`), from, notice))
        .catch((error) => {
          this.dmNoticeWarnings.warn(this.log, { err: error, channel: name.channel }, 'dm.started notification failed');
        });
    }
  }

  /**
   * Subscribes a local subscriber with the ordering guarantee of PROTOCOL §3:
   * pushes are held from before the store is read until the caller has sent
   * the reply and calls `release`, which drops those the reply already holds.
   */
  async subscribe(
    name: ChannelName,
    subscriber: Subscriber,
    since: { offset: number; epoch: string } | undefined,
  ): Promise<SubscribeResult> {
    await this.hub.hold(name.channel, subscriber);
    try {
      const position = await this.store.position(name.channel);
      let recovered = false;
      let messages: StoredMessage[] = [];
      if (
        since &&
        since.epoch === position.epoch &&
        since.offset <= position.offset &&
        position.offset - since.offset <= this.recoveryMax
      ) {
        messages = await this.store.range(name.channel, since.offset, position.offset);
        // Trimmed history (topics keep their last 1000) cannot be recovered whole.
        recovered = messages.length === position.offset - since.offset;
        if (!recovered) messages = [];
      }
      return { channel: name.channel, offset: position.offset, epoch: position.epoch, recovered, messages };
    } catch (error) {
      this.hub.remove(name.channel, subscriber);
      throw error;
    }
  }

  /** The reply of `subscribe` is on its way: start pushes, then announce presence. */
  async activate(name: ChannelName, subscriber: Subscriber, offset: number): Promise<void> {
    this.hub.release(name.channel, subscriber, offset);
    if (!RULES[name.namespace].presence) return;
    try {
      const joined = await this.presenceStore.add(name.channel, subscriber.user, subscriber.id);
      if (joined) await this.announce('join', name.channel, subscriber.user);
    } catch (error) {
      // The reply is out and the subscription stands: failing here would send a second
      // answer to one command (or close a shortcut socket 1008). The Redis presence
      // store re-registers the member once Redis is back.
      this.log.warn({ err: error, channel: name.channel }, 'presence add or join announcement failed');
    }
  }

  async unsubscribe(name: ChannelName, subscriber: Subscriber): Promise<void> {
    this.hub.remove(name.channel, subscriber);
    if (!RULES[name.namespace].presence) return;
    const left = await this.presenceStore.remove(name.channel, subscriber.user, subscriber.id);
    if (left) await this.announce('leave', name.channel, subscriber.user);
  }

  history(name: ChannelName, before: number | undefined, limit: number): Promise<HistoryPage> {
    return this.store.history(name.channel, before, limit);
  }

  async presence(name: ChannelName): Promise<PresenceEntry[]> {
    if (!RULES[name.namespace].presence) return [];
    return this.presenceStore.list(name.channel);
  }

  async typing(name: ChannelName, user: string): Promise<void> {
    await this.broker.publish({
      channel: name.channel,
      offset: 0,
      frame: eventText('typing', name.channel, user),
      skipUser: user,
    });
  }

  private async announce(type: 'join' | 'leave', channel: string, user: string): Promise<void> {
    await this.broker.publish({ channel, offset: 0, frame: eventText(type, channel, user) });
  }
}
