/**
 * The SQLite checkpointer's thread (see checkpointer.ts): its own connection
 * to the file and a PASSIVE checkpoint every `everyMs`. Once a pass finds the
 * log at `limitPages` or more it asks the main thread to hold its commits
 * ('drain'), copies what is left while nothing is added ('held'), and says so
 * ('drained'), so that the next commit starts the log again from its
 * beginning. 'stop' closes the connection.
 * Plain JavaScript: a worker thread does not get the tsx loader of the main one.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import BetterSqlite3 from 'better-sqlite3';

const { path, everyMs, limitBytes } = workerData;
const sqlite = new BetterSqlite3(path);
sqlite.pragma('busy_timeout = 5000');
const limitPages = Math.ceil(limitBytes / sqlite.pragma('page_size', { simple: true }));
// This connection writes nothing; its own automatic checkpoints stay off too.
sqlite.pragma('wal_autocheckpoint = 0');

/** PASSIVE copies what no reader still needs and never waits for the writer; what it leaves is taken next time. */
function checkpoint() {
  try {
    const [result] = sqlite.pragma('wal_checkpoint(PASSIVE)');
    return result;
  } catch {
    // Busy (another process's checkpoint): the next pass tries again.
    return undefined;
  }
}

/** The longest pause between two holds that did not restart the log. */
const MAX_BACKOFF_MS = 30_000;

/**
 * The log header's checkpoint sequence number (bytes 12-15, big-endian), which
 * SQLite increments each time it starts the log again; undefined if unreadable.
 */
function logSequence() {
  const header = Buffer.alloc(4);
  let fd;
  try {
    fd = openSync(`${path}-wal`, 'r');
    return readSync(fd, header, 0, 4, 12) === 4 ? header.readUInt32BE(0) : undefined;
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

let draining = false;
/** After a hold, until a later pass tells whether the log restarted: its length then, and its sequence. */
let afterHold;
let backoffMs = 0;
let nextDrainAt = 0;

const timer = setInterval(() => {
  if (draining) return;
  const result = checkpoint();
  if (result === undefined) return;
  if (afterHold !== undefined) {
    // A log that restarted has a new sequence. One that grew on without was held for nothing: a
    // reader of another connection still needs its frames, or another process writes to it.
    // Holding again at every pass would delay every commit for as long as that lasts, so back off.
    const sequence = logSequence();
    if (sequence !== afterHold.sequence) {
      backoffMs = 0;
      afterHold = undefined;
    } else if (result.log > afterHold.log) {
      backoffMs = Math.min(Math.max(backoffMs * 2, 1000), MAX_BACKOFF_MS);
      nextDrainAt = Date.now() + backoffMs;
      afterHold = undefined;
    }
    // Otherwise nothing was committed since: no verdict yet.
  }
  if (afterHold !== undefined || result.log < limitPages || Date.now() < nextDrainAt) return;
  // What the commits added during this pass is copied now, while they go on:
  // the main thread then holds them only for what arrives during the next one.
  checkpoint();
  draining = true;
  parentPort?.postMessage('drain');
}, everyMs);

parentPort?.on('message', (message) => {
  if (message === 'held') {
    afterHold = { log: checkpoint()?.log ?? 0, sequence: logSequence() };
    draining = false;
    parentPort?.postMessage('drained');
    return;
  }
  if (message !== 'stop') return;
  clearInterval(timer);
  sqlite.close();
  parentPort?.close();
});
