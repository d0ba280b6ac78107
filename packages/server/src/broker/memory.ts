import type { Broker, Publication, PublicationHandler } from './broker.ts';

/**
 * The embedded broker: delivery inside one process. It serves one instance
 * only; several instances need REDIS_URL.
 */
export class MemoryBroker implements Broker {
  readonly name = 'memory';
  /** In one process nothing is lost between publish and handler. */
  readonly delivery = 'reliable' as const;
  private readonly handlers: PublicationHandler[] = [];
  private readonly channels = new Set<string>();
  private closed = false;

  onPublication(handler: PublicationHandler): void {
    this.handlers.push(handler);
  }

  onReconnect(_handler: () => void): void {
    // Never disconnects.
  }

  async publish(publication: Publication): Promise<void> {
    if (this.closed || !this.channels.has(publication.channel)) return;
    for (const handler of this.handlers) handler(publication);
  }

  async subscribe(channel: string): Promise<void> {
    this.channels.add(channel);
  }

  async unsubscribe(channel: string): Promise<void> {
    this.channels.delete(channel);
  }

  isReady(): boolean {
    return !this.closed;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.channels.clear();
  }
}
