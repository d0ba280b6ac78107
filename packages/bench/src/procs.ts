/**
 * Child processes of the benchmark: the servers under test and the load
 * generators, each pinned to its core with `taskset` when it is there, and
 * the /proc readings (CPU time, RSS) taken of them.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { freePort } from '../../../deploy/local-cluster.ts';
import type { FromLoadgen, ServerKind, ToLoadgen } from './common.ts';

export const benchDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const repoRoot = resolve(benchDir, '../..');
const parleyEntry = join(repoRoot, 'packages/server/src/main.ts');
const serverEntries: Record<Exclude<ServerKind, 'parley'>, string> = {
  ws: join(benchDir, 'src/servers/ws-baseline.ts'),
  socketio: join(benchDir, 'src/servers/socketio-server.ts'),
};
const loadgenEntry = join(benchDir, 'src/loadgen.ts');

// ── pinning ────────────────────────────────────────────────────────────────

export interface Pinning {
  enabled: boolean;
  serverCpu: string;
  clientCpu: string;
  note: string;
}

/** Server on core 0, load generators (and this process) on core 1, when taskset works and there are 2+ cores. */
export function detectPinning(): Pinning {
  const cores = availableParallelism();
  if (cores < 2) return { enabled: false, serverCpu: '', clientCpu: '', note: `unpinned: only ${cores} core` };
  try {
    execFileSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' });
    execFileSync('taskset', ['-c', '1', 'true'], { stdio: 'ignore' });
  } catch {
    return { enabled: false, serverCpu: '', clientCpu: '', note: 'unpinned: taskset is missing or refused' };
  }
  try {
    // This process only waits and reads /proc; keep it off the server's core too.
    execFileSync('taskset', ['-a', '-p', '-c', '1', String(process.pid)], { stdio: 'ignore' });
  } catch {
    // Not fatal: the orchestrator is idle while measuring.
  }
  return {
    enabled: true,
    serverCpu: '0',
    clientCpu: '1',
    note: 'servers pinned to CPU 0, load generators and orchestrator to CPU 1 (taskset)',
  };
}

function command(pin: string | undefined, args: string[]): [string, string[]] {
  return pin ? ['taskset', ['-c', pin, process.execPath, ...args]] : [process.execPath, args];
}

// ── /proc ──────────────────────────────────────────────────────────────────

let clockTicks = 100;
try {
  clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // 100 on every Linux this runs on.
}

/** utime + stime of the whole process (all its threads), in seconds; 0 once it is gone. */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / clockTicks;
  } catch {
    return 0;
  }
}

/** stime alone, in seconds: the share of cpuSeconds spent in the kernel (socket writes and reads). */
export function systemCpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[12]) / clockTicks;
  } catch {
    return 0;
  }
}

/** Resident set size in bytes. */
export function rssBytes(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const match = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

// ── ports and readiness ────────────────────────────────────────────────────

async function waitReady(url: string, exited: Promise<unknown>, output: string[], timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let gone = false;
  void exited.then(() => {
    gone = true;
  });
  let last = '';
  while (Date.now() < deadline) {
    if (gone) throw new Error(`exited during start:\n${output.join('').slice(-2000)}`);
    try {
      const response = await fetch(`${url}/readyz`);
      if (response.status === 200) return;
      last = `status ${response.status}`;
    } catch (error) {
      last = (error as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} not ready after ${timeoutMs} ms (${last}):\n${output.join('').slice(-2000)}`);
}

// ── servers ────────────────────────────────────────────────────────────────

export interface ServerProcess {
  kind: ServerKind;
  pid: number;
  port: number;
  /** http://127.0.0.1:<port> */
  url: string;
  /** ws://127.0.0.1:<port> */
  wsUrl: string;
  output: string[];
  exited: Promise<number | string>;
  /** The inspector's port, when started with `inspect` (for memoryAfterGc). */
  inspectPort?: number | undefined;
  stop(): Promise<void>;
}

/**
 * A full garbage collection in the server, through its inspector, then its
 * `process.memoryUsage()`: the live heap and the RSS with no garbage in them.
 * RSS read without it also counts whatever the last connects left for the
 * next collection, which moves by a KiB per connection from run to run.
 */
export async function memoryAfterGc(server: ServerProcess): Promise<{ rss: number; heapUsed: number }> {
  if (server.inspectPort === undefined) throw new Error(`${server.kind} was not started with an inspector`);
  const targets = (await (await fetch(`http://127.0.0.1:${server.inspectPort}/json/list`)).json()) as Array<{
    webSocketDebuggerUrl: string;
  }>;
  const ws = new WebSocket(targets[0]!.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  let id = 0;
  const call = (method: string, params: object = {}) =>
    new Promise<{ result?: { result?: { value?: string } } }>((resolve, reject) => {
      const mine = ++id;
      const timer = setTimeout(() => reject(new Error(`inspector: no answer to ${method}`)), 30_000);
      ws.on('message', function answer(raw: Buffer) {
        const message = JSON.parse(String(raw)) as { id?: number };
        if (message.id !== mine) return;
        clearTimeout(timer);
        ws.off('message', answer);
        resolve(message as { result?: { result?: { value?: string } } });
      });
      ws.send(JSON.stringify({ id: mine, method, params }));
    });
  try {
    await call('HeapProfiler.collectGarbage');
    const reply = await call('Runtime.evaluate', {
      expression: 'JSON.stringify(process.memoryUsage())',
      returnByValue: true,
    });
    const usage = JSON.parse(reply.result?.result?.value ?? '{}') as { rss?: number; heapUsed?: number };
    if (typeof usage.rss !== 'number' || typeof usage.heapUsed !== 'number')
      throw new Error('inspector: no memoryUsage');
    return { rss: usage.rss, heapUsed: usage.heapUsed };
  } finally {
    ws.close();
  }
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** Kills `child` (only ever one this module started) and waits for it to be gone. */
async function kill(child: ChildProcess, exited: Promise<unknown>): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  running.delete(child);
}

/**
 * Where Parley's CPU profiles go (`--profile`): each Parley process then runs
 * with `--cpu-prof` and is stopped with SIGTERM, so that it exits by itself
 * and writes its profile, instead of being killed.
 */
let profileDir: string | undefined;

export function profileParleyInto(dir: string): void {
  profileDir = dir;
}

/** SIGTERM, then SIGKILL if the process has not exited within `graceMs`. */
async function terminate(child: ChildProcess, exited: Promise<unknown>, graceMs: number): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, graceMs))]);
  await kill(child, exited);
}

export async function startServer(
  kind: ServerKind,
  env: Record<string, string>,
  pin: string | undefined,
  options: { inspect?: boolean } = {},
) {
  const port = await freePort();
  const entry = kind === 'parley' ? parleyEntry : serverEntries[kind];
  const profiling = kind === 'parley' && profileDir !== undefined;
  const profileArgs = profiling ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
  const inspectPort = options.inspect ? await freePort() : undefined;
  const inspectArgs = inspectPort === undefined ? [] : [`--inspect=127.0.0.1:${inspectPort}`];
  const [file, args] = command(pin, [...profileArgs, ...inspectArgs, '--import', 'tsx', entry]);
  const child = spawn(file, args, {
    cwd: repoRoot,
    env: { ...process.env, NODE_ENV: 'development', ...env, HOST: '127.0.0.1', PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  const output: string[] = [];
  const keep = (chunk: Buffer) => {
    output.push(String(chunk));
    if (output.length > 200) output.splice(0, output.length - 200);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<number | string>((done) =>
    child.once('exit', (code, signal) => done(code ?? signal ?? -1)),
  );
  const url = `http://127.0.0.1:${port}`;
  const server: ServerProcess = {
    kind,
    pid: child.pid as number,
    port,
    url,
    wsUrl: `ws://127.0.0.1:${port}`,
    output,
    exited,
    inspectPort,
    stop: () => (profiling ? terminate(child, exited, 20_000) : kill(child, exited)),
  };
  try {
    await waitReady(url, exited, output);
  } catch (error) {
    await server.stop();
    throw new Error(`${kind} server: ${(error as Error).message}`);
  }
  return server;
}

// ── load generators ────────────────────────────────────────────────────────

type Reply<T extends FromLoadgen['t']> = Extract<FromLoadgen, { t: T }>;

export class Loadgen {
  readonly pid: number;
  private readonly waiters = new Map<string, Array<(message: FromLoadgen) => void>>();
  private readonly backlog: FromLoadgen[] = [];
  readonly exited: Promise<number | string>;

  private constructor(private readonly child: ChildProcess) {
    this.pid = child.pid as number;
    running.add(child);
    this.exited = new Promise((done) => child.once('exit', (code, signal) => done(code ?? signal ?? -1)));
    child.on('message', (message: FromLoadgen) => {
      const queue = this.waiters.get(message.t);
      const waiter = queue?.shift();
      if (waiter) waiter(message);
      else this.backlog.push(message);
    });
  }

  static start(pin: string | undefined): Loadgen {
    // BENCH_LOADGEN_NODE_ARGS: extra node flags for profiling the generator (say --cpu-prof).
    const extra = (process.env.BENCH_LOADGEN_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const [file, args] = command(pin, [
      ...extra,
      '--max-old-space-size=4096',
      '--conditions=@parley/source',
      '--import',
      'tsx',
      loadgenEntry,
    ]);
    return new Loadgen(spawn(file, args, { cwd: repoRoot, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  }

  send(message: ToLoadgen): void {
    this.child.send(message);
  }

  /** The next reply of type `t` (one already received counts). */
  next<T extends FromLoadgen['t']>(t: T, timeoutMs: number): Promise<Reply<T>> {
    const index = this.backlog.findIndex((m) => m.t === t);
    if (index >= 0) return Promise.resolve(this.backlog.splice(index, 1)[0] as Reply<T>);
    return new Promise((resolveReply, reject) => {
      const timer = setTimeout(() => {
        const queue = this.waiters.get(t) ?? [];
        const at = queue.indexOf(done);
        if (at >= 0) queue.splice(at, 1);
        reject(new Error(`load generator ${this.pid}: no "${t}" within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (message: FromLoadgen) => {
        clearTimeout(timer);
        resolveReply(message as Reply<T>);
      };
      void this.exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`load generator ${this.pid} exited (${code}) while waiting for "${t}"`));
      });
      const queue = this.waiters.get(t) ?? [];
      queue.push(done);
      this.waiters.set(t, queue);
    });
  }

  request<T extends FromLoadgen['t']>(message: ToLoadgen, t: T, timeoutMs: number): Promise<Reply<T>> {
    const reply = this.next(t, timeoutMs);
    this.send(message);
    return reply;
  }

  async stop(): Promise<void> {
    if (this.child.connected) this.send({ t: 'exit' });
    await Promise.race([this.exited, new Promise((r) => setTimeout(r, 3000))]);
    await kill(this.child, this.exited);
  }
}
