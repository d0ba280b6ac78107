import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';

/** How often the checkpointer copies the write-ahead log into the database file. */
export const CHECKPOINT_INTERVAL_MS = 250;

/** What SQLite's automatic checkpoint is, in pages of log, when the checkpointer is not running. */
const AUTOCHECKPOINT_PAGES = 1000;

interface Pragmas {
  pragma(source: string): unknown;
}

/**
 * Moves SQLite's checkpoints off the event loop. Left automatic, a
 * checkpoint runs inside the commit that crosses 1,000 pages of log and syncs
 * the file there: a stall of 2–5 ms every few hundred commits, on the thread
 * that delivers messages (benchmarks.md: about half the fan-out p99 at
 * moderate load). Here the main connection's automatic checkpoints are off
 * and a worker thread on its own connection runs a PASSIVE checkpoint every
 * CHECKPOINT_INTERVAL_MS; WAL mode lets it run beside the writer. Should the
 * worker fail, the automatic checkpoints come back on.
 */
export class SqliteCheckpointer {
  private readonly worker: Worker;
  private readonly exited: Promise<void>;
  private stopping = false;

  constructor(
    private readonly main: Pragmas,
    path: string,
    log?: Logger,
    everyMs = CHECKPOINT_INTERVAL_MS,
  ) {
    main.pragma('wal_autocheckpoint = 0');
    this.worker = new Worker(new URL('./checkpoint-worker.mjs', import.meta.url), { workerData: { path, everyMs } });
    // A checkpointer alone does not keep the process alive.
    this.worker.unref();
    // A worker that fails emits 'error' and then 'exit'; without this listener the error would be thrown here.
    this.worker.on('error', (error) => {
      log?.warn({ err: error }, 'the SQLite checkpointer failed: checkpoints are automatic again');
    });
    this.exited = new Promise((resolve) => {
      this.worker.once('exit', () => {
        this.fallBack();
        resolve();
      });
    });
  }

  /** Stops the worker, before the main connection closes (which checkpoints one last time). */
  async stop(): Promise<void> {
    this.stopping = true;
    // Referenced again, so that the process waits for the worker to close its connection.
    this.worker.ref();
    this.worker.postMessage('stop');
    await this.exited;
  }

  private fallBack(): void {
    if (this.stopping) return;
    try {
      this.main.pragma(`wal_autocheckpoint = ${AUTOCHECKPOINT_PAGES}`);
    } catch {
      // The connection is closed: nothing left to checkpoint.
    }
  }
}
