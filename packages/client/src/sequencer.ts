import type { StoredMessage } from './wire.ts';

/** Offsets the client lacks: every offset with `after < offset < before`. */
export interface Gap {
  after: number;
  before: number;
}

/** Most offsets one history page returns (PROTOCOL §3: `limit` 1–100). */
export const FILL_PAGE = 100;

/**
 * Continuity of one channel: turns messages that may come duplicated, out of
 * order or with holes (pushes, recovered replies, history pages) into one
 * gap-free, duplicate-free sequence. Pure (no I/O): the client asks `gap()`
 * what to fetch and feeds the answer back through `accept`.
 */
export class ChannelSequencer {
  private last: number;
  private currentEpoch: string;
  /** Held back until the offsets before them arrive. */
  private readonly held = new Map<number, StoredMessage>();
  /** Highest offset known to exist in the channel. */
  private latest: number;

  constructor(offset: number, epoch: string) {
    this.last = offset;
    this.latest = offset;
    this.currentEpoch = epoch;
  }

  /** The last offset delivered, with its epoch: what a recovering subscribe sends as `since`. */
  get position(): { offset: number; epoch: string } {
    return { offset: this.last, epoch: this.currentEpoch };
  }

  get offset(): number {
    return this.last;
  }

  get epoch(): string {
    return this.currentEpoch;
  }

  /** How many messages wait for a gap to be filled. */
  get heldCount(): number {
    return this.held.size;
  }

  /**
   * Takes one message; returns the messages now deliverable, in offset order
   * (none when it is a duplicate or comes after a gap).
   */
  accept(message: StoredMessage): StoredMessage[] {
    // Offsets of another epoch are not comparable: such a message is from a lost history.
    if (message.epoch !== this.currentEpoch) return [];
    if (message.offset <= this.last || this.held.has(message.offset)) return [];
    if (message.offset > this.latest) this.latest = message.offset;
    if (message.offset !== this.last + 1) {
      this.held.set(message.offset, message);
      return [];
    }
    this.last = message.offset;
    return [message, ...this.release()];
  }

  /** `accept` for a batch (a recovered reply, a history page). */
  acceptAll(messages: readonly StoredMessage[]): StoredMessage[] {
    const out: StoredMessage[] = [];
    // Oldest first makes every message after the first one deliverable at once.
    for (const message of [...messages].sort((a, b) => a.offset - b.offset)) out.push(...this.accept(message));
    return out;
  }

  /** The channel is known to hold messages up to `offset` (a subscribe reply's latest offset). */
  observe(offset: number): void {
    if (offset > this.latest) this.latest = offset;
  }

  /** The next hole to fill, or undefined when everything known has been delivered. */
  gap(): Gap | undefined {
    if (this.latest <= this.last) return undefined;
    let before = this.latest + 1;
    for (const offset of this.held.keys()) if (offset < before) before = offset;
    return before > this.last + 1 ? { after: this.last, before } : undefined;
  }

  /**
   * The history request that fills the start of the current gap: `before` is
   * exclusive and history answers the latest `limit` before it, so this pages
   * forward from the last delivered offset, at most FILL_PAGE at a time.
   */
  fillRequest(): { before: number; limit: number } | undefined {
    const gap = this.gap();
    if (!gap) return undefined;
    const before = Math.min(gap.before, gap.after + FILL_PAGE + 1);
    return { before, limit: before - gap.after - 1 };
  }

  /**
   * Gives up on the current gap (the messages no longer exist: a trimmed
   * topic, say) and returns the held messages that follow it.
   */
  skipGap(): StoredMessage[] {
    const gap = this.gap();
    if (!gap) return [];
    this.last = gap.before - 1;
    return this.release();
  }

  /** Forgets held messages; a recovering subscribe will send them again. */
  clearHeld(): void {
    this.held.clear();
    this.latest = this.last;
  }

  /** Starts over at `offset` (history was lost or is too far behind to recover). */
  reset(offset: number, epoch: string): void {
    this.held.clear();
    this.last = offset;
    this.latest = offset;
    this.currentEpoch = epoch;
  }

  private release(): StoredMessage[] {
    const out: StoredMessage[] = [];
    // Bounded by the number of held messages: each step removes one.
    for (let next = this.held.get(this.last + 1); next !== undefined; next = this.held.get(this.last + 1)) {
      this.held.delete(next.offset);
      this.last = next.offset;
      out.push(next);
    }
    return out;
  }
}
