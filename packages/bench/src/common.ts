/**
 * What the orchestrator (main.ts) and the load generators (loadgen.ts) share:
 * the clock, the latency histogram, the message shape and the IPC messages.
 */

/** The three servers under test. */
export type ServerKind = 'parley' | 'ws' | 'socketio';
export const SERVER_KINDS: readonly ServerKind[] = ['parley', 'ws', 'socketio'];
export const SERVER_LABEL: Record<ServerKind, string> = {
  parley: 'Parley',
  ws: 'ws-baseline',
  socketio: 'Socket.IO',
};

// ── clock ──────────────────────────────────────────────────────────────────

/**
 * Microseconds on CLOCK_MONOTONIC, the same clock in every process of this
 * machine: `performance.now()` is uv_hrtime() less this process's origin, and
 * the origin is read once from process.hrtime (also uv_hrtime). Publishers put
 * it in the payload as `ts`; receivers subtract it from their own reading.
 */
const monoOriginUs = Number(process.hrtime.bigint() / 1000n) - performance.now() * 1000;
export function nowUs(): number {
  return monoOriginUs + performance.now() * 1000;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// ── histogram ──────────────────────────────────────────────────────────────

/** Buckets per power of two: each bucket is 1/32 of an octave wide (≤ 2.2 % error). */
const SUB = 32;
const SUB_BITS = 5;
const OCTAVES = 32;
export const HISTOGRAM_BUCKETS = SUB * OCTAVES;

/**
 * A latency histogram in µs with fixed log-linear buckets: recording is a few
 * integer operations, no per-sample storage, and histograms of several
 * processes add bucket by bucket.
 */
export class Histogram {
  readonly counts = new Float64Array(HISTOGRAM_BUCKETS);
  count = 0;
  max = 0;
  sum = 0;

  record(us: number): void {
    const v = us < 1 ? 1 : us >= 2 ** 31 ? 2 ** 31 - 1 : us | 0;
    const e = 31 - Math.clz32(v);
    const sub = e >= SUB_BITS ? (v >>> (e - SUB_BITS)) & (SUB - 1) : ((v << (SUB_BITS - e)) & (SUB - 1)) >>> 0;
    this.counts[e * SUB + sub]!++;
    this.count++;
    this.sum += us;
    if (us > this.max) this.max = us;
  }

  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.max = 0;
    this.sum = 0;
  }

  /** Only the non-empty buckets, for IPC. */
  toJSON(): HistogramData {
    const buckets: Array<[number, number]> = [];
    for (let i = 0; i < HISTOGRAM_BUCKETS; i++) if (this.counts[i]! > 0) buckets.push([i, this.counts[i]!]);
    return { buckets, count: this.count, max: this.max, sum: this.sum };
  }

  add(data: HistogramData): void {
    for (const [i, n] of data.buckets) this.counts[i]! += n;
    this.count += data.count;
    this.sum += data.sum;
    if (data.max > this.max) this.max = data.max;
  }

  /** Upper edge of the bucket holding the q-quantile (capped at the exact max), in µs. */
  percentile(q: number): number {
    if (this.count === 0) return 0;
    const rank = Math.ceil(q * this.count);
    let seen = 0;
    for (let i = 0; i < HISTOGRAM_BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return Math.min(bucketUpper(i), this.max);
    }
    return this.max;
  }
}

function bucketUpper(index: number): number {
  const e = Math.floor(index / SUB);
  const sub = index % SUB;
  return e >= SUB_BITS ? 2 ** e + (sub + 1) * 2 ** (e - SUB_BITS) : 2 ** e * (1 + (sub + 1) / SUB);
}

export interface HistogramData {
  buckets: Array<[number, number]>;
  count: number;
  max: number;
  sum: number;
}

// ── the message ────────────────────────────────────────────────────────────

/**
 * Every server carries the same payload, `{"room","seq","ts","pad"}`, about
 * 200 bytes: `seq` counts per room from 1, `ts` is the publisher's nowUs().
 * The load generator finds `"seq":` and then `"ts":` in the raw bytes; it
 * never JSON-parses a delivery.
 */
export const PAD = 'x'.repeat(130);
export function payload(room: string, seq: number, ts: number): string {
  return `{"room":"${room}","seq":${seq},"ts":${Math.round(ts)},"pad":"${PAD}"}`;
}

/** The publish frame each server expects, carrying `payload` unchanged. */
export function publishFrame(kind: ServerKind, room: string, data: string): string {
  switch (kind) {
    case 'parley':
      return `{"type":"publish","channel":"room:${room}","data":${data}}`;
    case 'ws':
      return `{"room":"${room}","data":${data}}`;
    case 'socketio':
      return `42["publish",${data}]`;
  }
}

// ── IPC between main.ts and loadgen.ts ─────────────────────────────────────

export interface ConnectionGroup {
  room: string;
  /** Receivers in this room held by this load generator. */
  count: number;
  /** Index into `urls` (which server instance). */
  instance: number;
}

export interface ConnectCommand {
  t: 'connect';
  kind: ServerKind;
  /** Per instance: ws://127.0.0.1:<port> */
  urls: string[];
  token: string;
  groups: ConnectionGroup[];
  /** One publisher connection per entry. */
  publishers: Array<{ room: string; instance: number }>;
  localAddresses: string[];
  concurrency: number;
  timeoutMs: number;
}

export interface StepCommand {
  t: 'step';
  /** Total offered messages/s over all of this generator's publishers. */
  rate: number;
  startUs: number;
  /** Latency and deliveries are counted for messages sent in [warmEndUs, endUs). */
  warmEndUs: number;
  endUs: number;
}

export interface PersistCommand {
  t: 'persist';
  url: string;
  token: string;
  connections: number;
  /** Publishes in flight per connection. */
  window: number;
  /** Upper bounds: stop at whichever comes first. */
  maxMessages: number;
  durationMs: number;
  localAddresses: string[];
  keys: KeyKind;
}

/**
 * The idempotency key each persisted publish carries: none (as the other
 * scenarios send them), the SDK's own (`newIdempotencyKey`, a UUID v7 that
 * begins with the time), or a random UUID v4, as an app that makes its own
 * with `crypto.randomUUID()` sends.
 */
export type KeyKind = 'none' | 'sdk' | 'uuid4';

export type ToLoadgen =
  | ConnectCommand
  | StepCommand
  | PersistCommand
  | { t: 'window'; warmEndUs: number; endUs: number }
  | { t: 'stats' }
  | { t: 'reset' }
  | { t: 'quiesce' }
  | { t: 'exit' };

export interface RoomCounters {
  /** Receivers of this room in this generator. */
  members: number;
  /** Distinct (receiver, seq) deliveries since the last reset. */
  distinct: number;
  duplicates: number;
  reordered: number;
  /** Deliveries of another room's message. */
  foreign: number;
}

export interface ConnectedReport {
  t: 'connected';
  opened: number;
  errors: number;
  firstError: string | undefined;
  ms: number;
}

export interface PublishedReport {
  t: 'published';
  /** Messages sent per room during the step (warm-up included). */
  perRoom: Record<string, number>;
  /** Sent within the measured window, per second. */
  achievedRate: number;
  /** Sends skipped because the publisher socket's buffer was full. */
  skipped: number;
}

export interface StatsReport {
  t: 'stats';
  rooms: Record<string, RoomCounters>;
  latency: HistogramData;
  /** Deliveries of messages sent in the measured window. */
  windowDeliveries: number;
  windowBytes: number;
  /** Sockets closed while they should have been open, and the codes. */
  unexpectedCloses: number;
  closeCodes: Record<string, number>;
  /** Error frames received by publishers (Parley). */
  publishErrors: number;
}

export interface PersistReport {
  t: 'persisted';
  acked: number;
  errors: number;
  firstError: string | undefined;
  ms: number;
  latency: HistogramData;
}

export type FromLoadgen = ConnectedReport | PublishedReport | StatsReport | PersistReport | { t: 'ok' };
