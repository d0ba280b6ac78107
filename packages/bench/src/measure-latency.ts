import WebSocket from 'ws';
import { startLocalCluster } from '../../../deploy/local-cluster.ts';
import { TokenService } from '../../server/src/auth/tokens.ts';
import { createTestDatabase } from '../../server/test/support/postgres.ts';
import { cleanupRedisPrefix, uniqueRedisPrefix } from '../../server/test/support/redis.ts';

const secret = 'measure-secret-measure-secret-measure-secret-0000';
const tokens = new TokenService({ secret, accessTokenTtl: 3600 });
const db = await createTestDatabase();
const prefix = uniqueRedisPrefix('meas');
const cluster = await startLocalCluster({
  instances: 2,
  nginx: false,
  databaseUrl: db.url,
  redisUrl: 'redis://127.0.0.1:6379',
  env: {
    JWT_SECRET: secret,
    REDIS_KEY_PREFIX: prefix,
    LOG_LEVEL: 'warn',
    RATE_LIMIT_PER_SEC: '100000',
    RATE_LIMIT_BURST: '100000',
    MAX_CONNECTIONS_PER_USER: '100000',
  },
});
const [a, b] = cluster.instances;

async function open(url: string, user: string) {
  const { token } = await tokens.issue(user, 'user');
  const ws = new WebSocket(`${url.replace('http', 'ws')}/ws`, { headers: { authorization: `Bearer ${token}` } });
  await new Promise((r) => ws.once('message', r));
  return ws;
}
async function run(label: string, subUrl: string, channel: string, rate: number, seconds: number, subs: number) {
  const latencies: number[] = [];
  const readers = [];
  for (let i = 0; i < subs; i++) {
    const ws = await open(subUrl, `r${i}`);
    ws.send(JSON.stringify({ type: 'subscribe', channel, id: 1 }));
    await new Promise((r) => ws.once('message', r));
    ws.on('message', (d: Buffer) => {
      const s = d.toString();
      const m = /"sent":(\d+\.?\d*)/.exec(s);
      if (m) latencies.push(performance.timeOrigin + performance.now() - Number(m[1]));
    });
    readers.push(ws);
  }
  const pub = await open(a!.url, 'writer');
  const total = rate * seconds;
  const interval = 1000 / rate;
  const start = performance.now();
  for (let i = 0; i < total; i++) {
    const due = start + i * interval;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    pub.send(JSON.stringify({ type: 'publish', channel, data: { sent: performance.timeOrigin + performance.now() } }));
  }
  const deadline = Date.now() + 10000;
  while (latencies.length < total * subs && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  latencies.sort((x, y) => x - y);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!.toFixed(2);
  console.log(
    `${label}: rate ${rate}/s x ${subs} subscribers, delivered ${latencies.length}/${total * subs}, p50 ${q(0.5)} ms, p99 ${q(0.99)} ms, max ${q(0.999999)} ms`,
  );
  for (const r of readers) r.terminate();
  pub.terminate();
}
await run('single-instance (publisher and subscribers on A)', a!.url, 'room:same', 200, 10, 50);
await run('cross-instance (publisher on A, subscribers on B)', b!.url, 'room:cross', 200, 10, 50);
await cluster.stop();
await db.drop();
await cleanupRedisPrefix(prefix);
process.exit(0);
