/**
 * One thing to deliver to a channel's subscribers on every instance.
 * `frame` is the complete WebSocket text frame, encoded once by the publisher.
 */
export interface Publication {
  channel: string;
  /** The stored message's offset; 0 for ephemeral events (typing, join, leave). */
  offset: number;
  frame: string;
  /** Subscribers of this user do not get the frame (a typing user, say). */
  skipUser?: string | undefined;
  /** When the publish began (ms since the epoch), for the delivery-latency histogram. */
  publishedAt?: number | undefined;
}

export type PublicationHandler = (publication: Publication) => void;

/** Whether a broker can lose publications; a lossy one makes the hub re-check positions with the store. */
export type Delivery = 'reliable' | 'at-most-once';

/**
 * Carries publications between instances.
 *
 * The contract every implementation keeps (test/broker.conformance.test.ts):
 * - Delivery is at most once: a publication may be lost (a Redis hiccup), so
 *   ordering and completeness come from the store's offsets, checked by the
 *   hub, never from the broker.
 * - Publications to one channel from one instance arrive in the order they
 *   were published, at every instance subscribed to that channel, including
 *   the publishing instance when it is subscribed.
 * - `subscribe` resolves once publications on that channel will be received;
 *   calls are counted per channel by the caller (the hub subscribes on its
 *   first local subscriber and unsubscribes after its last).
 */
export interface Broker {
  readonly name: string;
  readonly delivery: Delivery;
  onPublication(handler: PublicationHandler): void;
  /**
   * Called after the broker lost and regained its connection: publications
   * in between are gone, so the hub re-reads every channel's position.
   */
  onReconnect(handler: () => void): void;
  publish(publication: Publication): Promise<void>;
  subscribe(channel: string): Promise<void>;
  unsubscribe(channel: string): Promise<void>;
  /** false while the broker cannot deliver (Redis down); /readyz reports it. */
  isReady(): boolean;
  close(): Promise<void>;
}
