import { buildApp, createLogger } from './app.ts';
import { ConfigError, loadConfig } from './config.ts';

/**
 * After the drain, how long the rest of a shutdown may take (the 3 s close
 * grace, flushing the store, closing broker and presence) before the process
 * exits 1 anyway. docs/operations.md asks for a stop timeout above
 * SHUTDOWN_DRAIN_MS + this, so the process always ends by itself.
 */
const EXIT_AFTER_DRAIN_MS = 8000;

/** Reads the environment, starts one instance, and drains it on SIGTERM/SIGINT. */
async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`parley: ${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
  const log = createLogger(config);
  const parley = await buildApp(config, { log });
  const { url } = await parley.listen();
  log.info(
    { url, database: parley.ctx.database.kind, broker: parley.ctx.broker.name, presence: parley.ctx.presence.name },
    'parley is listening',
  );

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, drainMs: config.shutdownDrainMs }, 'shutting down: draining connections');
    // Whatever hangs, the process is gone a bounded time after the signal.
    setTimeout(() => {
      log.error('shutdown took too long: exiting');
      process.exit(1);
    }, config.shutdownDrainMs + EXIT_AFTER_DRAIN_MS).unref();
    parley.close().then(
      () => process.exit(0),
      (error) => {
        log.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((error) => {
  process.stderr.write(`parley: failed to start: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
