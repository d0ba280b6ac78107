/**
 * Results: the shapes kept in results.json, the Markdown tables and the SVG
 * chart (drawn by hand: log-scale offered rate against log-scale latency).
 */
import { type KeyKind, SERVER_LABEL, type ServerKind } from './common.ts';

export interface StepResult {
  offered: number;
  achieved: number;
  skipped: number;
  deliveries: number;
  deliveriesPerSec: number;
  expected: number;
  distinct: number;
  lost: number;
  duplicates: number;
  reordered: number;
  foreign: number;
  unexpectedCloses: number;
  closeCodes: Record<string, number>;
  publishErrors: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  meanMs: number;
  bytesPerDelivery: number;
  serverCpuPct: number;
  /** Share of the server's CPU spent in the kernel (system time): mostly the socket writes. */
  serverKernelShare: number;
  serverUsPerDelivery: number;
  clientCpuPct: number;
  clientUsPerDelivery: number;
  clientSaturated: boolean;
  serverSaturated: boolean;
  /** Nothing lost, duplicated, reordered, misrouted or closed. */
  valid: boolean;
  /** Valid, p99 ≤ the bound, and at least 95 % of the offered rate sent. */
  held: boolean;
  reason: string;
}

export interface LadderServerResult {
  server: ServerKind;
  connectMs: number;
  connections: number;
  steps: StepResult[];
  /** The highest step held, if any. */
  best: StepResult | undefined;
  /** A duplicate, reordering or misrouting anywhere (never acceptable, even overloaded). */
  invalid: boolean;
  error?: string;
}

export interface LadderResult {
  name: string;
  title: string;
  description: string;
  latencyBoundMs: number;
  results: LadderServerResult[];
  /**
   * Cross-instance only: Parley on one instance on the same PostgreSQL, without
   * Redis, at the rates its two instances held, so the two differ only by
   * the cross-instance path.
   */
  reference?: { label: string; result: LadderServerResult } | undefined;
}

export interface IdlePoint {
  connections: number;
  rssMiB: number;
  connectPerSec: number;
  errors: number;
  firstError?: string | undefined;
  idleCpuPct: number;
  /** Server CPU time spent per connection while connecting (handshake, auth, join). */
  serverUsPerConnect: number;
  connectServerCpuPct: number;
  /** All load generators together; they share one core when pinned. */
  connectClientCpuPct: number;
}

export interface IdleServerResult {
  server: ServerKind;
  baseRssMiB: number;
  points: IdlePoint[];
  bytesPerConnection: number;
  extrapolated50kMiB: number;
  /** After a full GC forced through the inspector, against the same before connecting. */
  afterGc?: { heapBytesPerConnection: number; rssBytesPerConnection: number } | undefined;
  /** Parley only: its heartbeat measured at a short interval and scaled to 100,000 connections at 25 s. */
  heartbeat?: HeartbeatCost;
  error?: string;
}

export interface HeartbeatCost {
  intervalMs: number;
  connections: number;
  seconds: number;
  cpuPct: number;
  /** Server CPU per ping sent and pong received. */
  usPerPing: number;
  /** Of that CPU, the share that was system time (stime). */
  kernelShare: number;
  /** usPerPing × 100,000 / 25 s, as a share of one core. */
  at100kPct: number;
}

export interface IdleResult {
  name: 'idle';
  title: string;
  description: string;
  results: IdleServerResult[];
}

export interface PersistResult {
  store: 'sqlite' | 'postgres';
  /** The idempotency keys the publishes carried (the SDK always sends one). */
  keys: KeyKind;
  acked: number;
  errors: number;
  firstError?: string | undefined;
  seconds: number;
  storedPerSec: number;
  countInStore: number;
  verified: boolean;
  ackP50: number;
  ackP99: number;
  serverUsPerMessage: number;
  serverCpuPct: number;
  /** SQLite: the largest size of its write-ahead log file seen during the run (sampled every 50 ms). */
  largestLogMiB?: number | undefined;
  error?: string;
}

export interface PersistScenario {
  name: 'persist';
  title: string;
  description: string;
  results: PersistResult[];
}

// ── formatting ─────────────────────────────────────────────────────────────

export function fmt(value: number | undefined, digits = 0): string {
  if (value === undefined || !Number.isFinite(value)) return '–';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function ms(value: number | undefined): string {
  if (value === undefined) return '–';
  return value < 10 ? fmt(value, 2) : value < 100 ? fmt(value, 1) : fmt(value, 0);
}

function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return '–';
  return `${fmt(a / b, 2)}×`;
}

function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map((_, i) => (i === 0 ? '---' : '---:'))), ...rows.map(line)].join('\n');
}

const ORDER: ServerKind[] = ['parley', 'ws', 'socketio'];

function byServer<T extends { server: ServerKind }>(results: T[]): Array<T | undefined> {
  return ORDER.map((kind) => results.find((r) => r.server === kind));
}

/** Metric rows with one column per server and the two ratios. */
function comparison(rows: Array<[string, Array<number | undefined>, (v: number | undefined) => string]>): string {
  const header = ['', ...ORDER.map((k) => SERVER_LABEL[k]), 'Parley/ws-baseline', 'Parley/Socket.IO'];
  return table(
    header,
    rows.map(([label, values, show]) => [
      label,
      ...values.map(show),
      ratio(values[0], values[1]),
      ratio(values[0], values[2]),
    ]),
  );
}

export function stepCheck(step: StepResult): string {
  const parts: string[] = [];
  if (step.lost) parts.push(`lost ${fmt(step.lost)}`);
  if (step.duplicates) parts.push(`dup ${fmt(step.duplicates)}`);
  if (step.reordered) parts.push(`reordered ${fmt(step.reordered)}`);
  if (step.foreign) parts.push(`misrouted ${fmt(step.foreign)}`);
  if (step.unexpectedCloses) parts.push(`closed ${step.unexpectedCloses} (${JSON.stringify(step.closeCodes)})`);
  if (step.publishErrors) parts.push(`publish errors ${step.publishErrors}`);
  return parts.length === 0 ? 'ok' : `INVALID: ${parts.join(', ')}`;
}

/** Which core ran out at the step that was not held. */
export function limitedBy(step: StepResult): string {
  const server = `server ${fmt(step.serverCpuPct)} %`;
  const client = `load generator ${fmt(step.clientCpuPct)} %`;
  if (step.clientSaturated && !step.serverSaturated)
    return `${client} (saturated), ${server}: the generator, not the server, ran out first, so this server's figure is a lower bound`;
  if (step.serverSaturated && !step.clientSaturated) return `${server} (saturated), ${client}: the server ran out`;
  if (step.serverSaturated && step.clientSaturated) return `${server} and ${client}: both cores ran out`;
  return `${server}, ${client}: neither core saturated (waiting on something else: store, Redis, scheduling)`;
}

function cpuNote(step: StepResult): string {
  return `${fmt(step.clientCpuPct)} %${step.clientSaturated ? ' **saturated**' : ''}`;
}

// ── ladders ────────────────────────────────────────────────────────────────

/**
 * The cross-instance target's own comparison: Parley's two instances against
 * one at the same offered load, on the same store (the reference ladder) and
 * on the embedded SQLite (the fan-out ladder of the same run).
 */
function sameLoadMarkdown(scenario: LadderResult, sqlite: LadderServerResult | undefined): string[] {
  const cross = scenario.results.find((r) => r.server === 'parley');
  const reference = scenario.reference;
  if (!cross || !reference) return [];
  const stepAt = (r: LadderServerResult | undefined, rate: number) => r?.steps.find((s) => s.offered === rate);
  const diff = (a: StepResult | undefined, b: StepResult | undefined) =>
    a && b ? `${a.p99 >= b.p99 ? '+' : '−'}${fmt(Math.abs(a.p99 - b.p99), 2)}` : '–';
  const rows = cross.steps
    .filter((s) => s.held)
    .map((s) => {
      const pg = stepAt(reference.result, s.offered);
      const lite = stepAt(sqlite, s.offered);
      return [
        fmt(s.offered),
        ms(s.p50),
        ms(s.p99),
        ms(pg?.p50),
        ms(pg?.p99),
        diff(s, pg),
        ms(lite?.p50),
        ms(lite?.p99),
        diff(s, lite),
      ];
    });
  if (rows.length === 0) return [];
  return [
    `Parley's two instances against one at the same load (the target: p99 within 2 ms of one instance). ${reference.label}: the same 1,000 connections and publishers on one instance on a PostgreSQL database of its own, without Redis, so that what differs is the cross-instance path alone; one instance on SQLite: the fan-out ladder above (the embedded default, which syncs nothing at commit; PostgreSQL waits for its log to reach the disk).`,
    '',
    table(
      [
        'offered/s',
        '2 instances p50 ms',
        'p99 ms',
        '1 on PostgreSQL p50',
        'p99',
        'p99 difference',
        '1 on SQLite p50',
        'p99',
        'p99 difference',
      ],
      rows,
    ),
    '',
  ];
}

export function ladderMarkdown(scenario: LadderResult, sameLoadSqlite?: LadderServerResult): string {
  const latencyBoundMs = scenario.latencyBoundMs;
  const servers = byServer(scenario.results);
  const best = servers.map((r) => r?.best);
  // The highest offered rate every server held: the like-for-like comparison.
  const heldBy = servers.map((r) => new Set((r?.steps ?? []).filter((s) => s.held).map((s) => s.offered)));
  const common = (servers.find((r) => r)?.steps ?? [])
    .map((s) => s.offered)
    .filter((rate) => heldBy.every((set, i) => servers[i] === undefined || set.has(rate)))
    .pop();
  const at = (i: number) => (common === undefined ? undefined : servers[i]?.steps.find((s) => s.offered === common));
  const lines: string[] = [`### ${scenario.title}`, '', scenario.description, ''];
  const rows: Array<[string, Array<number | undefined>, (v: number | undefined) => string]> = [
    ['highest rate held (msgs/s)', best.map((b) => b?.offered), (v) => fmt(v)],
    ['deliveries/s at that rate', best.map((b) => b?.deliveriesPerSec), (v) => fmt(v)],
    ['p50 latency (ms)', best.map((b) => b?.p50), ms],
    ['p95 latency (ms)', best.map((b) => b?.p95), ms],
    ['p99 latency (ms)', best.map((b) => b?.p99), ms],
    ['max latency (ms)', best.map((b) => b?.max), ms],
    ['server CPU µs/delivery', best.map((b) => b?.serverUsPerDelivery), (v) => fmt(v, 2)],
    ['server CPU %', best.map((b) => b?.serverCpuPct), (v) => fmt(v)],
    ['load-generator CPU %', best.map((b) => b?.clientCpuPct), (v) => fmt(v)],
    ['bytes per delivery (frame payload)', best.map((b) => b?.bytesPerDelivery), (v) => fmt(v)],
  ];
  if (common !== undefined) {
    rows.push(
      [
        `at ${fmt(common)} msgs/s (held by all): server µs/delivery`,
        [0, 1, 2].map((i) => at(i)?.serverUsPerDelivery),
        (v) => fmt(v, 2),
      ],
      [`at ${fmt(common)} msgs/s: p99 (ms)`, [0, 1, 2].map((i) => at(i)?.p99), ms],
    );
  }
  lines.push(comparison(rows), '');
  const notes: string[] = [];
  for (const r of scenario.results) {
    if (r.error) notes.push(`${SERVER_LABEL[r.server]}: **failed**: ${r.error}`);
    if (r.invalid) notes.push(`${SERVER_LABEL[r.server]}: **INVALID** (duplicated, reordered or misrouted deliveries)`);
    if (!r.best && !r.error) notes.push(`${SERVER_LABEL[r.server]}: held no step`);
    if (r.best?.clientSaturated)
      notes.push(`${SERVER_LABEL[r.server]}: the load generator saturated its core at the reported step`);
    const stop = r.steps.find((s) => !s.held);
    if (stop)
      notes.push(`${SERVER_LABEL[r.server]}: stopped at ${fmt(stop.offered)}/s (${stop.reason}); ${limitedBy(stop)}`);
    else if (r.steps.length > 0 && !r.error) notes.push(`${SERVER_LABEL[r.server]}: held every step run`);
  }
  if (notes.length > 0) lines.push(...notes.map((n) => `- ${n}`), '');
  lines.push(...sameLoadMarkdown(scenario, sameLoadSqlite));
  const reference = scenario.reference;
  const labelled: Array<{ label: string; result: LadderServerResult }> = [
    ...scenario.results.map((result) => ({ label: SERVER_LABEL[result.server], result })),
    ...(reference ? [reference] : []),
  ];
  lines.push(
    `<details><summary>every step (a step is held when nothing is lost, duplicated or reordered, p99 ≤ ${latencyBoundMs} ms and ≥ 95 % of the offered rate was sent)</summary>`,
    '',
    table(
      [
        'server',
        'offered/s',
        'sent/s',
        'deliveries/s',
        'p50 ms',
        'p95 ms',
        'p99 ms',
        'max ms',
        'server µs/deliv',
        'server CPU',
        'of it kernel',
        'client µs/deliv',
        'client CPU',
        'check',
        'held',
      ],
      labelled.flatMap(({ label, result }) =>
        result.steps.map((s) => [
          label,
          fmt(s.offered),
          fmt(s.achieved),
          fmt(s.deliveriesPerSec),
          ms(s.p50),
          ms(s.p95),
          ms(s.p99),
          ms(s.max),
          fmt(s.serverUsPerDelivery, 2),
          `${fmt(s.serverCpuPct)} %`,
          `${fmt(s.serverKernelShare * 100)} %`,
          fmt(s.clientUsPerDelivery, 2),
          cpuNote(s),
          stepCheck(s),
          s.held ? 'yes' : `no: ${s.reason}`,
        ]),
      ),
    ),
    '',
    '</details>',
    '',
  );
  return lines.join('\n');
}

// ── idle ───────────────────────────────────────────────────────────────────

export function idleMarkdown(scenario: IdleResult): string {
  const servers = byServer(scenario.results);
  const counts = [...new Set(scenario.results.flatMap((r) => r.points.map((p) => p.connections)))].sort(
    (a, b) => a - b,
  );
  const rows: Array<[string, Array<number | undefined>, (v: number | undefined) => string]> = [
    ['RSS before connecting (MiB)', servers.map((r) => r?.baseRssMiB), (v) => fmt(v, 1)],
  ];
  for (const n of counts) {
    rows.push([
      `RSS with ${fmt(n)} connections (MiB)`,
      servers.map((r) => r?.points.find((p) => p.connections === n)?.rssMiB),
      (v) => fmt(v, 1),
    ]);
  }
  rows.push(
    [
      'server memory per connection (KiB)',
      servers.map((r) => (r ? r.bytesPerConnection / 1024 : undefined)),
      (v) => fmt(v, 1),
    ],
    ['50,000 connections, extrapolated (MiB)', servers.map((r) => r?.extrapolated50kMiB), (v) => fmt(v, 0)],
    [
      'live heap per connection after a full GC (KiB)',
      servers.map((r) => (r?.afterGc ? r.afterGc.heapBytesPerConnection / 1024 : undefined)),
      (v) => fmt(v, 2),
    ],
    [
      'RSS per connection after a full GC (KiB)',
      servers.map((r) => (r?.afterGc ? r.afterGc.rssBytesPerConnection / 1024 : undefined)),
      (v) => fmt(v, 2),
    ],
  );
  for (const n of counts) {
    rows.push([
      `connect rate up to ${fmt(n)} (conn/s)`,
      servers.map((r) => r?.points.find((p) => p.connections === n)?.connectPerSec),
      (v) => fmt(v),
    ]);
  }
  for (const n of counts) {
    rows.push([
      `server CPU per connect up to ${fmt(n)} (µs)`,
      servers.map((r) => r?.points.find((p) => p.connections === n)?.serverUsPerConnect),
      (v) => fmt(v),
    ]);
    rows.push([
      `server CPU while connecting up to ${fmt(n)} (%)`,
      servers.map((r) => r?.points.find((p) => p.connections === n)?.connectServerCpuPct),
      (v) => fmt(v),
    ]);
    rows.push([
      `load-generator CPU while connecting up to ${fmt(n)} (%)`,
      servers.map((r) => r?.points.find((p) => p.connections === n)?.connectClientCpuPct),
      (v) => fmt(v),
    ]);
  }
  const last = counts.at(-1);
  if (last !== undefined)
    rows.push([
      `server CPU idle at ${fmt(last)} (%)`,
      servers.map((r) => r?.points.find((p) => p.connections === last)?.idleCpuPct),
      (v) => fmt(v, 1),
    ]);
  const lines = [`### ${scenario.title}`, '', scenario.description, '', comparison(rows), ''];
  for (const r of scenario.results) {
    const h = r.heartbeat;
    if (h)
      lines.push(
        `- ${SERVER_LABEL[r.server]} heartbeats: with HEARTBEAT_MS=${fmt(h.intervalMs)} and ${fmt(h.connections)} connections the server used ${fmt(h.cpuPct, 1)} % of a core over ${fmt(h.seconds)} s, ${fmt(h.usPerPing, 2)} µs per ping and pong (${fmt(h.kernelShare * 100)} % of it in the kernel); **100,000 connections at the default 25 s: ${fmt(h.at100kPct, 2)} % of a core** (extrapolated: one process holds under 20,000 sockets here).`,
      );
    if (r.error) lines.push(`- ${SERVER_LABEL[r.server]}: **failed**: ${r.error}`);
    for (const p of r.points)
      if (p.errors)
        lines.push(`- ${SERVER_LABEL[r.server]}: ${p.errors} connect errors up to ${p.connections} (${p.firstError})`);
  }
  lines.push('');
  return lines.join('\n');
}

// ── persisted ──────────────────────────────────────────────────────────────

const KEY_LABEL: Record<KeyKind, string> = {
  none: '',
  sdk: ', with the SDK’s keys (UUID v7)',
  uuid4: ', with random keys (UUID v4)',
};

export function persistMarkdown(scenario: PersistScenario): string {
  const rows = scenario.results.map((r) => [
    `${r.store === 'sqlite' ? 'SQLite' : 'PostgreSQL'}${KEY_LABEL[r.keys]}`,
    r.error ? `failed: ${r.error}` : fmt(r.storedPerSec),
    fmt(r.acked),
    fmt(r.countInStore),
    r.verified ? 'yes' : '**NO**',
    ms(r.ackP50),
    ms(r.ackP99),
    fmt(r.serverUsPerMessage, 1),
    `${fmt(r.serverCpuPct)} %`,
    r.largestLogMiB === undefined ? '–' : fmt(r.largestLogMiB),
    r.errors ? `${r.errors} (${r.firstError})` : '0',
  ]);
  return [
    `### ${scenario.title}`,
    '',
    scenario.description,
    '',
    table(
      [
        'store',
        'stored msgs/s',
        'acknowledged',
        'rows in store',
        'count verified',
        'ack p50 ms',
        'ack p99 ms',
        'server CPU µs/msg',
        'server CPU',
        'largest log MiB',
        'errors',
      ],
      rows,
    ),
    '',
  ].join('\n');
}

// ── chart ──────────────────────────────────────────────────────────────────

const COLORS: Record<ServerKind, string> = { parley: '#d9480f', ws: '#1971c2', socketio: '#2f9e44' };

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** p50 (solid) and p99 (dashed) against offered rate, both axes logarithmic; a failed step is a cross. */
export function latencySvg(scenario: LadderResult): string {
  const latencyBoundMs = scenario.latencyBoundMs;
  const width = 760;
  const height = 460;
  const left = 70;
  const right = 180;
  const top = 40;
  const bottom = 60;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const steps = scenario.results.flatMap((r) => r.steps);
  const rates = steps.map((s) => s.offered);
  const xMin = Math.min(...rates, 100);
  const xMax = Math.max(...rates, xMin * 10);
  const lat = steps.flatMap((s) => [s.p50, s.p99]).filter((v) => v > 0);
  const yMin = 10 ** Math.floor(Math.log10(Math.max(0.01, Math.min(...lat, 1))));
  const yMax = 10 ** Math.ceil(Math.log10(Math.max(...lat, latencyBoundMs * 2)));
  const x = (v: number) => left + ((Math.log10(v) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin))) * plotW;
  const y = (v: number) =>
    top + plotH - ((Math.log10(Math.max(v, yMin)) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin))) * plotH;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    // The accessible name (and what Biome's a11y lint asks of every SVG in the tree).
    `<title>${escapeXml(scenario.title)}: p50 and p99 latency against offered load, per server</title>`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${left}" y="22" font-size="15" font-weight="bold">${escapeXml(scenario.title)}: latency against offered load</text>`,
  ];
  for (let decade = Math.log10(yMin); decade <= Math.log10(yMax); decade++) {
    const v = 10 ** decade;
    out.push(
      `<line x1="${left}" x2="${left + plotW}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e9ecef"/>`,
      `<text x="${left - 8}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${v >= 1 ? fmt(v) : v}</text>`,
    );
  }
  const ticks = [...new Set(rates)].sort((a, b) => a - b);
  for (const v of ticks) {
    out.push(
      `<line x1="${x(v).toFixed(1)}" x2="${x(v).toFixed(1)}" y1="${top}" y2="${top + plotH}" stroke="#f1f3f5"/>`,
      `<text x="${x(v).toFixed(1)}" y="${top + plotH + 18}" text-anchor="middle">${v >= 1000 ? `${v / 1000}k` : v}</text>`,
    );
  }
  out.push(
    `<rect x="${left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="#868e96"/>`,
    `<line x1="${left}" x2="${left + plotW}" y1="${y(latencyBoundMs).toFixed(1)}" y2="${y(latencyBoundMs).toFixed(1)}" stroke="#c92a2a" stroke-dasharray="2 4"/>`,
    `<text x="${left + plotW - 4}" y="${(y(latencyBoundMs) - 5).toFixed(1)}" text-anchor="end" fill="#c92a2a">p99 bound ${latencyBoundMs} ms</text>`,
    `<text x="${left + plotW / 2}" y="${height - 18}" text-anchor="middle">offered publish rate (messages/s, log scale)</text>`,
    `<text transform="translate(18 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">latency (ms, log scale)</text>`,
  );
  let legendY = top + 10;
  for (const result of byServer(scenario.results)) {
    if (!result || result.steps.length === 0) continue;
    const color = COLORS[result.server];
    for (const [key, dash] of [
      ['p50', ''],
      ['p99', ' stroke-dasharray="6 4"'],
    ] as const) {
      const points = result.steps.map((s) => `${x(s.offered).toFixed(1)},${y(s[key]).toFixed(1)}`).join(' ');
      out.push(`<polyline points="${points}" fill="none" stroke="${color}" stroke-width="2"${dash}/>`);
      for (const s of result.steps) {
        const cx = x(s.offered);
        const cy = y(s[key]);
        out.push(
          s.held
            ? `<circle cx="${cx.toFixed(1)}" cy="${cy.toFixed(1)}" r="3" fill="${color}"/>`
            : `<path d="M${(cx - 4).toFixed(1)} ${(cy - 4).toFixed(1)}l8 8m0 -8l-8 8" stroke="${color}" stroke-width="2"/>`,
        );
      }
      out.push(
        `<line x1="${left + plotW + 14}" x2="${left + plotW + 40}" y1="${legendY}" y2="${legendY}" stroke="${color}" stroke-width="2"${dash}/>`,
        `<text x="${left + plotW + 46}" y="${legendY + 4}">${escapeXml(SERVER_LABEL[result.server])} ${key}</text>`,
      );
      legendY += 20;
    }
  }
  out.push(`<text x="${left + plotW + 14}" y="${legendY + 10}" fill="#495057">× = step not held</text>`, '</svg>', '');
  return out.join('\n');
}
