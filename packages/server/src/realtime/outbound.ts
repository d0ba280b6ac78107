/**
 * A frame bound for many sockets. Its payload is encoded once per
 * publication, and so is its WebSocket framing: `wire` is the complete text
 * frame (header and payload, unmasked as a server sends it), built on first
 * use and then written as the same bytes to every socket that can take it.
 */
export class Outbound {
  private framed: Buffer | undefined;

  constructor(readonly payload: Buffer) {}

  get wire(): Buffer {
    this.framed ??= textFrame(this.payload);
    return this.framed;
  }
}

/** An unmasked, final, uncompressed text frame (RFC 6455 §5.2). */
export function textFrame(payload: Buffer): Buffer {
  const frame = frameWithHeader(payload.length);
  payload.copy(frame, frame.length - payload.length);
  return frame;
}

/** `textFrame` of a string's UTF-8, encoded straight into the frame (one allocation, one copy). */
export function textFrameOf(text: string, length = Buffer.byteLength(text)): Buffer {
  const frame = frameWithHeader(length);
  frame.write(text, frame.length - length);
  return frame;
}

/** A frame of `length` payload bytes, its header written and its payload left to fill. */
function frameWithHeader(length: number): Buffer {
  const headerLength = length < 126 ? 2 : length < 65536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(headerLength + length);
  frame[0] = 0x81; // FIN, opcode 1 (text)
  if (length < 126) {
    frame[1] = length;
  } else if (length < 65536) {
    frame[1] = 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 127;
    frame.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
    frame.writeUInt32BE(length >>> 0, 6);
  }
  return frame;
}

/** A ping with no payload, as a server sends it (unmasked). */
export const PING_FRAME: Buffer = Buffer.from([0x89, 0x00]);

/** Something holding a corked socket, uncorked at the end of the turn. */
export interface Corkable {
  uncork(): void;
}

/**
 * Coalesces writes: a socket is corked on its first write in a turn and every
 * corked socket is uncorked once the turn's synchronous work and microtasks
 * are done, so all the frames one socket gets in a turn leave in one writev.
 * A burst of publications then costs one system call per socket, not one per
 * message per socket.
 */
export class CorkBatch {
  private corked: Corkable[] = [];
  private scheduled = false;

  /** `holder` has just corked its socket. */
  add(holder: Corkable): void {
    this.corked.push(holder);
    if (!this.scheduled) {
      this.scheduled = true;
      process.nextTick(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    const corked = this.corked;
    this.corked = [];
    for (let i = 0; i < corked.length; i++) (corked[i] as Corkable).uncork();
  };
}
