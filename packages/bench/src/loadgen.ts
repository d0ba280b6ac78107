/**
 * A load generator: a child process of main.ts (pinned to its own core when
 * `taskset` allows), driven over IPC. Publishers speak over plain `ws`,
 * receivers over the bare client of raw-client.ts, each speaking the
 * server's own wire protocol, so its cost per delivery is the same whichever
 * server it measures.
 *
 * A delivery costs it one Buffer.indexOf for `"seq":`, one for `"ts":`, a
 * few byte compares and a histogram increment: no JSON.parse, no strings.
 * Every receiver keeps a bitset of the seqs it has seen, which counts
 * duplicates and reordering per room exactly; losses are what the
 * orchestrator expects less the distinct deliveries.
 */
import { randomUUID } from 'node:crypto';
import { newIdempotencyKey } from '@parley/client';
import WebSocket from 'ws';
import {
  type ConnectCommand,
  type FromLoadgen,
  Histogram,
  nowUs,
  type PersistCommand,
  payload,
  publishFrame,
  type RoomCounters,
  type ServerKind,
  type StepCommand,
  sleep,
  type ToLoadgen,
} from './common.ts';
import { type MessageHandler, openRawClient, type RawClient } from './raw-client.ts';

const SEQ_KEY = Buffer.from('"seq":');
const TS_KEY = Buffer.from('"ts":');
const ZERO = 0x30;
const NINE = 0x39;
/** A publisher whose socket has this much unsent skips sends rather than buffering without bound. */
const PUBLISHER_BUFFER_LIMIT = 4 * 1024 * 1024;
/** Most sends in one timer tick (bounds a catch-up burst). */
const MAX_SENDS_PER_TICK = 5000;

function send(message: FromLoadgen): void {
  process.send?.(message);
}

// ── state ──────────────────────────────────────────────────────────────────

const rooms = new Map<string, RoomCounters>();
const latency = new Histogram();
let windowStartUs = Number.POSITIVE_INFINITY;
let windowEndUs = Number.POSITIVE_INFINITY;
let windowDeliveries = 0;
let windowBytes = 0;
let unexpectedCloses = 0;
let closeCodes: Record<string, number> = {};
let publishErrors = 0;
let quiescing = false;
const sockets: Array<{ terminate(): void }> = [];

function roomCounters(room: string): RoomCounters {
  let counters = rooms.get(room);
  if (!counters) {
    counters = { members: 0, distinct: 0, duplicates: 0, reordered: 0, foreign: 0 };
    rooms.set(room, counters);
  }
  return counters;
}

function parseUint(data: Buffer, start: number, end: number): number {
  let value = 0;
  for (let i = start; i < end; i++) {
    const c = data[i]!;
    if (c < ZERO || c > NINE) break;
    value = value * 10 + (c - ZERO);
  }
  return value;
}

/** One receiving socket, in one room. */
class Receiver {
  /** `"<room>",` as it stands just before `"seq":` in the payload. */
  private readonly roomTag: Buffer;
  private seen = new Uint8Array(1024);
  private last = 0;

  constructor(
    private readonly counters: RoomCounters,
    room: string,
    /** Socket.IO only: answers Engine.IO's ping, or the server drops us. */
    private readonly pong: (() => void) | undefined,
  ) {
    this.roomTag = Buffer.from(`"${room}",`);
  }

  readonly onMessage: MessageHandler = (data, start, end) => {
    const at = data.indexOf(SEQ_KEY, start);
    if (at < 0 || at >= end) {
      if (this.pong && end - start === 1 && data[start] === 0x32) this.pong();
      return;
    }
    const tagAt = at - this.roomTag.length;
    if (tagAt < start || data.compare(this.roomTag, 0, this.roomTag.length, tagAt, at) !== 0) {
      this.counters.foreign++;
      return;
    }
    const seq = parseUint(data, at + SEQ_KEY.length, end);
    const tsAt = data.indexOf(TS_KEY, at + SEQ_KEY.length);
    const ts = tsAt < 0 || tsAt >= end ? 0 : parseUint(data, tsAt + TS_KEY.length, end);
    const byte = seq >>> 3;
    if (byte >= this.seen.length) {
      const grown = new Uint8Array(Math.max(this.seen.length * 2, byte + 1024));
      grown.set(this.seen);
      this.seen = grown;
    }
    const bit = 1 << (seq & 7);
    if (this.seen[byte]! & bit) {
      this.counters.duplicates++;
      return;
    }
    this.seen[byte]! |= bit;
    this.counters.distinct++;
    if (seq < this.last) this.counters.reordered++;
    else this.last = seq;
    if (ts >= windowStartUs && ts < windowEndUs) {
      latency.record(nowUs() - ts);
      windowDeliveries++;
      windowBytes += end - start;
    }
  };
}

// ── connecting ─────────────────────────────────────────────────────────────

interface Publisher {
  ws: WebSocket;
  room: string;
  seq: number;
}
const publishers: Publisher[] = [];

function socketUrl(kind: ServerKind, base: string, room: string | undefined): string {
  switch (kind) {
    case 'parley':
      return `${base}/ws`;
    case 'ws':
      return room === undefined ? `${base}/` : `${base}/?room=${room}`;
    case 'socketio':
      return `${base}/socket.io/?EIO=4&transport=websocket${room === undefined ? '' : `&room=${room}`}`;
  }
}

/**
 * The server's handshake after the upgrade, fed its messages one by one:
 * Parley's welcome and (for a receiver) the subscribe reply, Engine.IO's open
 * packet and Socket.IO's namespace connect; ws-baseline has none.
 */
class Handshake {
  private stage = 0;

  constructor(
    private readonly kind: ServerKind,
    private readonly room: string | undefined,
    private readonly send: (text: string) => void,
  ) {}

  get doneAtUpgrade(): boolean {
    return this.kind === 'ws';
  }

  /** 'done', 'wait' for the next message, or why it failed. */
  next(text: string): 'done' | 'wait' | Error {
    if (this.kind === 'parley') {
      if (this.stage === 0) {
        if (!text.includes('"type":"welcome"')) return new Error(`expected welcome, got ${text.slice(0, 120)}`);
        this.stage = 1;
        if (this.room === undefined) return 'done';
        this.send(JSON.stringify({ type: 'subscribe', channel: `room:${this.room}`, id: 1 }));
      } else if (text.includes('"type":"reply"')) return 'done';
      else if (text.includes('"type":"error"')) return new Error(`subscribe failed: ${text.slice(0, 200)}`);
    } else if (this.kind === 'socketio') {
      if (text === '2') this.send('3');
      else if (this.stage === 0 && text.startsWith('0{')) {
        this.stage = 1;
        this.send('40');
      } else if (this.stage === 1 && text.startsWith('40')) return 'done';
      else if (text.startsWith('44')) return new Error(`namespace refused: ${text.slice(0, 120)}`);
    }
    return 'wait';
  }
}

/** Opens a publisher's (or the persist scenario's) socket over `ws`, handshake done. */
function openSocket(
  command: ConnectCommand,
  instance: number,
  room: string | undefined,
  localAddress: string,
): Promise<WebSocket> {
  const { kind, token } = command;
  const url = socketUrl(kind, command.urls[instance]!, room);
  return new Promise<WebSocket>((resolve, reject) => {
    const ws = new WebSocket(url, {
      perMessageDeflate: false,
      skipUTF8Validation: true,
      localAddress,
      handshakeTimeout: command.timeoutMs,
      headers: kind === 'parley' ? { authorization: `Bearer ${token}` } : {},
    });
    let settled = false;
    const timer = setTimeout(() => fail(new Error('handshake timed out')), command.timeoutMs);
    const fail = (error: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.terminate();
      reject(error);
    };
    const done = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.removeAllListeners('message');
      ws.removeAllListeners('error');
      ws.on('error', () => {});
      resolve(ws);
    };
    ws.on('error', fail);
    ws.on('close', (code) => fail(new Error(`closed ${code} during handshake`)));
    const handshake = new Handshake(kind, room, (text) => ws.send(text));
    ws.on('message', (raw: Buffer) => {
      const outcome = handshake.next(raw.toString());
      if (outcome === 'done') done();
      else if (outcome instanceof Error) fail(outcome);
    });
    if (handshake.doneAtUpgrade) ws.on('open', done);
  });
}

/**
 * Opens a receiver's socket with the bare client (raw-client.ts), walks it
 * through the handshake, and from the message after that on hands its
 * messages to the receiver `makeReceiver` returns.
 */
function openReceiver(
  command: ConnectCommand,
  instance: number,
  room: string,
  localAddress: string,
  makeReceiver: (client: RawClient) => Receiver,
): Promise<RawClient> {
  const { kind, token } = command;
  return new Promise<RawClient>((resolve, reject) => {
    let client: RawClient | undefined;
    let settled = false;
    const timer = setTimeout(() => fail(new Error('handshake timed out')), command.timeoutMs);
    const fail = (error: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client?.terminate();
      reject(error);
    };
    const done = (opened: RawClient) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opened.onMessage = makeReceiver(opened).onMessage;
      opened.onClose = () => {};
      resolve(opened);
    };
    const handshake = new Handshake(kind, room, (text) => client?.send(text));
    openRawClient(socketUrl(kind, command.urls[instance]!, room), {
      // The first messages may come in the same read as the upgrade response: onOpen runs before them.
      onOpen: (opened) => {
        client = opened;
        opened.onClose = (code) => fail(new Error(`closed ${code} during handshake`));
        if (handshake.doneAtUpgrade) done(opened);
      },
      onMessage: (data, start, end) => {
        const outcome = handshake.next(data.toString('utf8', start, end));
        if (outcome === 'done') done(client!);
        else if (outcome instanceof Error) fail(outcome);
      },
      headers: kind === 'parley' ? { authorization: `Bearer ${token}` } : {},
      localAddress,
      timeoutMs: command.timeoutMs,
    }).catch(fail);
  });
}

async function connect(command: ConnectCommand): Promise<void> {
  const started = Date.now();
  const jobs: Array<{ instance: number; room: string | undefined; publisher: boolean }> = [];
  for (const publisher of command.publishers)
    jobs.push({ instance: publisher.instance, room: publisher.room, publisher: true });
  for (const group of command.groups) {
    roomCounters(group.room);
    for (let i = 0; i < group.count; i++) jobs.push({ instance: group.instance, room: group.room, publisher: false });
  }
  let next = 0;
  let opened = 0;
  let errors = 0;
  let firstError: string | undefined;
  const worker = async () => {
    while (next < jobs.length) {
      const job = jobs[next]!;
      const address = command.localAddresses[next % command.localAddresses.length]!;
      next++;
      try {
        const onClose = (code: number) => {
          if (quiescing) return;
          unexpectedCloses++;
          closeCodes[code] = (closeCodes[code] ?? 0) + 1;
        };
        if (job.publisher) {
          // A publisher connects without a room: it is not one of the receivers.
          const ws = await openSocket(command, job.instance, undefined, address);
          ws.on('close', onClose);
          publishers.push({ ws, room: job.room!, seq: 0 });
          ws.on('message', (data: Buffer) => {
            if (data.length === 1 && data[0] === 0x32) ws.send('3');
            else if (data.includes('"type":"error"')) publishErrors++;
          });
          sockets.push(ws);
        } else {
          const room = job.room!;
          const counters = roomCounters(room);
          const pong = command.kind === 'socketio';
          const client = await openReceiver(command, job.instance, room, address, (opened) => {
            counters.members++;
            return new Receiver(counters, room, pong ? () => opened.send('3') : undefined);
          });
          client.onClose = onClose;
          sockets.push(client);
        }
        opened++;
      } catch (error) {
        errors++;
        firstError ??= (error as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, command.concurrency) }, worker));
  send({ t: 'connected', opened, errors, firstError, ms: Date.now() - started });
}

// ── publishing ─────────────────────────────────────────────────────────────

async function step(command: StepCommand, kind: ServerKind): Promise<void> {
  windowStartUs = command.warmEndUs;
  windowEndUs = command.endUs;
  const perRoom: Record<string, number> = {};
  for (const publisher of publishers) perRoom[publisher.room] = 0;
  let due = 0;
  let inWindow = 0;
  let skipped = 0;
  const wait = (command.startUs - nowUs()) / 1000;
  if (wait > 0) await sleep(wait);
  for (;;) {
    const now = nowUs();
    if (now >= command.endUs || publishers.length === 0) break;
    const target = Math.floor((command.rate * (now - command.startUs)) / 1e6);
    let budget = MAX_SENDS_PER_TICK;
    while (due < target && budget-- > 0) {
      const publisher = publishers[due % publishers.length]!;
      due++;
      if (publisher.ws.bufferedAmount > PUBLISHER_BUFFER_LIMIT || publisher.ws.readyState !== WebSocket.OPEN) {
        skipped++;
        continue;
      }
      const ts = nowUs();
      publisher.seq++;
      publisher.ws.send(publishFrame(kind, publisher.room, payload(publisher.room, publisher.seq, ts)));
      perRoom[publisher.room]!++;
      if (ts >= command.warmEndUs) inWindow++;
    }
    await sleep(1);
  }
  const seconds = (command.endUs - command.warmEndUs) / 1e6;
  send({ t: 'published', perRoom, achievedRate: seconds > 0 ? inWindow / seconds : 0, skipped });
}

// ── persisted throughput (Parley only) ─────────────────────────────────────

async function persist(command: PersistCommand): Promise<void> {
  const hist = new Histogram();
  const conns: WebSocket[] = [];
  const connectCommand: ConnectCommand = {
    t: 'connect',
    kind: 'parley',
    urls: [command.url],
    token: command.token,
    groups: [],
    publishers: [],
    localAddresses: command.localAddresses,
    concurrency: 1,
    timeoutMs: 10_000,
  };
  for (let i = 0; i < command.connections; i++)
    conns.push(
      await openSocket(connectCommand, 0, undefined, command.localAddresses[i % command.localAddresses.length]!),
    );
  const makeKey = command.keys === 'uuid4' ? randomUUID : newIdempotencyKey;
  let issued = 0;
  let acked = 0;
  let errors = 0;
  let firstError: string | undefined;
  let stopped = false;
  const started = nowUs();
  const deadline = started + command.durationMs * 1000;
  let resolveDone: () => void = () => {};
  const allDone = new Promise<void>((resolve) => {
    resolveDone = resolve;
  });
  let inFlight = 0;
  const fill = (ws: WebSocket, room: string, sent: Map<number, number>, seqRef: { seq: number }) => {
    while (!stopped && sent.size < command.window && issued < command.maxMessages) {
      if (nowUs() >= deadline) {
        stopped = true;
        break;
      }
      issued++;
      inFlight++;
      const id = ++seqRef.seq;
      const ts = nowUs();
      sent.set(id, ts);
      const key = command.keys === 'none' ? '' : `,"idempotencyKey":"${makeKey()}"`;
      ws.send(`{"type":"publish","id":${id},"channel":"room:${room}"${key},"data":${payload(room, id, ts)}}`);
    }
    if (issued >= command.maxMessages) stopped = true;
    if (stopped && inFlight === 0) resolveDone();
  };
  conns.forEach((ws, index) => {
    const room = `persist-${index}`;
    const sent = new Map<number, number>();
    const seqRef = { seq: 0 };
    ws.on('message', (raw: Buffer) => {
      const frame = JSON.parse(raw.toString()) as { id?: number; type: string; error?: { code: string } };
      if (typeof frame.id !== 'number') {
        if (frame.type === 'error') {
          errors++;
          firstError ??= JSON.stringify(frame.error);
        }
        return;
      }
      const ts = sent.get(frame.id);
      if (ts === undefined) return;
      sent.delete(frame.id);
      inFlight--;
      if (frame.type === 'reply') {
        acked++;
        hist.record(nowUs() - ts);
      } else {
        errors++;
        firstError ??= JSON.stringify(frame.error);
      }
      fill(ws, room, sent, seqRef);
    });
    fill(ws, room, sent, seqRef);
  });
  const ticker = setInterval(() => {
    if (nowUs() >= deadline) stopped = true;
    if (stopped && inFlight === 0) resolveDone();
  }, 50);
  // Publishes still unanswered 15 s after the deadline count as errors.
  await Promise.race([allDone, sleep(command.durationMs + 15_000)]);
  clearInterval(ticker);
  const ms = (nowUs() - started) / 1000;
  if (inFlight > 0) {
    errors += inFlight;
    firstError ??= `${inFlight} publishes unanswered`;
  }
  for (const ws of conns) ws.terminate();
  send({ t: 'persisted', acked, errors, firstError, ms, latency: hist.toJSON() });
}

// ── IPC ────────────────────────────────────────────────────────────────────

let kind: ServerKind = 'parley';
let busy: Promise<void> = Promise.resolve();

process.on('message', (message: ToLoadgen) => {
  busy = busy
    .then(() => handle(message))
    .catch((error) => {
      process.stderr.write(`loadgen: ${(error as Error).stack ?? error}\n`);
      process.exit(1);
    });
});
process.on('disconnect', () => process.exit(0));

async function handle(message: ToLoadgen): Promise<void> {
  switch (message.t) {
    case 'connect':
      kind = message.kind;
      return connect(message);
    case 'step':
      // Runs in the background so `stats` can be answered meanwhile.
      void step(message, kind);
      return;
    case 'window':
      windowStartUs = message.warmEndUs;
      windowEndUs = message.endUs;
      send({ t: 'ok' });
      return;
    case 'persist':
      return persist(message);
    case 'reset':
      for (const counters of rooms.values()) {
        counters.distinct = 0;
        counters.duplicates = 0;
        counters.reordered = 0;
        counters.foreign = 0;
      }
      latency.reset();
      windowDeliveries = 0;
      windowBytes = 0;
      unexpectedCloses = 0;
      closeCodes = {};
      publishErrors = 0;
      send({ t: 'ok' });
      return;
    case 'stats':
      send({
        t: 'stats',
        rooms: Object.fromEntries(rooms),
        latency: latency.toJSON(),
        windowDeliveries,
        windowBytes,
        unexpectedCloses,
        closeCodes,
        publishErrors,
      });
      return;
    case 'quiesce':
      quiescing = true;
      send({ t: 'ok' });
      return;
    case 'exit':
      quiescing = true;
      for (const ws of sockets) ws.terminate();
      process.exit(0);
  }
}
