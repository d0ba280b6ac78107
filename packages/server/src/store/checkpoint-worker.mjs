/**
 * The SQLite checkpointer's thread (see checkpointer.ts): its own connection
 * to the file, a PASSIVE checkpoint every `everyMs`, closed on any message.
 * Plain JavaScript: a worker thread does not get the tsx loader of the main one.
 */
import { parentPort, workerData } from 'node:worker_threads';
import BetterSqlite3 from 'better-sqlite3';

const { path, everyMs } = workerData;
const sqlite = new BetterSqlite3(path);
sqlite.pragma('busy_timeout = 5000');
// This connection writes nothing; its own automatic checkpoints stay off too.
sqlite.pragma('wal_autocheckpoint = 0');

const timer = setInterval(() => {
  // PASSIVE copies what no reader still needs and never waits for the writer; what it leaves is taken next time.
  try {
    sqlite.pragma('wal_checkpoint(PASSIVE)');
  } catch {
    // Busy (another process's checkpoint): the next tick tries again.
  }
}, everyMs);

parentPort?.once('message', () => {
  clearInterval(timer);
  sqlite.close();
  parentPort?.close();
});
