import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { startLocalCluster } from '../../../deploy/local-cluster.ts';
import { TokenService } from '../../server/src/auth/tokens.ts';

const secret = 'measure-secret-measure-secret-measure-secret-0000';
const tokens = new TokenService({ secret, accessTokenTtl: 3600 });
const SUBS = Number(process.argv[2] ?? 1000),
  RATE = Number(process.argv[3] ?? 100),
  SECS = 10;
const cluster = await startLocalCluster({
  instances: 1,
  nginx: false,
  databaseUrl: 'sqlite::memory:',
  redisUrl: '',
  env: {
    JWT_SECRET: secret,
    LOG_LEVEL: 'warn',
    RATE_LIMIT_PER_SEC: '100000',
    RATE_LIMIT_BURST: '100000',
    MAX_CONNECTIONS_PER_USER: '100000',
  },
});
const inst = cluster.instances[0]!;
const cpu = () => {
  const f = readFileSync(`/proc/${inst.process.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
};
const { token } = await tokens.issue('u', 'user');
let got = 0;
const readers: WebSocket[] = [];
for (let i = 0; i < SUBS; i += 100)
  await Promise.all(
    Array.from({ length: Math.min(100, SUBS - i) }, async () => {
      const ws = new WebSocket(inst.url.replace('http', 'ws') + '/ws', {
        headers: { authorization: `Bearer ${token}` },
      });
      await new Promise((r) => ws.once('message', r));
      ws.send(JSON.stringify({ type: 'subscribe', channel: 'room:cpu', id: 1 }));
      await new Promise((r) => ws.once('message', r));
      ws.on('message', () => {
        got++;
      });
      readers.push(ws);
    }),
  );
const pub = new WebSocket(inst.url.replace('http', 'ws') + '/ws', { headers: { authorization: `Bearer ${token}` } });
await new Promise((r) => pub.once('message', r));
await new Promise((r) => setTimeout(r, 1000));
got = 0;
const c0 = cpu();
const t0 = performance.now();
for (let i = 0; i < RATE * SECS; i++) {
  const wait = t0 + (i * 1000) / RATE - performance.now();
  if (wait > 1) await new Promise((r) => setTimeout(r, wait));
  pub.send(
    JSON.stringify({
      type: 'publish',
      channel: 'room:cpu',
      data: { text: 'hello there, this is a chat message of ordinary size', n: i },
    }),
  );
}
while (got < RATE * SECS * SUBS && performance.now() - t0 < (SECS + 10) * 1000)
  await new Promise((r) => setTimeout(r, 50));
const c1 = cpu();
console.log(
  JSON.stringify({
    subscribers: SUBS,
    publishesPerSec: RATE,
    deliveries: got,
    serverCpuSeconds: +(c1 - c0).toFixed(2),
    serverCpuMicrosPerDelivery: +(((c1 - c0) * 1e6) / got).toFixed(2),
  }),
);
for (const r of readers) r.terminate();
pub.terminate();
await cluster.stop();
process.exit(0);
