/**
 * The docker-compose topology from local processes, for machines without a
 * Docker engine: several Parley instances sharing this machine's Redis and
 * PostgreSQL, and a real nginx in front balancing HTTP and WebSockets.
 *
 *   npx tsx deploy/local-cluster.ts --instances 3 --port 8080 \
 *     --database postgres://postgres@127.0.0.1:5432/parley --redis redis://127.0.0.1:6379
 *
 * Ctrl-C stops everything it started. Tests import `startLocalCluster`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const serverEntry = join(root, 'packages/server/src/main.ts');

export interface ClusterOptions {
  instances: number;
  databaseUrl: string;
  redisUrl: string;
  /** nginx's port; 0 picks a free one. */
  port?: number;
  /** Extra environment for every instance (JWT_SECRET, REDIS_KEY_PREFIX, LOG_LEVEL…). */
  env?: Record<string, string>;
  /** Skip nginx (the instances only). */
  nginx?: boolean;
  log?: (line: string) => void;
}

export interface Instance {
  id: string;
  port: number;
  url: string;
  process: ChildProcess;
  /** Resolves with the exit code (or signal) when the process ends. */
  exited: Promise<number | string>;
  /** Output so far, for diagnosing a failure. */
  output: string[];
}

export interface LocalCluster {
  instances: Instance[];
  /** nginx's address, or the first instance's when nginx is off. */
  url: string;
  /** Starts another instance (or restarts one by id) with the cluster's settings. */
  startInstance(id?: string): Promise<Instance>;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

export async function waitReady(url: string, timeoutMs = 30000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const response = await fetch(`${url}/readyz`);
      if (response.status === 200) return;
      last = `status ${response.status}`;
    } catch (error) {
      last = (error as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} not ready after ${timeoutMs} ms (${last})`);
}

/**
 * deploy/nginx.conf, pointed at local ports: the same upstream, upgrade map
 * and proxy settings as the compose deployment, with a private prefix.
 */
export async function renderNginxConfig(prefix: string, port: number, upstreams: number[]): Promise<string> {
  const template = await readFile(join(root, 'deploy/nginx.conf'), 'utf8');
  const servers = upstreams.map((p) => `    server 127.0.0.1:${p} max_fails=1 fail_timeout=2s;`).join('\n');
  let conf = template
    .replace(/^( *server parley-\d+:8000[^\n]*\n)+/m, `${servers}\n`)
    .replace(/listen 80;/, `listen 127.0.0.1:${port};`)
    .replace(/worker_processes auto;/, 'worker_processes 1;')
    .replace(/worker_connections \d+;/, 'worker_connections 4096;')
    .replace(
      /http \{/,
      `http {\n  access_log off;\n${['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
        .map((kind) => `  ${kind}_temp_path ${prefix}/${kind};`)
        .join('\n')}`,
    );
  conf = `daemon off;\npid ${prefix}/nginx.pid;\nerror_log ${prefix}/error.log warn;\n${conf}`;
  if (!conf.includes(`127.0.0.1:${upstreams[0]}`))
    throw new Error('deploy/nginx.conf no longer has the expected upstream block');
  return conf;
}

export async function startLocalCluster(options: ClusterOptions): Promise<LocalCluster> {
  const log = options.log ?? (() => {});
  const instances: Instance[] = [];
  let nginx: ChildProcess | undefined;
  let prefix: string | undefined;
  let counter = 0;

  async function startInstance(id = `parley-${++counter}`): Promise<Instance> {
    const port = await freePort();
    const child = spawn(process.execPath, ['--import', 'tsx', serverEntry], {
      cwd: root,
      env: {
        ...process.env,
        LOG_LEVEL: 'warn',
        ...options.env,
        HOST: '127.0.0.1',
        PORT: String(port),
        INSTANCE_ID: id,
        DATABASE_URL: options.databaseUrl,
        REDIS_URL: options.redisUrl,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const output: string[] = [];
    child.stdout?.on('data', (d) => output.push(String(d)));
    child.stderr?.on('data', (d) => output.push(String(d)));
    const exited = new Promise<number | string>((done) =>
      child.once('exit', (code, signal) => done(code ?? signal ?? -1)),
    );
    const instance: Instance = { id, port, url: `http://127.0.0.1:${port}`, process: child, exited, output };
    const existing = instances.findIndex((i) => i.id === id);
    if (existing >= 0) instances[existing] = instance;
    else instances.push(instance);
    try {
      await Promise.race([
        waitReady(instance.url),
        exited.then((code) => {
          throw new Error(`${id} exited (${code}) during start:\n${output.join('')}`);
        }),
      ]);
    } catch (error) {
      child.kill('SIGKILL');
      throw error;
    }
    log(`${id} ready on ${instance.url} (pid ${child.pid})`);
    return instance;
  }

  async function stop(): Promise<void> {
    if (nginx && nginx.exitCode === null) {
      const ended = new Promise((r) => nginx?.once('exit', r));
      nginx.kill('SIGQUIT');
      await ended;
    }
    await Promise.all(
      instances.map(async (instance) => {
        if (instance.process.exitCode !== null || instance.process.signalCode !== null) return;
        instance.process.kill('SIGTERM');
        const timer = setTimeout(() => instance.process.kill('SIGKILL'), 15000);
        await instance.exited;
        clearTimeout(timer);
      }),
    );
    if (prefix) await rm(prefix, { recursive: true, force: true });
  }

  try {
    for (let i = 0; i < options.instances; i++) await startInstance();
    let url = instances[0]?.url ?? '';
    if (options.nginx !== false) {
      prefix = await mkdtemp(join(tmpdir(), 'parley-nginx-'));
      const port = options.port || (await freePort());
      const conf = join(prefix, 'nginx.conf');
      await writeFile(
        conf,
        await renderNginxConfig(
          prefix,
          port,
          instances.map((i) => i.port),
        ),
      );
      nginx = spawn('nginx', ['-c', conf, '-p', prefix], { stdio: ['ignore', 'ignore', 'pipe'] });
      const nginxErrors: string[] = [];
      nginx.stderr?.on('data', (d) => nginxErrors.push(String(d)));
      url = `http://127.0.0.1:${port}`;
      const nginxFailed = new Promise<never>((_, reject) => {
        nginx?.once('exit', (code) => reject(new Error(`nginx exited (${code}): ${nginxErrors.join('')}`)));
        // Not installed (ENOENT): say so now rather than after the readiness timeout.
        nginx?.once('error', (error) =>
          reject(new Error(`nginx did not start (${error.message}): install it (apt-get install nginx)`)),
        );
      });
      await Promise.race([waitReady(url, 10000), nginxFailed]);
      log(`nginx on ${url} → ${instances.map((i) => i.port).join(', ')}`);
    }
    return { instances, url, startInstance, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

function parseArgs(argv: string[]): ClusterOptions {
  const get = (name: string, fallback?: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : fallback;
  };
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(
      `Usage: npx tsx deploy/local-cluster.ts [--instances 3] [--port 8080] [--database URL] [--redis URL]\n\n` +
        'Starts N Parley instances on free ports sharing PostgreSQL and Redis, and nginx in front on --port.\n' +
        'Set JWT_SECRET in the environment so tokens work on every instance (a random one is used otherwise).\n',
    );
    process.exit(0);
  }
  return {
    instances: Number(get('instances', '3')),
    port: Number(get('port', '8080')),
    databaseUrl: get('database', process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/parley') as string,
    redisUrl: get('redis', process.env.REDIS_URL ?? 'redis://127.0.0.1:6379') as string,
    env: { JWT_SECRET: process.env.JWT_SECRET ?? `local-cluster-${Math.random().toString(36).slice(2)}-${Date.now()}` },
    log: (line) => process.stdout.write(`${line}\n`),
  };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const options = parseArgs(process.argv.slice(2));
  startLocalCluster(options).then(
    (cluster) => {
      process.stdout.write(`Parley cluster ready at ${cluster.url} (Ctrl-C to stop)\n`);
      const stop = () => cluster.stop().then(() => process.exit(0));
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    },
    (error) => {
      process.stderr.write(`local-cluster: ${(error as Error).message}\n`);
      process.exit(1);
    },
  );
}
