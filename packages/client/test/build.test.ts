/**
 * The package as published: `npm run build` output, resolved through
 * package.json `exports` by plain `node` (no tsx, no TypeScript), and its
 * .d.ts files by a consumer's type checker, with nothing of @parley/server.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startServer, type TestServer } from '@parley/server/test-helpers';

const run = promisify(execFile);
const CLIENT = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);
const TSC = join(dirname(require.resolve('typescript/package.json')), 'bin', 'tsc');
const WS = dirname(require.resolve('ws/package.json'));

let dir: string;
let server: TestServer;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'parley-client-build-'));
  server = await startServer();
});

after(async () => {
  await server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** A plain child process: no tsx loader, none of this process's flags. */
function plainNode(args: string[], cwd: string, env: Record<string, string> = {}) {
  return run(process.execPath, args, { cwd, env: { PATH: process.env.PATH ?? '', ...env }, timeout: 60_000 });
}

test('the build is self-contained and runs on plain Node with ws against a real server', async () => {
  // An app with the package installed: node_modules/@parley/client holds package.json and dist/ only.
  const pkg = join(dir, 'node_modules', '@parley', 'client');
  await mkdir(pkg, { recursive: true });
  await copyFile(join(CLIENT, 'package.json'), join(pkg, 'package.json'));
  await plainNode([TSC, '-p', join(CLIENT, 'tsconfig.build.json'), '--outDir', join(pkg, 'dist')], CLIENT);
  await symlink(WS, join(dir, 'node_modules', 'ws'), 'dir');

  const files = await readdir(join(pkg, 'dist'));
  assert.ok(files.includes('index.js') && files.includes('index.d.ts'), `dist has ${files.join(', ')}`);
  for (const file of files.filter((f) => f.endsWith('.js') || f.endsWith('.d.ts'))) {
    const text = await readFile(join(pkg, 'dist', file), 'utf8');
    assert.doesNotMatch(text, /(from\s+|import\(\s*)['"]@parley\/server/, `${file} imports nothing of the server`);
    if (file.endsWith('.js')) assert.doesNotMatch(text, /from\s+['"]\.[^'"]*\.ts['"]/, `${file} imports .js, not .ts`);
  }

  await writeFile(
    join(dir, 'app.mjs'),
    `import { ParleyClient, ParleyError } from '@parley/client';
import WebSocket from 'ws';
const client = new ParleyClient({ url: process.env.PARLEY_WS, token: process.env.PARLEY_TOKEN, WebSocket });
const pushed = new Promise((resolve) => client.on('message', resolve));
client.connect();
await client.subscribe('room:built');
const stored = await client.publish('room:built', { text: 'from plain node' });
const message = await pushed;
const error = await client.history('room:never-made').catch((e) => e);
client.close();
console.log(JSON.stringify({
  resolved: import.meta.resolve('@parley/client'),
  offset: stored.offset,
  pushed: message.data,
  parleyError: error instanceof ParleyError,
  code: error.code,
}));
`,
  );
  const { stdout } = await plainNode(['app.mjs'], dir, {
    PARLEY_WS: `${server.wsUrl}/ws`,
    PARLEY_TOKEN: await server.token('plain'),
  });
  const result = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}');
  assert.match(result.resolved, /\/node_modules\/@parley\/client\/dist\/index\.js$/, 'exports resolve to dist');
  assert.equal(result.offset, 1);
  assert.deepEqual(result.pushed, { text: 'from plain node' });
  assert.equal(result.parleyError, true);
  assert.equal(result.code, 'not_found');

  // A TypeScript consumer gets the types from dist/*.d.ts through the same exports.
  await writeFile(
    join(dir, 'consumer.ts'),
    `import { ParleyClient, type StoredMessage, type ClientErrorCode } from '@parley/client';
const client = new ParleyClient({ url: 'ws://localhost/ws', token: () => 'token' });
const stored: Promise<StoredMessage> = client.publish('room:x', { text: 'hi' }, { idempotencyKey: 'k' });
const code: ClientErrorCode = 'timeout';
export { stored, code };
`,
  );
  await writeFile(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        target: 'ES2022',
        lib: ['ES2023', 'DOM'],
        types: [],
        strict: true,
        noEmit: true,
        skipLibCheck: false,
      },
      files: ['consumer.ts'],
    }),
  );
  await writeFile(join(dir, 'package.json'), JSON.stringify({ type: 'module', private: true }));
  await plainNode([TSC, '-p', join(dir, 'tsconfig.json')], dir);
});
