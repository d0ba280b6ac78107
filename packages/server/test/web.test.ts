import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import type { AppContext } from '../src/app.ts';
import { registerWebRoutes } from '../src/web.ts';

const ctx = { config: { instanceId: 'test-instance' } } as unknown as AppContext;

/** An app with one API route and the usual JSON not-found answer, plus the web routes for `distDir`. */
async function appWith(distDir: string): Promise<FastifyInstance> {
  const app = Fastify();
  app.get('/rooms', async () => ({ rooms: [] }));
  app.setNotFoundHandler((_request, reply) => {
    reply.code(404).send({ error: { code: 'not_found', message: 'no route' } });
  });
  registerWebRoutes(app, ctx, distDir);
  await app.ready();
  return app;
}

describe('GET / (the web client)', () => {
  const root = mkdtempSync(join(tmpdir(), 'parley-web-'));
  after(() => rmSync(root, { recursive: true, force: true }));

  test('without a build, / is a small page that says how to build the client', async () => {
    const app = await appWith(join(root, 'missing'));
    try {
      const page = await app.inject({ method: 'GET', url: '/' });
      assert.equal(page.statusCode, 200);
      assert.match(page.headers['content-type'] as string, /^text\/html/);
      assert.match(page.body, /npm run build -w @parley\/web/);
      assert.match(page.body, /test-instance/);
      assert.equal((await app.inject({ method: 'GET', url: '/rooms' })).statusCode, 200);
    } finally {
      await app.close();
    }
  });

  test('with a build, / is its index.html and its files are served; no other route is shadowed', async () => {
    const dist = join(root, 'dist');
    mkdirSync(join(dist, 'assets'), { recursive: true });
    writeFileSync(join(dist, 'index.html'), '<!doctype html><title>Parley web</title>');
    writeFileSync(join(dist, 'assets', 'index-abc123.js'), 'console.log("hi")');
    writeFileSync(join(dist, 'favicon.svg'), '<svg xmlns="http://www.w3.org/2000/svg"/>');
    const app = await appWith(dist);
    try {
      const index = await app.inject({ method: 'GET', url: '/' });
      assert.equal(index.statusCode, 200);
      assert.equal(index.body, '<!doctype html><title>Parley web</title>');
      assert.match(index.headers['content-type'] as string, /^text\/html/);
      assert.equal(index.headers['cache-control'], 'no-cache');
      assert.match(index.headers['content-security-policy'] as string, /script-src 'self'/);

      const bundle = await app.inject({ method: 'GET', url: '/assets/index-abc123.js' });
      assert.equal(bundle.statusCode, 200);
      assert.match(bundle.headers['content-type'] as string, /javascript/);
      assert.match(bundle.headers['cache-control'] as string, /immutable/);
      assert.equal(bundle.headers['content-security-policy'], undefined);

      const icon = await app.inject({ method: 'GET', url: '/favicon.svg' });
      assert.equal(icon.statusCode, 200);
      assert.doesNotMatch(icon.headers['cache-control'] as string, /immutable/);

      const rooms = await app.inject({ method: 'GET', url: '/rooms' });
      assert.deepEqual(rooms.json(), { rooms: [] });
      for (const url of ['/nope', '/assets/missing.js', '/../package.json']) {
        const missing = await app.inject({ method: 'GET', url });
        assert.equal(missing.statusCode, 404, url);
        assert.equal(missing.json().error.code, 'not_found', url);
      }
    } finally {
      await app.close();
    }
  });
});
