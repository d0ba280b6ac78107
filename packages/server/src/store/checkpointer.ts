import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';

/** How often the checkpointer copies the write-ahead log into the database file. */
export const CHECKPOINT_INTERVAL_MS = 250;

/** The log's size past which the checkpointer has the commits held while it empties it. */
export const LOG_LIMIT_BYTES = 64 * 1024 * 1024;

/** The longest the commits are held for the checkpointer: past it they go on, and the log restarts later. */
export const HOLD_LIMIT_MS = 200;

/** What SQLite's automatic checkpoint is, in pages of log, when the checkpointer is not running. */
const AUTOCHECKPOINT_PAGES = 1000;

interface Pragmas {
  pragma(source: string): unknown;
}

/** The writer whose commits the checkpointer may hold for a moment (the message store's group commit). */
export interface HeldWrites {
  holdWrites(): void;
  resumeWrites(): void;
}

export interface CheckpointerOptions {
  log?: Logger | undefined;
  writes?: HeldWrites | undefined;
  everyMs?: number;
  limitBytes?: number;
  holdLimitMs?: number;
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
 *
 * SQLite starts the log again from its beginning only when a commit finds
 * every frame already copied. Under commits that follow each other with no
 * pause a PASSIVE pass never gets there, and the log grew by hundreds of MB a
 * second (benchmarks.md, Profiles). So once it passes LOG_LIMIT_BYTES the
 * worker asks for the commits to be held, which only delays them (appends
 * queue meanwhile: the event loop never waits on a lock), copies the few
 * frames that are left, and lets them go; `journal_size_limit` then gives the
 * space back.
 */
export class SqliteCheckpointer {
  private readonly worker: Worker;
  private readonly exited: Promise<void>;
  private readonly log: Logger | undefined;
  private readonly writes: HeldWrites | undefined;
  private readonly holdLimitMs: number;
  private holdTimer: NodeJS.Timeout | undefined;
  private heldAt = 0;
  private stopping = false;
  /** How many times the commits were held, and for how long in all: for tests and probes. */
  readonly holds = { count: 0, totalMs: 0, maxMs: 0 };

  constructor(
    private readonly main: Pragmas,
    path: string,
    options: CheckpointerOptions = {},
  ) {
    this.log = options.log;
    this.writes = options.writes;
    this.holdLimitMs = options.holdLimitMs ?? HOLD_LIMIT_MS;
    const limitBytes = options.limitBytes ?? LOG_LIMIT_BYTES;
    main.pragma('wal_autocheckpoint = 0');
    main.pragma(`journal_size_limit = ${limitBytes}`);
    this.worker = new Worker(new URL('./checkpoint-worker.mjs', import.meta.url), {
      // Without a writer to hold the worker never asks.
      workerData: {
        path,
        everyMs: options.everyMs ?? CHECKPOINT_INTERVAL_MS,
        limitBytes: this.writes ? limitBytes : Infinity,
      },
    });
    // A checkpointer alone does not keep the process alive.
    this.worker.unref();
    // A worker that fails emits 'error' and then 'exit'; without this listener the error would be thrown here.
    this.worker.on('error', (error) => {
      this.log?.warn({ err: error }, 'the SQLite checkpointer failed: checkpoints are automatic again');
    });
    this.worker.on('message', (message: unknown) => {
      if (message === 'drain') this.hold();
      else if (message === 'drained') this.release();
    });
    this.exited = new Promise((resolve) => {
      this.worker.once('exit', () => {
        this.release();
        this.fallBack();
        resolve();
      });
    });
  }

  /** Stops the worker, before the main connection closes (which checkpoints one last time). */
  async stop(): Promise<void> {
    this.stopping = true;
    this.release();
    // Referenced again, so that the process waits for the worker to close its connection.
    this.worker.ref();
    this.worker.postMessage('stop');
    await this.exited;
  }

  private hold(): void {
    if (this.stopping || this.holdTimer || !this.writes) return;
    this.writes.holdWrites();
    this.heldAt = performance.now();
    this.holdTimer = setTimeout(() => this.release(), this.holdLimitMs);
    // This runs between two commits (better-sqlite3 is synchronous), so from here no frame is added.
    this.worker.postMessage('held');
  }

  private release(): void {
    if (!this.holdTimer) return;
    clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
    const heldMs = performance.now() - this.heldAt;
    this.holds.count++;
    this.holds.totalMs += heldMs;
    if (heldMs > this.holds.maxMs) this.holds.maxMs = heldMs;
    this.log?.debug({ heldMs: Math.round(heldMs * 10) / 10 }, 'commits held while the checkpointer emptied the log');
    this.writes?.resumeWrites();
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
