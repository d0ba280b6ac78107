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

/** Something holding writes of this turn back, to write them when the turn is over. */
export interface TurnWriter {
  endTurn(): void;
}

/**
 * Coalesces writes: the frames one socket gets in a turn are held until the
 * turn's synchronous work and microtasks are done, then leave together. A
 * burst of publications then costs one system call per socket, not one per
 * message per socket. The holding is the writer's (Connection.writeRaw): a
 * lone frame is written as it is, several go through a corked socket into one
 * writev.
 */
export class EndOfTurn {
  private writers: TurnWriter[] = [];
  private scheduled = false;

  /** `writer` holds writes of this turn. */
  add(writer: TurnWriter): void {
    this.writers.push(writer);
    if (!this.scheduled) {
      this.scheduled = true;
      process.nextTick(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    const writers = this.writers;
    this.writers = [];
    for (let i = 0; i < writers.length; i++) (writers[i] as TurnWriter).endTurn();
  };
}
