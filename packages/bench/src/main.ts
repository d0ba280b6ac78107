/**
 * `npm run bench`: Parley against a minimal `ws` broadcast server and
 * Socket.IO 4, side by side, on this machine, with the same load generator.
 * It starts every server and load generator itself on loopback, runs bounded
 * scenarios, tears everything down and writes bench-results/<timestamp>/
 * (results.json, results.md, fanout-latency.svg and friends). See --help and
 * docs/benchmarks.md.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { TokenService } from '../../server/src/auth/tokens.ts';
import { createTestDatabase, type TestDatabase } from '../../server/test/support/postgres.ts';
import { cleanupRedisPrefix, REDIS_TEST_URL, uniqueRedisPrefix } from '../../server/test/support/redis.ts';
import {
  type ConnectionGroup,
  Histogram,
  nowUs,
  SERVER_KINDS,
  SERVER_LABEL,
  type ServerKind,
  type StatsReport,
  sleep,
} from './common.ts';
import {
  cpuSeconds,
  detectPinning,
  Loadgen,
  memoryAfterGc,
  type Pinning,
  profileParleyInto,
  repoRoot,
  rssBytes,
  type ServerProcess,
  startServer,
  systemCpuSeconds,
} from './procs.ts';
import {
  fmt,
  type IdleResult,
  type IdleServerResult,
  idleMarkdown,
  type LadderResult,
  type LadderServerResult,
  ladderMarkdown,
  latencySvg,
  type PersistResult,
  type PersistScenario,
  persistMarkdown,
  type StepResult,
  stepCheck,
} from './report.ts';

// ── settings ───────────────────────────────────────────────────────────────

const SCENARIOS = ['fanout', 'room', 'idle', 'cross', 'persist'] as const;
type ScenarioName = (typeof SCENARIOS)[number];

const HELP = `Usage: npm run bench [-- options]

Runs Parley, a raw ws broadcast baseline and Socket.IO 4 side by side on
loopback and writes bench-results/<timestamp>/{results.json,results.md,*.svg}.

Scenarios (all by default, in this order):
  fanout   1,000 connections in rooms of 100; publish rate stepped up until
           p99 > 50 ms or anything is lost
  room     one room of 5,000 connections, the same ladder at lower rates
  idle     10,000 and ~19,000 idle connections per server (50,000 extrapolated):
           memory per connection and connect rate
  cross    two instances of each server through Redis, as fanout
  persist  Parley alone: pipelined publishes stored in SQLite, then PostgreSQL

Options:
  --quick                 short steps and smaller sizes (about 3 minutes)
  --scenario <a,b>        only these scenarios (names above)
  --servers <a,b>         only these servers: parley, ws, socketio
  --step-seconds <n>      measured seconds per step (default 5, quick 2)
  --out <dir>             output directory (default bench-results/<timestamp>)
  --profile               run Parley with --cpu-prof; the .cpuprofile files go to
                          <out>/profiles (open them in Chrome DevTools or speedscope)
  --docs                  also put the tables into docs/benchmarks.md (between its
                          bench:latest markers) and the fan-out chart into
                          docs/images/fanout-latency.svg
  --help                  this text

The servers run pinned to CPU 0 and the load generators to CPU 1 when taskset
works. Default run: under 10 minutes on 2 cores.`;

interface Settings {
  quick: boolean;
  scenarios: ScenarioName[];
  servers: ServerKind[];
  stepSeconds: number;
  warmupSeconds: number;
  drainMs: number;
  outDir: string;
  budgetMs: number;
  latencyBoundMs: number;
  updateDocs: boolean;
  profile: boolean;
}

function parseArgs(argv: string[]): Settings {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace('T', '_').slice(0, 19);
  const settings: Settings = {
    quick: false,
    scenarios: [...SCENARIOS],
    servers: [...SERVER_KINDS],
    stepSeconds: 5,
    warmupSeconds: 1,
    drainMs: 3000,
    outDir: join(repoRoot, 'bench-results', stamp),
    budgetMs: 9.5 * 60_000,
    latencyBoundMs: 50,
    updateDocs: false,
    profile: false,
  };
  let stepGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    switch (arg) {
      case '--help':
      case '-h':
        process.stdout.write(`${HELP}\n`);
        process.exit(0);
        break;
      case '--quick':
        settings.quick = true;
        break;
      case '--scenario':
      case '--scenarios': {
        const names = value().split(',');
        for (const name of names)
          if (!(SCENARIOS as readonly string[]).includes(name)) throw new Error(`unknown scenario "${name}"`);
        settings.scenarios = SCENARIOS.filter((s) => names.includes(s));
        break;
      }
      case '--servers':
      case '--server': {
        const names = value().split(',');
        for (const name of names)
          if (!(SERVER_KINDS as readonly string[]).includes(name)) throw new Error(`unknown server "${name}"`);
        settings.servers = SERVER_KINDS.filter((s) => names.includes(s));
        break;
      }
      case '--step-seconds':
        settings.stepSeconds = Number(value());
        if (!(settings.stepSeconds > 0 && settings.stepSeconds <= 60)) throw new Error('--step-seconds: 0 < n ≤ 60');
        stepGiven = true;
        break;
      case '--out':
        settings.outDir = value();
        break;
      case '--docs':
        settings.updateDocs = true;
        break;
      case '--profile':
        settings.profile = true;
        break;
      default:
        throw new Error(`unknown option "${arg}" (see --help)`);
    }
  }
  if (settings.quick) {
    if (!stepGiven) settings.stepSeconds = 2;
    settings.warmupSeconds = 0.5;
    settings.drainMs = 1500;
    settings.budgetMs = 4 * 60_000;
  }
  return settings;
}

// ── shared state and cleanup ───────────────────────────────────────────────

const JWT_SECRET = 'bench-secret-bench-secret-bench-secret-0123456789';
const tokens = new TokenService({ secret: JWT_SECRET, accessTokenTtl: 6 * 3600 });
/** Client source addresses: one port range each, so ~19,000 sockets never run out of ephemeral ports. */
const LOCAL_ADDRESSES = Array.from({ length: 16 }, (_, i) => `127.0.0.${i + 2}`);
const SOCKETS_PER_LOADGEN = 18_000;
/**
 * Parley's heartbeat interval in the idle scenario: short, so that the pings'
 * cost stands out from the noise of /proc's 10 ms CPU ticks (the default 25 s
 * pings 19,000 sockets only 760 times a second).
 */
const HEARTBEAT_PROBE_MS = 2000;

const cleanups: Array<() => Promise<unknown>> = [];
let startedAt = Date.now();
let settings: Settings;
let pinning: Pinning;

function elapsed(): string {
  const s = Math.floor((Date.now() - startedAt) / 1000);
  return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

function progress(line: string): void {
  process.stdout.write(`[${elapsed()}] ${line}\n`);
}

/** Time kept back for the scenarios after the current one, so a long ladder cannot starve them. */
let reservedMs = 0;

function remainingMs(): number {
  return settings.budgetMs - (Date.now() - startedAt) - reservedMs;
}

/** A rough floor for each scenario's duration, for `reservedMs`. */
function minimumMs(name: ScenarioName): number {
  const servers = settings.servers.length;
  switch (name) {
    case 'idle':
      return servers * (settings.quick ? 12_000 : 25_000);
    case 'persist':
      return settings.quick ? 15_000 : 25_000;
    default:
      return servers * (settings.quick ? 12_000 : 25_000);
  }
}

async function runCleanups(): Promise<void> {
  while (cleanups.length > 0) {
    const cleanup = cleanups.pop()!;
    await cleanup().catch((error) => progress(`cleanup failed: ${(error as Error).message}`));
  }
}

/** Environment of every Parley instance: persistence on, limits out of the way, quiet logs. */
function parleyEnv(databaseUrl: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    DATABASE_URL: databaseUrl,
    JWT_SECRET,
    LOG_LEVEL: 'warn',
    RATE_LIMIT_PER_SEC: '1000000',
    RATE_LIMIT_BURST: '1000000',
    MAX_CONNECTIONS_PER_USER: '1000000',
    MAX_CONNECTIONS: '1000000',
    SHUTDOWN_DRAIN_MS: '0',
    ...extra,
  };
}

interface Deployment {
  servers: ServerProcess[];
  stop(): Promise<void>;
}

interface DeployOptions {
  inspect?: boolean;
  /** Parley on one instance: PostgreSQL instead of its embedded SQLite (two instances always use PostgreSQL). */
  store?: 'sqlite' | 'postgres';
}

/**
 * One or two instances of `kind`. Parley: one instance on a SQLite file (or,
 * with `store: 'postgres'`, a PostgreSQL database of its own), two on a
 * PostgreSQL database of their own and Redis; the others: Redis when two.
 */
async function deploy(
  kind: ServerKind,
  instances: 1 | 2,
  extraEnv: Record<string, string> = {},
  options: DeployOptions = {},
): Promise<Deployment> {
  const pin = pinning.enabled ? pinning.serverCpu : undefined;
  const undo: Array<() => Promise<unknown>> = [];
  const stop = async () => {
    while (undo.length > 0) await undo.pop()!().catch(() => undefined);
  };
  try {
    const envs: Array<Record<string, string>> = [];
    if (kind === 'parley') {
      if (instances === 1 && options.store !== 'postgres') {
        const dir = mkdtempSync(join(tmpdir(), 'parley-bench-'));
        undo.push(async () => rmSync(dir, { recursive: true, force: true }));
        envs.push(parleyEnv(`sqlite:${join(dir, 'parley.db')}`, extraEnv));
      } else {
        const database = await createTestDatabase();
        undo.push(() => database.drop());
        let shared: Record<string, string> = {};
        if (instances === 2) {
          const prefix = uniqueRedisPrefix('bench');
          undo.push(() => cleanupRedisPrefix(prefix));
          shared = { REDIS_URL: REDIS_TEST_URL, REDIS_KEY_PREFIX: prefix };
        }
        for (let i = 0; i < instances; i++)
          envs.push(parleyEnv(database.url, { ...shared, INSTANCE_ID: `bench-${i + 1}`, ...extraEnv }));
      }
    } else {
      const prefix = uniqueRedisPrefix(`bench-${kind}`);
      if (instances === 2) undo.push(() => cleanupRedisPrefix(prefix));
      for (let i = 0; i < instances; i++)
        envs.push(instances === 2 ? { REDIS_URL: REDIS_TEST_URL, REDIS_PREFIX: prefix } : {});
    }
    const servers: ServerProcess[] = [];
    for (const env of envs) {
      const server = await startServer(kind, env, pin, options);
      servers.push(server);
      undo.push(() => server.stop());
    }
    const entry = async () => {
      const at = cleanups.indexOf(entry);
      if (at >= 0) cleanups.splice(at, 1);
      await stop();
    };
    cleanups.push(entry);
    return { servers, stop: entry };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function startLoadgens(count: number): Promise<{ gens: Loadgen[]; stop(): Promise<void> }> {
  const gens = Array.from({ length: count }, () => Loadgen.start(pinning.enabled ? pinning.clientCpu : undefined));
  const stop = async () => {
    const at = cleanups.indexOf(stop);
    if (at >= 0) cleanups.splice(at, 1);
    await Promise.all(gens.map((g) => g.stop()));
  };
  cleanups.push(stop);
  return { gens, stop };
}

const totalCpu = (pids: number[]) => pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
const totalSystemCpu = (pids: number[]) => pids.reduce((sum, pid) => sum + systemCpuSeconds(pid), 0);

// ── ladders: fanout, room, cross ───────────────────────────────────────────

interface LadderSpec {
  name: 'fanout' | 'room' | 'cross';
  title: string;
  description: string;
  rooms: number;
  roomSize: number;
  instances: 1 | 2;
  rates: number[];
  /** A step is held only while p99 stays at or under this. */
  latencyBoundMs: number;
  /** The unrecorded run before the first step. */
  warmup: { rate: number; seconds: number };
}

/**
 * The fan-out ladders' warm-up: 3,500 messages, about what V8 needs here
 * before its compiler threads go quiet (measured on Parley at 100 and at
 * 500 msgs/s). Until then they take 10-20 % of the server's pinned core, and
 * a short warm-up left them busy through the first steps, for every server.
 */
const FANOUT_WARMUP = { rate: 500, seconds: 7 };

function ladderSpecs(): Record<'fanout' | 'room' | 'cross', LadderSpec> {
  const quick = settings.quick;
  return {
    fanout: {
      name: 'fanout',
      title: '1. Fan-out: 1,000 connections in rooms of 100',
      description:
        'One publisher connection per room (not a member of it); the offered rate is spread evenly over the 10 rooms, so every message is delivered to 100 sockets.',
      rooms: 10,
      roomSize: 100,
      instances: 1,
      rates: quick ? [200, 500, 1000, 2000] : [100, 200, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000],
      latencyBoundMs: settings.latencyBoundMs,
      warmup: quick ? { rate: 500, seconds: 2 } : FANOUT_WARMUP,
    },
    room: {
      name: 'room',
      title: quick ? '2. One room of 2,000 connections (quick)' : '2. One room of 5,000 connections',
      description: `One publisher; every message goes to every socket of the one room. The p99 bound here is ${settings.latencyBoundMs * 5} ms, not ${settings.latencyBoundMs}: one message is ${quick ? '2,000' : '5,000'} socket writes of ~10 µs each on one core, so its last copy leaves ~${quick ? 20 : 50} ms after its first whatever the server (and the load generator reads them on one core too).`,
      rooms: 1,
      roomSize: quick ? 2000 : 5000,
      instances: 1,
      rates: quick ? [5, 20, 50] : [5, 10, 15, 20, 30, 50, 100],
      latencyBoundMs: settings.latencyBoundMs * 5,
      // Every message is 5,000 deliveries: the per-socket path is hot within a few messages.
      warmup: { rate: 5, seconds: quick ? 1 : 2 },
    },
    cross: {
      name: 'cross',
      title: '4. Cross-instance: two instances through Redis, 1,000 connections in rooms of 100',
      description:
        "Each room has 50 sockets on each instance; room i's publisher is on instance i mod 2, so half of every fan-out crosses Redis. Parley: both instances on one PostgreSQL database (the contract's multi-instance setup) and Redis; Socket.IO: @socket.io/redis-adapter; ws-baseline: Redis pub/sub per room, local sockets served directly. Both instances of a server share CPU 0; Redis and PostgreSQL are the machine's shared ones, unpinned.",
      rooms: 10,
      roomSize: 100,
      instances: 2,
      rates: quick ? [200, 500, 1000, 2000] : [100, 200, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000],
      latencyBoundMs: settings.latencyBoundMs,
      warmup: quick ? { rate: 500, seconds: 2 } : FANOUT_WARMUP,
    },
  };
}

async function ladderForServer(
  spec: LadderSpec,
  kind: ServerKind,
  laterMs: number,
  options: { store?: 'postgres'; label?: string } = {},
): Promise<LadderServerResult> {
  const label = options.label ?? SERVER_LABEL[kind];
  const result: LadderServerResult = {
    server: kind,
    connectMs: 0,
    connections: 0,
    steps: [],
    best: undefined,
    invalid: false,
  };
  const deployment = await deploy(kind, spec.instances, {}, { store: options.store });
  const urls = deployment.servers.map((s) => s.wsUrl);
  const serverPids = deployment.servers.map((s) => s.pid);
  const receivers = spec.rooms * spec.roomSize;
  const genCount = Math.ceil((receivers + spec.rooms) / SOCKETS_PER_LOADGEN);
  const loadgens = await startLoadgens(genCount);
  try {
    const { token } = await tokens.issue('bench', 'user');
    // Receivers: each room split evenly over the instances, then dealt out to the generators.
    const perGen: ConnectionGroup[][] = loadgens.gens.map(() => []);
    let slot = 0;
    for (let r = 0; r < spec.rooms; r++) {
      for (let instance = 0; instance < spec.instances; instance++) {
        const count = Math.floor(spec.roomSize / spec.instances) + (instance < spec.roomSize % spec.instances ? 1 : 0);
        for (let g = 0; g < genCount; g++) {
          const share = Math.floor(count / genCount) + (g < count % genCount ? 1 : 0);
          if (share > 0) perGen[(slot + g) % genCount]!.push({ room: `r${r}`, count: share, instance });
        }
      }
      slot++;
    }
    const publishers = Array.from({ length: spec.rooms }, (_, r) => ({ room: `r${r}`, instance: r % spec.instances }));
    const t0 = Date.now();
    const connected = await Promise.all(
      loadgens.gens.map((gen, g) =>
        gen.request(
          {
            t: 'connect',
            kind,
            urls,
            token,
            groups: perGen[g]!,
            publishers: g === 0 ? publishers : [],
            localAddresses: LOCAL_ADDRESSES,
            concurrency: 64,
            timeoutMs: 20_000,
          },
          'connected',
          180_000,
        ),
      ),
    );
    result.connectMs = Date.now() - t0;
    result.connections = connected.reduce((sum, c) => sum + c.opened, 0);
    const errors = connected.reduce((sum, c) => sum + c.errors, 0);
    if (errors > 0) throw new Error(`${errors} connections failed: ${connected.find((c) => c.firstError)?.firstError}`);
    progress(`${spec.name} ${label}: ${fmt(result.connections)} sockets open in ${fmt(result.connectMs)} ms`);
    // Warm-up, not recorded: JIT, room creation (Parley stores rooms on first use), connection buffers.
    await runStep(loadgens.gens, serverPids, spec.warmup.rate, spec.warmup.seconds, spec.latencyBoundMs);
    progress(`${spec.name} ${label}: warmed up, ${fmt(spec.warmup.seconds)} s at ${fmt(spec.warmup.rate)}/s`);
    const stepMs = (settings.warmupSeconds + settings.stepSeconds) * 1000 + settings.drainMs + 1500;
    for (const rate of spec.rates) {
      if (remainingMs() - laterMs < stepMs + 5_000) {
        progress(`${spec.name} ${label}: time budget reached, ladder stopped before ${rate}/s`);
        break;
      }
      const step = await runStep(loadgens.gens, serverPids, rate, settings.stepSeconds, spec.latencyBoundMs);
      result.steps.push(step);
      if (step.duplicates || step.reordered || step.foreign) result.invalid = true;
      if (step.held) result.best = step;
      progress(
        `${spec.name} ${label.padEnd(11)} ${fmt(rate).padStart(6)}/s: ${fmt(step.deliveriesPerSec).padStart(9)} deliv/s  p50 ${fmt(step.p50, 2)}  p99 ${fmt(step.p99, 2)}  max ${fmt(step.max, 1)} ms  server ${fmt(step.serverUsPerDelivery, 2)} µs/deliv (${fmt(step.serverCpuPct)} %, kernel ${fmt(step.serverKernelShare * 100)} %)  client ${fmt(step.clientCpuPct)} %${step.clientSaturated ? ' SATURATED' : ''}  ${stepCheck(step)}  ${step.held ? 'held' : `NOT HELD: ${step.reason}`}`,
      );
      if (!step.held) break;
    }
  } finally {
    for (const gen of loadgens.gens) gen.send({ t: 'quiesce' });
    await deployment.stop();
    await loadgens.stop();
  }
  return result;
}

async function runStep(
  gens: Loadgen[],
  serverPids: number[],
  rate: number,
  stepSeconds: number,
  latencyBoundMs: number,
): Promise<StepResult> {
  await Promise.all(gens.map((g) => g.request({ t: 'reset' }, 'ok', 10_000)));
  const startUs = nowUs() + 300_000;
  const warmEndUs = startUs + settings.warmupSeconds * 1e6;
  const endUs = warmEndUs + stepSeconds * 1e6;
  const published = gens[0]!.next('published', (endUs - nowUs()) / 1000 + 30_000);
  gens[0]!.send({ t: 'step', rate, startUs, warmEndUs, endUs });
  await Promise.all(gens.slice(1).map((g) => g.request({ t: 'window', warmEndUs, endUs }, 'ok', 10_000)));
  const genPids = gens.map((g) => g.pid);
  await sleep((warmEndUs - nowUs()) / 1000);
  const server0 = totalCpu(serverPids);
  const serverSystem0 = totalSystemCpu(serverPids);
  const client0 = totalCpu(genPids);
  const wall0 = nowUs();
  await sleep((endUs - nowUs()) / 1000);
  const server1 = totalCpu(serverPids);
  const serverSystem1 = totalSystemCpu(serverPids);
  const client1 = totalCpu(genPids);
  const wallSeconds = (nowUs() - wall0) / 1e6;
  const pub = await published;
  // Drain: wait until every expected delivery arrived, or the drain time is up.
  const drainEnd = Date.now() + settings.drainMs;
  let stats: StatsReport[] = [];
  let expected = 0;
  let distinct = 0;
  for (;;) {
    stats = await Promise.all(gens.map((g) => g.request({ t: 'stats' }, 'stats', 10_000)));
    const members = new Map<string, number>();
    distinct = 0;
    for (const s of stats)
      for (const [room, c] of Object.entries(s.rooms)) {
        members.set(room, (members.get(room) ?? 0) + c.members);
        distinct += c.distinct;
      }
    expected = 0;
    for (const [room, sent] of Object.entries(pub.perRoom)) expected += sent * (members.get(room) ?? 0);
    if (distinct >= expected || Date.now() >= drainEnd) break;
    await sleep(200);
  }
  const hist = new Histogram();
  let deliveries = 0;
  let bytes = 0;
  let duplicates = 0;
  let reordered = 0;
  let foreign = 0;
  let unexpectedCloses = 0;
  let publishErrors = 0;
  const closeCodes: Record<string, number> = {};
  for (const s of stats) {
    hist.add(s.latency);
    deliveries += s.windowDeliveries;
    bytes += s.windowBytes;
    unexpectedCloses += s.unexpectedCloses;
    publishErrors += s.publishErrors;
    for (const [code, n] of Object.entries(s.closeCodes)) closeCodes[code] = (closeCodes[code] ?? 0) + n;
    for (const c of Object.values(s.rooms)) {
      duplicates += c.duplicates;
      reordered += c.reordered;
      foreign += c.foreign;
    }
  }
  const serverCpu = server1 - server0;
  const clientCpu = client1 - client0;
  const lost = Math.max(0, expected - distinct);
  const p99 = hist.percentile(0.99) / 1000;
  const valid =
    lost === 0 && duplicates === 0 && reordered === 0 && foreign === 0 && unexpectedCloses === 0 && publishErrors === 0;
  const clientSaturated = pinning.enabled
    ? clientCpu / wallSeconds >= 0.9
    : gens.some(() => clientCpu / gens.length / wallSeconds >= 0.9);
  const reasons: string[] = [];
  if (!valid)
    reasons.push(
      stepCheck({ lost, duplicates, reordered, foreign, unexpectedCloses, closeCodes, publishErrors } as StepResult),
    );
  if (p99 > latencyBoundMs) reasons.push(`p99 ${fmt(p99, 1)} ms > ${latencyBoundMs} ms`);
  if (pub.achievedRate < 0.95 * rate) reasons.push(`sent only ${fmt(pub.achievedRate)}/s`);
  if (deliveries === 0) reasons.push('nothing delivered');
  return {
    offered: rate,
    achieved: pub.achievedRate,
    skipped: pub.skipped,
    deliveries,
    deliveriesPerSec: deliveries / stepSeconds,
    expected,
    distinct,
    lost,
    duplicates,
    reordered,
    foreign,
    unexpectedCloses,
    closeCodes,
    publishErrors,
    p50: hist.percentile(0.5) / 1000,
    p95: hist.percentile(0.95) / 1000,
    p99,
    max: hist.max / 1000,
    meanMs: hist.count ? hist.sum / hist.count / 1000 : 0,
    bytesPerDelivery: deliveries ? bytes / deliveries : 0,
    serverCpuPct: (serverCpu / wallSeconds) * 100,
    serverKernelShare: serverCpu > 0 ? (serverSystem1 - serverSystem0) / serverCpu : 0,
    serverUsPerDelivery: deliveries ? (serverCpu * 1e6) / deliveries : 0,
    clientCpuPct: (clientCpu / wallSeconds) * 100,
    clientUsPerDelivery: deliveries ? (clientCpu * 1e6) / deliveries : 0,
    clientSaturated,
    serverSaturated: serverCpu / wallSeconds >= (serverPids.length > 1 && !pinning.enabled ? 1.8 : 0.9),
    valid,
    held: reasons.length === 0,
    reason: reasons.join('; '),
  };
}

async function ladder(spec: LadderSpec): Promise<LadderResult> {
  progress(`── ${spec.title}`);
  const results: LadderServerResult[] = [];
  const withReference = spec.name === 'cross' && settings.servers.includes('parley');
  const perServerMs = settings.quick ? 12_000 : 25_000;
  for (const [index, kind] of settings.servers.entries()) {
    try {
      const laterMs = (settings.servers.length - index - 1 + (withReference ? 1 : 0)) * perServerMs;
      results.push(await ladderForServer(spec, kind, laterMs));
    } catch (error) {
      progress(`${spec.name} ${SERVER_LABEL[kind]}: FAILED: ${(error as Error).message}`);
      results.push({
        server: kind,
        connectMs: 0,
        connections: 0,
        steps: [],
        best: undefined,
        // Not "invalid": nothing was delivered wrongly; the error says what failed.
        invalid: false,
        error: (error as Error).message.split('\n')[0]!,
      });
    }
  }
  const scenario: LadderResult = {
    name: spec.name,
    title: spec.title,
    description: spec.description,
    latencyBoundMs: spec.latencyBoundMs,
    results,
  };
  const parley = results.find((r) => r.server === 'parley');
  const heldRates = (parley?.steps ?? []).filter((step) => step.held).map((step) => step.offered);
  if (withReference && heldRates.length > 0) {
    // The same load on one instance on the same PostgreSQL, without Redis: what is left between
    // the two is the cross-instance path alone, not the store.
    const label = 'Parley, 1 instance on PostgreSQL';
    try {
      scenario.reference = {
        label,
        result: await ladderForServer({ ...spec, instances: 1, rates: heldRates }, 'parley', 0, {
          store: 'postgres',
          label: 'Parley 1×PG',
        }),
      };
    } catch (error) {
      progress(`${spec.name} ${label}: FAILED: ${(error as Error).message}`);
    }
  }
  return scenario;
}

// ── idle ───────────────────────────────────────────────────────────────────

async function idle(): Promise<IdleResult> {
  const targets = settings.quick ? [10000] : [10000, 19000];
  const title = '3. Idle connections: memory and connect rate';
  progress(`── ${title}`);
  const description = `Each server holds ${targets.map((n) => fmt(n)).join(' then ')} idle connections, each joined to a room of 100 (Parley: authenticated by a bearer token on the upgrade and subscribed). One process cannot hold 50,000 here (open files are capped at 20,000 per process), so **the 50,000 row is extrapolated linearly** from RSS before connecting and RSS at ${fmt(targets.at(-1))}. Connections come from ${LOCAL_ADDRESSES.length} source addresses (127.0.0.2–127.0.0.${LOCAL_ADDRESSES.length + 1}), ${fmt(Math.ceil(targets.at(-1)! / SOCKETS_PER_LOADGEN))} load-generator process(es), 64 handshakes in flight per process. RSS is read from /proc 2 s after the last connect (no forced GC); then, last, each server is made to run a full GC through its inspector (every server runs with --inspect here) and reports its live heap and RSS, against the same taken before connecting: those two rows do not move with what the connects left for the next collection. Parley runs with HEARTBEAT_MS=${fmt(HEARTBEAT_PROBE_MS)} here (its idle CPU includes those pings), so that the heartbeat's cost can be measured and scaled to the default 25 s.`;
  const results: IdleServerResult[] = [];
  for (const kind of settings.servers) {
    const entry: IdleServerResult = {
      server: kind,
      baseRssMiB: 0,
      points: [],
      bytesPerConnection: 0,
      extrapolated50kMiB: 0,
    };
    results.push(entry);
    let deployment: Deployment | undefined;
    let loadgens: Awaited<ReturnType<typeof startLoadgens>> | undefined;
    try {
      // Parley pings every socket every HEARTBEAT_MS; a short interval makes that cost measurable.
      deployment = await deploy(kind, 1, kind === 'parley' ? { HEARTBEAT_MS: String(HEARTBEAT_PROBE_MS) } : {}, {
        inspect: true,
      });
      const server = deployment.servers[0]!;
      const genCount = Math.max(1, Math.ceil(targets.at(-1)! / SOCKETS_PER_LOADGEN));
      loadgens = await startLoadgens(genCount);
      const { token } = await tokens.issue('bench', 'user');
      await sleep(1000);
      const base = rssBytes(server.pid);
      entry.baseRssMiB = base / 1048576;
      // After the plain RSS reading, so that it is taken as before: no collection forced.
      const baseGc = await memoryAfterGc(server);
      let have = 0;
      let roomIndex = 0;
      for (const target of targets) {
        const batch = target - have;
        const perGen = loadgens.gens.map((_, g) => Math.floor(batch / genCount) + (g < batch % genCount ? 1 : 0));
        const groups = perGen.map((n) => {
          const list: ConnectionGroup[] = [];
          for (let left = n; left > 0; left -= 100)
            list.push({ room: `idle${roomIndex++}`, count: Math.min(100, left), instance: 0 });
          return list;
        });
        const t0 = Date.now();
        const genPids = loadgens.gens.map((g) => g.pid);
        const serverCpu0 = cpuSeconds(server.pid);
        const clientCpu0 = totalCpu(genPids);
        const replies = await Promise.all(
          loadgens.gens.map((gen, g) =>
            gen.request(
              {
                t: 'connect',
                kind,
                urls: [server.wsUrl],
                token,
                groups: groups[g]!,
                publishers: [],
                localAddresses: LOCAL_ADDRESSES,
                concurrency: 64,
                timeoutMs: 30_000,
              },
              'connected',
              240_000,
            ),
          ),
        );
        const seconds = (Date.now() - t0) / 1000;
        const connectServerCpu = cpuSeconds(server.pid) - serverCpu0;
        const connectClientCpu = totalCpu(genPids) - clientCpu0;
        const opened = replies.reduce((s, r) => s + r.opened, 0);
        const errors = replies.reduce((s, r) => s + r.errors, 0);
        have += opened;
        const cpu0 = cpuSeconds(server.pid);
        await sleep(2000);
        const idleCpuPct = ((cpuSeconds(server.pid) - cpu0) / 2) * 100;
        const rss = rssBytes(server.pid);
        entry.points.push({
          connections: have,
          rssMiB: rss / 1048576,
          connectPerSec: opened / seconds,
          errors,
          firstError: replies.find((r) => r.firstError)?.firstError,
          idleCpuPct,
          serverUsPerConnect: opened ? (connectServerCpu * 1e6) / opened : 0,
          connectServerCpuPct: (connectServerCpu / seconds) * 100,
          connectClientCpuPct: (connectClientCpu / seconds) * 100,
        });
        progress(
          `idle ${SERVER_LABEL[kind].padEnd(11)} ${fmt(have).padStart(6)} connections: RSS ${fmt(rss / 1048576, 1)} MiB (${fmt((rss - base) / Math.max(1, have) / 1024, 1)} KiB/conn), ${fmt(opened / seconds)} conn/s (server ${fmt((connectServerCpu * 1e6) / Math.max(1, opened))} µs/conn, ${fmt((connectServerCpu / seconds) * 100)} % CPU; client ${fmt((connectClientCpu / seconds) * 100)} % CPU), idle CPU ${fmt(idleCpuPct, 1)} %${errors ? `, ${errors} errors: ${replies.find((r) => r.firstError)?.firstError}` : ''}`,
        );
        if (errors > 0) break;
      }
      const last = entry.points.at(-1);
      if (kind === 'parley' && last && last.connections > 0 && last.errors === 0) {
        const seconds = settings.quick ? 4 : 8;
        const cpu0 = cpuSeconds(server.pid);
        const system0 = systemCpuSeconds(server.pid);
        const wall0 = nowUs();
        await sleep(seconds * 1000);
        const cpu = cpuSeconds(server.pid) - cpu0;
        const system = systemCpuSeconds(server.pid) - system0;
        const wall = (nowUs() - wall0) / 1e6;
        const pings = (last.connections * wall * 1000) / HEARTBEAT_PROBE_MS;
        const usPerPing = (cpu * 1e6) / pings;
        entry.heartbeat = {
          intervalMs: HEARTBEAT_PROBE_MS,
          connections: last.connections,
          seconds: wall,
          cpuPct: (cpu / wall) * 100,
          usPerPing,
          kernelShare: cpu > 0 ? system / cpu : 0,
          at100kPct: ((usPerPing * 100_000) / 25 / 1e6) * 100,
        };
        progress(
          `idle Parley heartbeats: ${fmt(entry.heartbeat.cpuPct, 1)} % of a core for ${fmt(last.connections)} sockets pinged every ${fmt(HEARTBEAT_PROBE_MS)} ms = ${fmt(usPerPing, 2)} µs per ping (${fmt(entry.heartbeat.kernelShare * 100)} % in the kernel); 100,000 at 25 s: ${fmt(entry.heartbeat.at100kPct, 2)} % of a core`,
        );
      }
      if (last && last.connections > 0) {
        entry.bytesPerConnection = ((last.rssMiB - entry.baseRssMiB) * 1048576) / last.connections;
        entry.extrapolated50kMiB = entry.baseRssMiB + (entry.bytesPerConnection * 50_000) / 1048576;
        // Last, so that no forced collection changes what was read above.
        const gc = await memoryAfterGc(server);
        entry.afterGc = {
          heapBytesPerConnection: (gc.heapUsed - baseGc.heapUsed) / last.connections,
          rssBytesPerConnection: (gc.rss - baseGc.rss) / last.connections,
        };
        progress(
          `idle ${SERVER_LABEL[kind]} after a full GC: live heap ${fmt(entry.afterGc.heapBytesPerConnection / 1024, 2)} KiB/conn, RSS ${fmt(entry.afterGc.rssBytesPerConnection / 1024, 2)} KiB/conn`,
        );
      }
    } catch (error) {
      entry.error = (error as Error).message.split('\n')[0]!;
      progress(`idle ${SERVER_LABEL[kind]}: FAILED: ${entry.error}`);
    } finally {
      for (const gen of loadgens?.gens ?? []) gen.send({ t: 'quiesce' });
      // Server first: its side of every socket closes first, so the TIME_WAITs are not on our source ports.
      await deployment?.stop();
      await loadgens?.stop();
    }
  }
  return { name: 'idle', title, description, results };
}

// ── persisted throughput ───────────────────────────────────────────────────

async function persist(): Promise<PersistScenario> {
  const title = '5. Persisted publish throughput (Parley only)';
  progress(`── ${title}`);
  const connections = 8;
  const window = 64;
  const durationMs = settings.quick ? 2000 : 5000;
  const description = `Parley's store alone: ${connections} WebSocket connections each keep ${window} publishes (with ids) in flight to a room of their own, for ${durationMs / 1000} s, with no subscribers; a publish counts when its reply (the stored message) arrives. At the end the rows in the store's messages table are counted and must equal the acknowledged publishes. Each store is measured three times: publishes without idempotency keys, as the other scenarios send them; each with a key of its own as the SDK makes them (a UUID v7, which begins with the time), as the SDK sends every publish; and each with a random UUID v4, as an app that makes its own keys with \`crypto.randomUUID()\` sends. A keyed publish also claims its key in the store's key table. On SQLite the size of the write-ahead log file is sampled every 50 ms: the checkpointer keeps it near 64 MiB however long the commits follow each other.`;
  const results: PersistResult[] = [];
  const runs = (['sqlite', 'postgres'] as const).flatMap((store) =>
    (['none', 'sdk', 'uuid4'] as const).map((keys) => ({ store, keys })),
  );
  for (const { store, keys } of runs) {
    const label = `${store}${keys === 'none' ? '' : ` ${keys} keys`}`;
    const entry: PersistResult = {
      store,
      keys,
      acked: 0,
      errors: 0,
      seconds: 0,
      storedPerSec: 0,
      countInStore: 0,
      verified: false,
      ackP50: 0,
      ackP99: 0,
      serverUsPerMessage: 0,
      serverCpuPct: 0,
    };
    results.push(entry);
    let dir: string | undefined;
    let database: TestDatabase | undefined;
    let server: ServerProcess | undefined;
    let loadgens: Awaited<ReturnType<typeof startLoadgens>> | undefined;
    try {
      let databaseUrl: string;
      if (store === 'sqlite') {
        dir = mkdtempSync(join(tmpdir(), 'parley-bench-'));
        databaseUrl = `sqlite:${join(dir, 'parley.db')}`;
      } else {
        database = await createTestDatabase();
        databaseUrl = database.url;
      }
      server = await startServer('parley', parleyEnv(databaseUrl), pinning.enabled ? pinning.serverCpu : undefined);
      loadgens = await startLoadgens(1);
      const { token } = await tokens.issue('bench', 'user');
      // SQLite's write-ahead log, sampled: under back-to-back commits it is what grows (Profiles).
      const walFile = store === 'sqlite' ? `${databaseUrl.slice('sqlite:'.length)}-wal` : undefined;
      const walSampler = walFile
        ? setInterval(() => {
            const bytes = statSync(walFile, { throwIfNoEntry: false })?.size ?? 0;
            entry.largestLogMiB = Math.max(entry.largestLogMiB ?? 0, bytes / 2 ** 20);
          }, 50)
        : undefined;
      const cpu0 = cpuSeconds(server.pid);
      const report = await loadgens.gens[0]!.request(
        {
          t: 'persist',
          url: server.wsUrl,
          token,
          connections,
          window,
          maxMessages: 1_000_000,
          durationMs,
          localAddresses: LOCAL_ADDRESSES,
          keys,
        },
        'persisted',
        durationMs + 60_000,
      );
      const cpu = cpuSeconds(server.pid) - cpu0;
      clearInterval(walSampler);
      const hist = new Histogram();
      hist.add(report.latency);
      entry.acked = report.acked;
      entry.errors = report.errors;
      entry.firstError = report.firstError;
      entry.seconds = report.ms / 1000;
      entry.storedPerSec = report.acked / entry.seconds;
      entry.ackP50 = hist.percentile(0.5) / 1000;
      entry.ackP99 = hist.percentile(0.99) / 1000;
      entry.serverUsPerMessage = report.acked ? (cpu * 1e6) / report.acked : 0;
      entry.serverCpuPct = (cpu / entry.seconds) * 100;
      const countSql = "SELECT count(*) AS n FROM messages WHERE channel LIKE 'room:persist-%'";
      if (store === 'sqlite') {
        const db = new Database(databaseUrl.slice('sqlite:'.length), { readonly: true, fileMustExist: true });
        try {
          entry.countInStore = Number((db.prepare(countSql).get() as { n: number }).n);
        } finally {
          db.close();
        }
      } else {
        const client = new pg.Client({ connectionString: database!.url });
        await client.connect();
        try {
          entry.countInStore = Number((await client.query(countSql)).rows[0].n);
        } finally {
          await client.end();
        }
      }
      entry.verified = entry.countInStore === entry.acked && entry.errors === 0;
      progress(
        `persist ${label.padEnd(20)}: ${fmt(entry.storedPerSec)} stored msgs/s (${fmt(entry.acked)} acknowledged, ${fmt(entry.countInStore)} rows: ${entry.verified ? 'verified' : 'MISMATCH'}), ack p50 ${fmt(entry.ackP50, 2)} p99 ${fmt(entry.ackP99, 2)} ms, server ${fmt(entry.serverUsPerMessage, 1)} µs/msg (${fmt(entry.serverCpuPct)} %)${entry.largestLogMiB === undefined ? '' : `, log up to ${fmt(entry.largestLogMiB)} MiB`}${entry.errors ? `, ${entry.errors} errors: ${entry.firstError}` : ''}`,
      );
    } catch (error) {
      entry.error = (error as Error).message.split('\n')[0]!;
      progress(`persist ${label}: FAILED: ${entry.error}`);
    } finally {
      await server?.stop();
      await loadgens?.stop();
      await database?.drop().catch(() => undefined);
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
  }
  return { name: 'persist', title, description, results };
}

// ── machine and output ─────────────────────────────────────────────────────

function machine() {
  let cpuModel = cpus()[0]?.model ?? 'unknown';
  try {
    const match = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (match) cpuModel = match[1]!.trim();
  } catch {
    // cpus() then.
  }
  let load = '';
  try {
    load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    // Not Linux.
  }
  return {
    cores: availableParallelism(),
    cpuModel,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    loadAverageAtStart: load,
  };
}

async function main(): Promise<void> {
  try {
    settings = parseArgs(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`bench: ${(error as Error).message}\n`);
    process.exit(2);
  }
  startedAt = Date.now();
  // Before pinning: availableParallelism() counts only the CPUs this process may use.
  const info = machine();
  pinning = detectPinning();
  const commandLine = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  progress(
    `parley bench: ${info.cores} cores (${info.cpuModel}), ${info.memoryGiB} GiB, Node ${info.node}, load average ${info.loadAverageAtStart}`,
  );
  progress(`${pinning.note}; scenarios ${settings.scenarios.join(', ')}; servers ${settings.servers.join(', ')}`);
  progress(`results in ${settings.outDir}`);
  if (settings.profile) {
    const dir = join(settings.outDir, 'profiles');
    mkdirSync(dir, { recursive: true });
    profileParleyInto(dir);
    progress(`profiling Parley: CPU profiles in ${dir}`);
  }

  let interrupted = false;
  const onSignal = (signal: string) => {
    if (interrupted) process.exit(130);
    interrupted = true;
    progress(`${signal}: tearing down`);
    void runCleanups().finally(() => process.exit(130));
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));

  const specs = ladderSpecs();
  const results: Record<string, unknown> = {};
  const markdown: string[] = [];
  const charts: Record<string, string> = {};
  try {
    for (const [index, name] of settings.scenarios.entries()) {
      reservedMs = settings.scenarios.slice(index + 1).reduce((sum, later) => sum + minimumMs(later), 0);
      if (name === 'idle') {
        const r = await idle();
        results.idle = r;
        markdown.push(idleMarkdown(r));
      } else if (name === 'persist') {
        const r = await persist();
        results.persist = r;
        markdown.push(persistMarkdown(r));
      } else {
        const r = await ladder(specs[name]);
        results[name] = r;
        // Cross-instance against the fan-out ladder of this same run: one instance on SQLite, the same load.
        const fanout = name === 'cross' ? (results.fanout as LadderResult | undefined) : undefined;
        markdown.push(
          ladderMarkdown(
            r,
            fanout?.results.find((f) => f.server === 'parley'),
          ),
        );
        charts[name] = latencySvg(r);
      }
    }
  } finally {
    await runCleanups();
  }

  const wallSeconds = (Date.now() - startedAt) / 1000;
  const meta = {
    date: new Date(startedAt).toISOString(),
    command: commandLine,
    wallSeconds,
    machine: { ...info, loadAverageAtEnd: machine().loadAverageAtStart },
    pinning,
    settings: { ...settings, outDir: undefined },
    servers: {
      parley:
        'packages/server/src/main.ts (node --import tsx), embedded defaults, SQLite file (persistence on), limits raised',
      ws: 'packages/bench/src/servers/ws-baseline.ts: pre-framed broadcast, one write per socket',
      socketio: `packages/bench/src/servers/socketio-server.ts: socket.io ${socketIoVersion()}, websocket transport only`,
    },
  };
  const header = [
    `## Results (${meta.date})`,
    '',
    `Command: \`${commandLine}\` · wall time ${fmt(wallSeconds / 60, 1)} min · ${info.cores} × ${info.cpuModel}, ${info.memoryGiB} GiB, Node ${info.node} · ${pinning.note} · load average at start ${info.loadAverageAtStart}`,
    '',
  ].join('\n');
  const md = `${header}\n${markdown.join('\n')}`;
  if (settings.updateDocs) updateDocs(header, markdown, charts.fanout);
  mkdirSync(settings.outDir, { recursive: true });
  writeFileSync(join(settings.outDir, 'results.json'), `${JSON.stringify({ meta, results }, null, 2)}\n`);
  writeFileSync(join(settings.outDir, 'results.md'), md);
  for (const [name, svg] of Object.entries(charts)) writeFileSync(join(settings.outDir, `${name}-latency.svg`), svg);
  process.stdout.write(`\n${md}\n`);
  progress(`done in ${fmt(wallSeconds / 60, 1)} min: ${settings.outDir}`);
}

const DOCS_START = '<!-- bench:latest:start -->';
const DOCS_END = '<!-- bench:latest:end -->';

/** Replaces the block between the markers of docs/benchmarks.md with this run's tables and chart. */
function updateDocs(header: string, sections: string[], fanoutSvg: string | undefined): void {
  const path = join(repoRoot, 'docs/benchmarks.md');
  const doc = readFileSync(path, 'utf8');
  const start = doc.indexOf(DOCS_START);
  const end = doc.indexOf(DOCS_END);
  if (start < 0 || end < start) {
    progress(`--docs: ${path} has no ${DOCS_START} … ${DOCS_END} block; left alone`);
    return;
  }
  const summary = header.split('\n').slice(2).join('\n').trim();
  const chart = fanoutSvg ? '![Fan-out latency against offered load](images/fanout-latency.svg)\n\n' : '';
  if (fanoutSvg) writeFileSync(join(repoRoot, 'docs/images/fanout-latency.svg'), fanoutSvg);
  const block = `${DOCS_START}\n\n${summary}\n\n${chart}${sections.join('\n')}\n${DOCS_END}`;
  writeFileSync(path, doc.slice(0, start) + block + doc.slice(end + DOCS_END.length));
  progress(`docs/benchmarks.md${fanoutSvg ? ' and docs/images/fanout-latency.svg' : ''} updated`);
}

function socketIoVersion(): string {
  try {
    return (
      JSON.parse(readFileSync(join(repoRoot, 'node_modules/socket.io/package.json'), 'utf8')) as { version: string }
    ).version;
  } catch {
    return '4';
  }
}

main().then(
  () => process.exit(0),
  async (error) => {
    process.stderr.write(`bench: ${(error as Error).stack ?? error}\n`);
    await runCleanups();
    process.exit(1);
  },
);
