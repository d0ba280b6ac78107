import type { ChannelName } from '../channels/names.ts';

/**
 * One connection's subscriptions, by channel. Most connections hold one (a
 * room page, a notifications feed, the `/ws/rooms/…` shortcuts), so the
 * first lives in a field and a Map is made only for a second: a Map with one
 * entry is about 230 bytes, a tenth of what an idle connection costs.
 */
export class Subscriptions {
  private only: ChannelName | undefined;
  private many: Map<string, ChannelName> | undefined;

  get size(): number {
    return this.many ? this.many.size : this.only ? 1 : 0;
  }

  get(channel: string): ChannelName | undefined {
    if (this.many) return this.many.get(channel);
    return this.only?.channel === channel ? this.only : undefined;
  }

  has(channel: string): boolean {
    return this.get(channel) !== undefined;
  }

  set(name: ChannelName): void {
    if (this.many) {
      this.many.set(name.channel, name);
    } else if (!this.only || this.only.channel === name.channel) {
      this.only = name;
    } else {
      this.many = new Map([
        [this.only.channel, this.only],
        [name.channel, name],
      ]);
      this.only = undefined;
    }
  }

  delete(channel: string): boolean {
    if (this.many) return this.many.delete(channel);
    if (this.only?.channel !== channel) return false;
    this.only = undefined;
    return true;
  }

  /** A copy: the caller may unsubscribe while it walks them. */
  names(): ChannelName[] {
    if (this.many) return [...this.many.values()];
    return this.only ? [this.only] : [];
  }

  clear(): void {
    this.only = undefined;
    this.many = undefined;
  }
}
