import type { Duplex } from 'node:stream';

/**
 * Records what reaches a socket's stream side: one entry per write, the
 * number of chunks in it (1 for a plain write, n for a writev of n). Every
 * write passes through `_write` or `_writev`, corked or not.
 */
export function recordWrites(socket: Duplex): number[] {
  const writes: number[] = [];
  const stream = socket as unknown as {
    _write(chunk: unknown, encoding: string, done: () => void): void;
    _writev(chunks: unknown[], done: () => void): void;
  };
  const write = stream._write.bind(socket);
  const writev = stream._writev.bind(socket);
  stream._write = (chunk, encoding, done) => {
    writes.push(1);
    write(chunk, encoding, done);
  };
  stream._writev = (chunks, done) => {
    writes.push(chunks.length);
    writev(chunks, done);
  };
  return writes;
}
