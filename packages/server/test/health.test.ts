import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startServer, type TestServer } from './helpers.ts';

/** /healthz and /readyz on the embedded defaults, and their place in /openapi.json. */
describe('health routes', () => {
  let server: TestServer;

  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.close();
  });

  test('/readyz checks the store, the broker and the presence store', async () => {
    const healthy = await server.http('GET', '/healthz');
    assert.equal(healthy.status, 200);
    assert.deepEqual(healthy.body, { status: 'ok' });
    const ready = await server.http('GET', '/readyz');
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.body, { status: 'ready', checks: { store: 'ok', broker: 'ok', presence: 'ok' } });
  });

  test('/healthz and /readyz are in /openapi.json with their response shapes', async () => {
    const spec = (await server.http('GET', '/openapi.json')).body;
    const healthz = spec.paths['/healthz']?.get;
    const readyz = spec.paths['/readyz']?.get;
    assert.ok(healthz, '/healthz is documented');
    assert.ok(readyz, '/readyz is documented');
    assert.deepEqual(healthz.tags, ['operations']);
    assert.equal(healthz.security, undefined, 'no credentials needed');
    const schemaOf = (operation: any, status: string) =>
      operation.responses[status]?.content?.['application/json']?.schema;
    assert.deepEqual(schemaOf(healthz, '200').required, ['status']);
    const ok = schemaOf(readyz, '200');
    const notReady = schemaOf(readyz, '503');
    assert.ok(ok && notReady, '200 and 503 are documented');
    assert.deepEqual(Object.keys(ok.properties.checks.properties).sort(), ['broker', 'instance', 'presence', 'store']);
    assert.deepEqual(notReady.required.sort(), ['checks', 'error', 'status']);
    assert.deepEqual(notReady.properties.error.required.sort(), ['code', 'message']);
  });

  test('/metrics is in /openapi.json too, and still answers Prometheus text', async () => {
    const spec = (await server.http('GET', '/openapi.json')).body;
    const metrics = spec.paths['/metrics']?.get;
    assert.ok(metrics, '/metrics is documented');
    assert.deepEqual(metrics.tags, ['operations']);
    assert.equal(metrics.security, undefined, 'open without SERVER_API_KEY');
    const response = await server.http('GET', '/metrics');
    assert.equal(response.status, 200);
    assert.match(response.text, /^# HELP parley_/m);
  });
});
