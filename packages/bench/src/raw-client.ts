/**
 * A bare WebSocket client for the load generator's receivers: the upgrade
 * written and read by hand, then the server's frames parsed straight out of
 * the bytes the kernel handed over.
 *
 * A receiver through `ws` pays, per read, for a fresh 64 KiB buffer, Node's
 * Readable machinery and a `data` event, then per message for ws's Receiver
 * (a Writable stream), a Buffer and an event. With 200,000 deliveries a
 * second on one core that, not the server, set the ceiling of the fan-out
 * ladders. Here every socket reads into one buffer shared by all of them
 * (`net.connect`'s `onread`: no allocation, no stream), a read holding twenty
 * frames is one loop over their headers, and a message is handed on as a
 * range of that buffer, never copied (unless it straddles two reads).
 *
 * Only what the three servers under test send is understood: unmasked,
 * unfragmented text and binary frames, ping (answered), pong (ignored) and
 * close. Anything else (a fragment, a masked frame) ends the connection with
 * 1002, so it shows up in the run as a close.
 */
import { createHash, randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';

const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const OP_CONTINUATION = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;

/** A close code for "no close frame came" (RFC 6455 §7.1.5). */
const ABNORMAL_CLOSURE = 1006;
/** Ours, for a frame this client does not understand. */
export const PROTOCOL_ERROR = 1002;
/** The upgrade response's head, at most. */
const MAX_RESPONSE_HEAD = 16 * 1024;

/**
 * Every socket's reads land here. A read is consumed before the next one
 * starts (the callback is synchronous), so one buffer serves them all; what
 * must outlive the read (a partial frame) is copied out.
 */
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024);

/** A message: `data[start, end)` (the range is valid only during the call). */
export type MessageHandler = (data: Buffer, start: number, end: number) => void;

export interface RawClientOptions {
  /** The first message handler, in place before the first byte is read. */
  onMessage: MessageHandler;
  /** Called with the client once upgraded, before its first message. */
  onOpen?: (client: RawClient) => void;
  headers?: Record<string, string>;
  localAddress?: string;
  timeoutMs: number;
}

/** A client frame (RFC 6455 §5.2): final, masked, of one opcode. */
function clientFrame(opcode: number, payload: Buffer): Buffer {
  const length = payload.length;
  const header = length < 126 ? 2 : length < 65536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(header + 4 + length);
  frame[0] = 0x80 | opcode;
  if (length < 126) frame[1] = 0x80 | length;
  else if (length < 65536) {
    frame[1] = 0x80 | 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 0x80 | 127;
    frame.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
    frame.writeUInt32BE(length >>> 0, 6);
  }
  const mask = randomBytes(4);
  mask.copy(frame, header);
  const at = header + 4;
  for (let i = 0; i < length; i++) frame[at + i] = payload[i]! ^ mask[i & 3]!;
  return frame;
}

export class RawClient {
  /**
   * Called for every text or binary message. A handler may replace itself;
   * the next message goes to the new one.
   */
  onMessage: MessageHandler;
  /** Called once, when the socket has closed, with the server's close code or 1006. */
  onClose: (code: number) => void = () => {};

  /** Bytes of a frame that began in an earlier read (a copy). */
  private pending: Buffer | undefined;
  private closeCode = ABNORMAL_CLOSURE;
  /** Until the upgrade is answered: the response head so far; then undefined. */
  private responseHead: string | undefined = '';
  private socket!: Socket;

  private constructor(
    onMessage: MessageHandler,
    private readonly upgraded: (error?: Error) => void,
    private readonly expectedAccept: string,
  ) {
    this.onMessage = onMessage;
  }

  /** Connects, writes the upgrade request and reports through `upgraded`. */
  static connect(
    target: URL,
    options: RawClientOptions,
    upgraded: (client: RawClient, error?: Error) => void,
  ): RawClient {
    const key = randomBytes(16).toString('base64');
    const accept = createHash('sha1')
      .update(key + WEBSOCKET_GUID)
      .digest('base64');
    const client: RawClient = new RawClient(options.onMessage, (error) => upgraded(client, error), accept);
    const socket = connect({
      host: target.hostname,
      port: Number(target.port),
      localAddress: options.localAddress,
      noDelay: true,
      onread: {
        buffer: READ_BUFFER,
        callback: (bytes) => {
          client.onRead(bytes);
          return true;
        },
      },
    });
    client.socket = socket;
    socket.on('error', () => {});
    socket.on('close', () => {
      if (client.responseHead !== undefined)
        client.upgraded(new Error(`closed ${client.closeCode} during the upgrade`));
      client.onClose(client.closeCode);
    });
    const headers = Object.entries(options.headers ?? {})
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('');
    socket.write(
      `GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\n${headers}` +
        `Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    return client;
  }

  send(text: string): void {
    this.socket.write(clientFrame(OP_TEXT, Buffer.from(text)));
  }

  terminate(): void {
    this.socket.destroy();
  }

  /** `onread`'s callback: `bytes` new bytes at the start of READ_BUFFER. */
  private onRead(bytes: number): void {
    let data = READ_BUFFER;
    let at = 0;
    let end = bytes;
    if (this.responseHead !== undefined) {
      at = this.readResponseHead(bytes);
      if (at < 0) return;
    }
    if (this.pending !== undefined) {
      data = Buffer.concat([this.pending, READ_BUFFER.subarray(at, end)]);
      this.pending = undefined;
      at = 0;
      end = data.length;
    }
    while (end - at >= 2) {
      const first = data[at]!;
      const second = data[at + 1]!;
      let length = second & 0x7f;
      let header = 2;
      if (length === 126) {
        if (end - at < 4) break;
        length = data.readUInt16BE(at + 2);
        header = 4;
      } else if (length === 127) {
        if (end - at < 10) break;
        length = data.readUInt32BE(at + 2) * 2 ** 32 + data.readUInt32BE(at + 6);
        header = 10;
      }
      if (end - at < header + length) break;
      const start = at + header;
      const stop = start + length;
      at = stop;
      const opcode = first & 0x0f;
      if ((first & 0x80) === 0 || opcode === OP_CONTINUATION || (second & 0x80) !== 0) {
        this.fail();
        return;
      }
      if (opcode === OP_TEXT || opcode === OP_BINARY) this.onMessage(data, start, stop);
      else if (opcode === OP_PING) this.socket.write(clientFrame(OP_PONG, data.subarray(start, stop)));
      else if (opcode === OP_CLOSE) {
        this.closeCode = length >= 2 ? data.readUInt16BE(start) : 1005;
        this.socket.end(clientFrame(OP_CLOSE, data.subarray(start, Math.min(stop, start + 2))));
        return;
      } else if (opcode !== OP_PONG) {
        this.fail();
        return;
      }
    }
    // The next read overwrites READ_BUFFER: keep a copy.
    if (at < end) this.pending = Buffer.from(data.subarray(at, end));
  }

  /**
   * Adds a read to the upgrade response's head; once the head is complete,
   * checks it and returns where the frames begin in READ_BUFFER, else -1.
   */
  private readResponseHead(bytes: number): number {
    const before = (this.responseHead as string).length;
    const head = (this.responseHead as string) + READ_BUFFER.toString('latin1', 0, bytes);
    const headEnd = head.indexOf('\r\n\r\n');
    if (headEnd < 0) {
      this.responseHead = head;
      if (head.length > MAX_RESPONSE_HEAD) this.refuse('the upgrade response is too large');
      return -1;
    }
    this.responseHead = undefined;
    const lines = head.slice(0, headEnd).split('\r\n');
    const status = lines[0]!.split(' ')[1];
    if (status !== '101') return this.refuse(`upgrade refused: HTTP ${status}`);
    const accept = lines.find((line) => line.toLowerCase().startsWith('sec-websocket-accept:'));
    if (accept?.slice(accept.indexOf(':') + 1).trim() !== this.expectedAccept)
      return this.refuse('upgrade answered with a wrong Sec-WebSocket-Accept');
    this.upgraded();
    return headEnd + 4 - before;
  }

  private refuse(reason: string): number {
    this.responseHead = undefined;
    this.upgraded(new Error(reason));
    this.socket.destroy();
    return -1;
  }

  private fail(): void {
    this.closeCode = PROTOCOL_ERROR;
    this.socket.destroy();
  }
}

/**
 * Opens a WebSocket to `url` (ws://) and resolves once the upgrade is done.
 * Messages go to `options.onMessage` from the first byte after the upgrade
 * response on (the same read may hold both), so nothing waits for the caller.
 */
export function openRawClient(url: string, options: RawClientOptions): Promise<RawClient> {
  return new Promise<RawClient>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      client.terminate();
      reject(new Error('upgrade timed out'));
    }, options.timeoutMs);
    const client = RawClient.connect(new URL(url), options, (upgraded, error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error) reject(error);
      else {
        options.onOpen?.(upgraded);
        resolve(upgraded);
      }
    });
  });
}
