/**
 * Server CPU per delivery for one room, at one rate, for Parley or the ws
 * baseline: the figure the fan-out ladder reports, for one configuration at
 * a time and without the ladder's other servers.
 *
 *   node --import tsx packages/bench/src/measure-fanout-cpu.ts [SUBSCRIBERS=1000] [RATE=100] [parley|ws]
 *
 * The server runs pinned to CPU 0 and this process (the clients) to CPU 1
 * where taskset allows, as in the bench. Parley stores on SQLite in memory.
 * Environment:
 *   DATABASE_URL  Parley's store instead (`sqlite:/tmp/x/parley.db` for a file,
 *                 as the bench's fan-out ladder uses)
 *   WARM=N        publish N messages first, as fast as they are delivered, so
 *                 the JIT has optimized the hot path (a long-running server's
 *                 state) before the measured window; default 0
 *   PERF=<file>   record the server with `perf record -g` over the measured
 *                 window (the server then runs with --perf-basic-prof, so
 *                 JavaScript frames have names: `perf report -i <file>`)
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { TokenService } from '../../server/src/auth/tokens.ts';
import { payload, publishFrame, type ServerKind } from './common.ts';
import { cpuSeconds, detectPinning, repoRoot, startServer, systemCpuSeconds } from './procs.ts';

const SUBSCRIBERS = Number(process.argv[2] ?? 1000);
const RATE = Number(process.argv[3] ?? 100);
const KIND = (process.argv[4] ?? 'parley') as ServerKind;
const SECONDS = 10;
const WARM = Number(process.env.WARM ?? 0);
const PERF = process.env.PERF;
if (KIND !== 'parley' && KIND !== 'ws') throw new Error(`server: parley or ws, not ${KIND}`);

const secret = 'measure-secret-measure-secret-measure-secret-0000';
const pinning = detectPinning();
const server = await startServer(
  KIND,
  {
    ...(KIND === 'parley'
      ? {
          DATABASE_URL: process.env.DATABASE_URL ?? 'sqlite::memory:',
          JWT_SECRET: secret,
          LOG_LEVEL: 'warn',
          RATE_LIMIT_PER_SEC: '100000',
          RATE_LIMIT_BURST: '100000',
          MAX_CONNECTIONS_PER_USER: '100000',
        }
      : {}),
    ...(PERF ? { NODE_OPTIONS: '--perf-basic-prof' } : {}),
  },
  pinning.enabled ? pinning.serverCpu : undefined,
);

const { token } = await new TokenService({ secret, accessTokenTtl: 3600 }).issue('u', 'user');
const room = 'cpu';

/** An open socket: Parley's welcomed (and subscribed, for a receiver), the baseline's in its room. */
async function open(receiver: boolean): Promise<WebSocket> {
  const ws =
    KIND === 'parley'
      ? new WebSocket(`${server.wsUrl}/ws`, { headers: { authorization: `Bearer ${token}` } })
      : new WebSocket(receiver ? `${server.wsUrl}/?room=${room}` : `${server.wsUrl}/`);
  if (KIND === 'parley') {
    await new Promise((resolve) => ws.once('message', resolve));
    if (receiver) {
      ws.send(JSON.stringify({ type: 'subscribe', channel: `room:${room}`, id: 1 }));
      await new Promise((resolve) => ws.once('message', resolve));
    }
  } else {
    await new Promise((resolve) => ws.once('open', resolve));
  }
  return ws;
}

let got = 0;
const sockets: WebSocket[] = [];
for (let i = 0; i < SUBSCRIBERS; i += 100) {
  const batch = await Promise.all(Array.from({ length: Math.min(100, SUBSCRIBERS - i) }, () => open(true)));
  for (const ws of batch) ws.on('message', () => got++);
  sockets.push(...batch);
}
const publisher = await open(false);
sockets.push(publisher);

let seq = 0;
const publish = () => publisher.send(publishFrame(KIND, room, payload(room, ++seq, performance.now() * 1000)));
async function delivered(count: number, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (got < count && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
}

for (let i = 0; i < WARM; i++) {
  publish();
  // Bursts of 200, each waited for, so the warm-up never queues without bound.
  if (i % 200 === 199) await delivered((i + 1) * SUBSCRIBERS, 30_000);
}
await delivered(WARM * SUBSCRIBERS, 30_000);
await new Promise((resolve) => setTimeout(resolve, 1000));

let perf: ChildProcess | undefined;
if (PERF) {
  perf = spawn('perf', ['record', '-F', '2000', '-g', '-p', String(server.pid), '-o', PERF], { stdio: 'inherit' });
  await new Promise((resolve) => setTimeout(resolve, 500));
}
got = 0;
const cpu0 = cpuSeconds(server.pid);
const system0 = systemCpuSeconds(server.pid);
const t0 = performance.now();
for (let i = 0; i < RATE * SECONDS; i++) {
  const wait = t0 + (i * 1000) / RATE - performance.now();
  if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
  publish();
}
await delivered(RATE * SECONDS * SUBSCRIBERS, 10_000);
const cpu = cpuSeconds(server.pid) - cpu0;
const system = systemCpuSeconds(server.pid) - system0;
if (perf) {
  perf.kill('SIGINT');
  await new Promise((resolve) => perf?.once('exit', resolve));
}
console.log(
  JSON.stringify({
    server: KIND,
    subscribers: SUBSCRIBERS,
    publishesPerSec: RATE,
    warm: WARM,
    pinned: pinning.enabled,
    deliveries: got,
    serverCpuSeconds: +cpu.toFixed(2),
    serverCpuMicrosPerDelivery: +((cpu * 1e6) / Math.max(1, got)).toFixed(2),
    kernelShare: cpu > 0 ? +(system / cpu).toFixed(2) : 0,
  }),
);
for (const ws of sockets) ws.terminate();
await server.stop();
// --perf-basic-prof also has V8 write its log into the server's working directory (the repository).
if (PERF) {
  for (const file of readdirSync(repoRoot)) {
    if (file.startsWith('isolate-') && file.endsWith(`-${server.pid}-v8.log`)) rmSync(join(repoRoot, file));
  }
}
process.exit(got === RATE * SECONDS * SUBSCRIBERS ? 0 : 1);
