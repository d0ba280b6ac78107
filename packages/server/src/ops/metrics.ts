import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { AppContext } from '../app.ts';
import { ParleyError } from '../errors.ts';

/**
 * Counts kept as plain numbers on the hot paths (a frame, a delivery) and
 * turned into Prometheus metrics only when /metrics is scraped, so a
 * delivery costs an addition rather than a labelled-counter look-up.
 */
export class Stats {
  framesIn = 0;
  bytesIn = 0;
  framesOut = 0;
  bytesOut = 0;
  publishes = 0;
  deliveries = 0;
  rateLimited = 0;
  storeErrors = 0;
  brokerErrors = 0;
  gapFills = 0;
  readonly authFailures = new Map<string, number>();
  readonly closes = new Map<number, number>();

  authFailed(reason: 'invalid' | 'expired' | 'timeout' | 'protocol'): void {
    this.authFailures.set(reason, (this.authFailures.get(reason) ?? 0) + 1);
  }

  closed(code: number): void {
    this.closes.set(code, (this.closes.get(code) ?? 0) + 1);
  }
}

/** A counter whose value is read from a plain number at scrape time. */
function mirrored(registry: Registry, name: string, help: string, read: () => number): void {
  let reported = 0;
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      const value = read();
      if (value > reported) this.inc(value - reported);
      reported = value;
    },
  });
}

function mirroredByLabel<K extends string | number>(
  registry: Registry,
  name: string,
  help: string,
  label: string,
  read: () => Map<K, number>,
): void {
  const reported = new Map<K, number>();
  new Counter({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect() {
      for (const [key, value] of read()) {
        const before = reported.get(key) ?? 0;
        if (value > before) this.inc({ [label]: String(key) }, value - before);
        reported.set(key, value);
      }
    },
  });
}

export class Metrics {
  readonly registry = new Registry();
  readonly stats = new Stats();
  /**
   * Seconds from the start of a publish (before the store append, so store and
   * broker time included) to its fan-out on this instance; once per message
   * per instance, not per socket.
   */
  readonly deliveryLatency: Histogram;
  /** Seconds a publish waited for the store. */
  readonly storeLatency: Histogram;
  /** Seconds a broker publish took. */
  readonly brokerLatency: Histogram;

  constructor(
    instance: string,
    gauges: { connections(): number; subscriptions(): number; channels(): number },
    /** SQLite on a file: the checkpointer, whose holds of the group commit are counted. */
    checkpointer?: { readonly holds: { readonly count: number; readonly totalMs: number } },
  ) {
    const registry = this.registry;
    registry.setDefaultLabels({ instance });
    // Process CPU and memory, GC, and nodejs_eventloop_lag_* (event-loop lag).
    collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 20 });
    const stats = this.stats;

    new Gauge({
      name: 'parley_connections',
      help: 'Open WebSocket connections',
      registers: [registry],
      collect() {
        this.set(gauges.connections());
      },
    });
    new Gauge({
      name: 'parley_subscriptions',
      help: 'Active channel subscriptions over all connections',
      registers: [registry],
      collect() {
        this.set(gauges.subscriptions());
      },
    });
    new Gauge({
      name: 'parley_channels',
      help: 'Channels with at least one local subscriber',
      registers: [registry],
      collect() {
        this.set(gauges.channels());
      },
    });
    mirrored(registry, 'parley_frames_in_total', 'WebSocket frames received', () => stats.framesIn);
    mirrored(registry, 'parley_bytes_in_total', 'WebSocket payload bytes received', () => stats.bytesIn);
    mirrored(registry, 'parley_frames_out_total', 'WebSocket frames sent', () => stats.framesOut);
    mirrored(registry, 'parley_bytes_out_total', 'WebSocket payload bytes sent', () => stats.bytesOut);
    mirrored(
      registry,
      'parley_publishes_total',
      'Messages stored (WebSocket, HTTP and server API)',
      () => stats.publishes,
    );
    mirrored(registry, 'parley_deliveries_total', 'Message pushes written to local sockets', () => stats.deliveries);
    mirrored(
      registry,
      'parley_rate_limited_total',
      'Frames refused by the per-connection rate limit',
      () => stats.rateLimited,
    );
    mirrored(registry, 'parley_store_errors_total', 'Store operations that failed', () => stats.storeErrors);
    mirrored(registry, 'parley_broker_errors_total', 'Broker publishes that failed', () => stats.brokerErrors);
    mirrored(registry, 'parley_gap_fills_total', 'Offset gaps filled from the store', () => stats.gapFills);
    mirroredByLabel(
      registry,
      'parley_auth_failures_total',
      'WebSocket authentication failures',
      'reason',
      () => stats.authFailures,
    );
    mirroredByLabel(registry, 'parley_closes_total', 'WebSocket closes by close code', 'code', () => stats.closes);
    if (checkpointer) {
      const { holds } = checkpointer;
      mirrored(
        registry,
        'parley_sqlite_log_holds_total',
        "Times the SQLite checkpointer held the store's commits to start its log again",
        () => holds.count,
      );
      mirrored(
        registry,
        'parley_sqlite_log_held_seconds_total',
        "Seconds the store's commits were held for the SQLite checkpointer",
        () => holds.totalMs / 1000,
      );
    }

    const buckets = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
    this.deliveryLatency = new Histogram({
      name: 'parley_delivery_latency_seconds',
      help: 'From the start of a publish (store and broker included) to its fan-out on this instance',
      buckets,
      registers: [registry],
    });
    this.storeLatency = new Histogram({
      name: 'parley_store_append_seconds',
      help: 'Time a publish waited for the store (group commit included)',
      buckets,
      registers: [registry],
    });
    this.brokerLatency = new Histogram({
      name: 'parley_broker_publish_seconds',
      help: 'Time a broker publish took',
      buckets,
      registers: [registry],
    });
  }
}

/** GET /metrics: Prometheus text; behind X-API-Key when SERVER_API_KEY is set. */
export function registerMetricsRoute(app: FastifyInstance, ctx: AppContext): void {
  const key = ctx.config.serverApiKey ? Buffer.from(ctx.config.serverApiKey) : undefined;
  const schema = {
    tags: ['operations'],
    summary: 'Prometheus metrics of this instance (text exposition format); X-API-Key when SERVER_API_KEY is set',
    ...(key ? { security: [{ apiKey: [] }] } : {}),
  };
  app.get('/metrics', { schema }, async (request, reply) => {
    if (key) {
      const given = request.headers['x-api-key'];
      const presented = Buffer.from(typeof given === 'string' ? given : '');
      if (presented.length !== key.length || !timingSafeEqual(presented, key)) {
        throw new ParleyError('unauthorized', 'metrics need the X-API-Key header');
      }
    }
    reply.type(ctx.metrics.registry.contentType);
    return ctx.metrics.registry.metrics();
  });
}
