/**
 * The SQLite checkpointer's thread (see checkpointer.ts): its own connection
 * to the file and a PASSIVE checkpoint every `everyMs`. Once a pass finds the
 * log at `limitPages` or more it asks the main thread to hold its commits
 * ('drain'), copies what is left while nothing is added ('held'), and says so
 * ('drained'), so that the next commit starts the log again from its
 * beginning. 'stop' closes the connection.
 * Plain JavaScript: a worker thread does not get the tsx loader of the main one.
 */
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

let draining = false;
const timer = setInterval(() => {
  if (draining) return;
  const result = checkpoint();
  if (result === undefined || result.log < limitPages) return;
  // What the commits added during this pass is copied now, while they go on:
  // the main thread then holds them only for what arrives during the next one.
  checkpoint();
  draining = true;
  parentPort?.postMessage('drain');
}, everyMs);

parentPort?.on('message', (message) => {
  if (message === 'held') {
    checkpoint();
    draining = false;
    parentPort?.postMessage('drained');
    return;
  }
  if (message !== 'stop') return;
  clearInterval(timer);
  sqlite.close();
  parentPort?.close();
});
