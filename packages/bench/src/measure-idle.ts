import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { freePort, waitReady } from '../../../deploy/local-cluster.ts';
import { TokenService } from '../../server/src/auth/tokens.ts';

const N = Number(process.argv[2] ?? 5000);
const secret = 'measure-secret-measure-secret-measure-secret-0000';
const port = await freePort();
const child = spawn(
  process.execPath,
  ['--import', 'tsx', new URL('../../server/src/main.ts', import.meta.url).pathname],
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
    stdio: 'inherit',
  },
);
await waitReady(`http://127.0.0.1:${port}`);
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))![1]) * 1024;
const cpu = () => {
  const f = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
};
const tokens = new TokenService({ secret, accessTokenTtl: 3600 });
const { token } = await tokens.issue('idle', 'user');
await new Promise((r) => setTimeout(r, 500));
const before = rss();
const sockets: WebSocket[] = [];
const t0 = Date.now();
for (let i = 0; i < N; i += 200) {
  await Promise.all(
    Array.from(
      { length: Math.min(200, N - i) },
      () =>
        new Promise<void>((resolve, reject) => {
          const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: { authorization: `Bearer ${token}` } });
          ws.once('message', () => resolve());
          ws.once('error', reject);
          sockets.push(ws);
        }),
    ),
  );
}
const connectSecs = (Date.now() - t0) / 1000;
await new Promise((r) => setTimeout(r, 2000));
const after = rss();
const cpu0 = cpu();
await new Promise((r) => setTimeout(r, 5000));
const cpu1 = cpu();
console.log(
  JSON.stringify({
    connections: N,
    rssBeforeMiB: +(before / 1048576).toFixed(1),
    rssAfterMiB: +(after / 1048576).toFixed(1),
    bytesPerConnection: Math.round((after - before) / N),
    connectPerSec: Math.round(N / connectSecs),
    idleCpuPercent: +(((cpu1 - cpu0) / 5) * 100).toFixed(2),
  }),
);
for (const s of sockets) s.terminate();
child.kill('SIGKILL');
process.exit(0);
