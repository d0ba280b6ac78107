/**
 * What one idle connection keeps alive on the server's V8 heap, by kind of
 * object: the server takes a heap snapshot (after a full GC) before and after
 * N connections open and join rooms of 100, and the difference is divided by
 * N. RSS (what the idle scenario reports) also counts garbage not yet
 * collected and native memory; this shows the live JavaScript objects only,
 * which is where a server's own per-connection state is.
 *
 *   [HEARTBEAT_MS=1000] node --import tsx packages/bench/src/measure-heap.ts [parley|ws|socketio] [N=2000] [--by-holder]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { freePort, waitReady } from '../../../deploy/local-cluster.ts';
import { TokenService } from '../../server/src/auth/tokens.ts';

type Kind = 'parley' | 'ws' | 'socketio';
const kind = (process.argv[2] ?? 'parley') as Kind;
const N = Number(process.argv[3] ?? 2000);
/** `--by-holder`: objects too are named after what holds them (`object Object in Connection .principal`). */
const byHolder = process.argv.includes('--by-holder');
if (!['parley', 'ws', 'socketio'].includes(kind) || !Number.isInteger(N) || N < 1) {
  console.error('usage: measure-heap.ts [parley|ws|socketio] [N]');
  process.exit(2);
}

const secret = 'measure-secret-measure-secret-measure-secret-0000';
const dir = mkdtempSync(join(tmpdir(), 'parley-heap-'));
const port = await freePort();
const entry: Record<Kind, string> = {
  parley: new URL('../../server/src/main.ts', import.meta.url).pathname,
  ws: new URL('./servers/ws-baseline.ts', import.meta.url).pathname,
  socketio: new URL('./servers/socketio-server.ts', import.meta.url).pathname,
};
const child: ChildProcess = spawn(
  process.execPath,
  ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${dir}`, '--import', 'tsx', entry[kind]],
  {
    env: {
      ...process.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      DATABASE_URL: 'sqlite::memory:',
      JWT_SECRET: secret,
      LOG_LEVEL: 'warn',
      MAX_CONNECTIONS_PER_USER: '100000',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  },
);
const base = `http://127.0.0.1:${port}`;
await waitReady(base);

/** Signals the server and waits for its snapshot file to be complete. */
async function snapshot(): Promise<string> {
  const before = new Set(readdirSync(dir));
  child.kill('SIGUSR2');
  for (;;) {
    await new Promise((r) => setTimeout(r, 250));
    const file = readdirSync(dir).find((f) => f.endsWith('.heapsnapshot') && !before.has(f));
    if (!file) continue;
    try {
      const text = readFileSync(join(dir, file), 'utf8');
      JSON.parse(text);
      return text;
    } catch {
      // still being written
    }
  }
}

/** Self size and count per (node type, name); objects are named by constructor. */
function summarize(text: string): Map<string, { count: number; bytes: number }> {
  const snap = JSON.parse(text) as {
    snapshot: {
      meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] };
    };
    nodes: number[];
    edges: number[];
    strings: string[];
  };
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  const sizeAt = fields.indexOf('self_size');
  const countAt = fields.indexOf('edge_count');
  const edgeWidth = snap.snapshot.meta.edge_fields.length;
  const edgeTypes = snap.snapshot.meta.edge_types[0];
  const edgeTypeAt = snap.snapshot.meta.edge_fields.indexOf('type');
  const edgeNameAt = snap.snapshot.meta.edge_fields.indexOf('name_or_index');
  const edgeToAt = snap.snapshot.meta.edge_fields.indexOf('to_node');
  // Arrays (backing stores) and hidden objects are named after what holds them: `Connection.properties`, `Map.table`.
  const holder = new Map<number, string>();
  const holderIndex = new Map<number, number>();
  for (let i = 0, e = 0; i < snap.nodes.length; i += width) {
    const owner = `${types[snap.nodes[i + typeAt]!]} ${snap.strings[snap.nodes[i + nameAt]!]}`.slice(0, 48);
    for (let k = 0; k < snap.nodes[i + countAt]!; k++, e += edgeWidth) {
      const to = snap.edges[e + edgeToAt]!;
      const edgeType = edgeTypes[snap.edges[e + edgeTypeAt]!];
      const edgeName =
        edgeType === 'element' || edgeType === 'hidden' ? '[]' : snap.strings[snap.edges[e + edgeNameAt]!];
      if (!holder.has(to)) {
        holder.set(to, `${owner} .${edgeName}`);
        holderIndex.set(to, i);
      }
    }
  }
  // An array's elements: whose array it is.
  const elementsOf = (i: number) =>
    byHolder && holder.get(i) === 'object Array .elements'
      ? ` of ${holder.get(holderIndex.get(i) as number) ?? '?'}`
      : '';
  const out = new Map<string, { count: number; bytes: number }>();
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + typeAt]!]!;
    const name = snap.strings[snap.nodes[i + nameAt]!]!;
    const key =
      type === 'array' || type === 'hidden' || type === 'code' || (byHolder && type === 'object')
        ? `${type} ${type === 'object' ? `${name} ` : ''}in ${holder.get(i) ?? '?'}${elementsOf(i)}`
        : type === 'object' || type === 'closure' || type === 'native'
          ? `${type} ${name}`
          : type;
    const slot = out.get(key) ?? { count: 0, bytes: 0 };
    slot.count++;
    slot.bytes += snap.nodes[i + sizeAt]!;
    out.set(key, slot);
  }
  return out;
}

function openOne(i: number, token: string): Promise<WebSocket> {
  const room = `r${Math.floor(i / 100)}`;
  const url =
    kind === 'parley'
      ? `ws://127.0.0.1:${port}/ws`
      : kind === 'ws'
        ? `ws://127.0.0.1:${port}/?room=${room}`
        : `ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket&room=${room}`;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      perMessageDeflate: false,
      localAddress: `127.0.0.${2 + (i % 8)}`,
      headers: kind === 'parley' ? { authorization: `Bearer ${token}` } : {},
    });
    ws.on('error', reject);
    if (kind === 'ws') ws.on('open', () => resolve(ws));
    ws.on('message', (raw: Buffer) => {
      const text = raw.toString();
      if (kind === 'parley') {
        if (text.includes('"welcome"')) ws.send(JSON.stringify({ type: 'subscribe', channel: `room:${room}`, id: 1 }));
        else if (text.includes('"reply"')) resolve(ws);
      } else if (text === '2') ws.send('3');
      else if (text.startsWith('0{')) ws.send('40');
      else if (text.startsWith('40')) resolve(ws);
    });
  });
}

const { token } = await new TokenService({ secret, accessTokenTtl: 3600 }).issue('heap', 'user');
const sockets: WebSocket[] = [];
await openOne(0, token).then((ws) => ws.close()); // warm the paths a first connection compiles
const empty = summarize(await snapshot());
for (let i = 0; i < N; i += 100) {
  sockets.push(...(await Promise.all(Array.from({ length: Math.min(100, N - i) }, (_, j) => openOne(i + j, token)))));
}
// Time for one heartbeat, when HEARTBEAT_MS is short, to do what it does to idle connections.
await new Promise((r) => setTimeout(r, Math.min(5000, 1.5 * Number(process.env.HEARTBEAT_MS ?? 0))));
const full = summarize(await snapshot());

const rows = [...full.entries()]
  .map(([key, after]) => {
    const before = empty.get(key) ?? { count: 0, bytes: 0 };
    return { key, count: (after.count - before.count) / N, bytes: (after.bytes - before.bytes) / N };
  })
  .filter((r) => Math.abs(r.bytes) >= 4)
  .sort((a, b) => b.bytes - a.bytes);
const total = rows.reduce((s, r) => s + r.bytes, 0);
console.log(`${kind}: ${N} connections, live V8 heap ${total.toFixed(0)} bytes per connection`);
for (const r of rows.slice(0, 80))
  console.log(`${r.bytes.toFixed(0).padStart(7)} B ${r.count.toFixed(2).padStart(6)}×  ${r.key}`);

for (const ws of sockets) ws.terminate();
child.kill('SIGKILL');
rmSync(dir, { recursive: true, force: true });
process.exit(0);
