import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startServer, type TestServer } from './helpers.ts';

/**
 * GET /rooms/{room}/messages with empty query values: a form submitted with
 * empty fields sends `?before=&limit=`, which means "not given", not 400.
 */
describe('history query values', () => {
  let server: TestServer;
  let token: string;
  const offsetsOf = (body: { messages: Array<{ offset: number }> }) => body.messages.map((m) => m.offset);

  before(async () => {
    server = await startServer();
    token = await server.token('alice');
    for (let n = 1; n <= 5; n++) {
      const posted = await server.http('POST', '/rooms/empty-query/messages', { token, body: { data: { n } } });
      assert.equal(posted.status, 201, posted.text);
    }
  });
  after(async () => {
    await server?.close();
  });

  test('empty before and limit are absent: the latest page', async () => {
    const page = await server.http('GET', '/rooms/empty-query/messages?before=&limit=', { token });
    assert.equal(page.status, 200, page.text);
    assert.deepEqual(offsetsOf(page.body), [1, 2, 3, 4, 5]);
    assert.equal(page.body.hasMore, false);
    const bare = await server.http('GET', '/rooms/empty-query/messages?before&limit', { token });
    assert.equal(bare.status, 200, bare.text);
    assert.deepEqual(bare.body, page.body, 'a key without "=" is empty too');
  });

  test('one empty value, the other given', async () => {
    const latest2 = await server.http('GET', '/rooms/empty-query/messages?before=&limit=2', { token });
    assert.equal(latest2.status, 200, latest2.text);
    assert.deepEqual(offsetsOf(latest2.body), [4, 5]);
    assert.equal(latest2.body.hasMore, true);
    const older = await server.http('GET', '/rooms/empty-query/messages?before=3&limit=', { token });
    assert.equal(older.status, 200, older.text);
    assert.deepEqual(offsetsOf(older.body), [1, 2]);
    assert.equal(older.body.hasMore, false);
  });

  test('values that are given must still be valid', async () => {
    for (const query of ['limit=0', 'limit=101', 'limit=x', 'before=0', 'before=-1', 'before=1.5', 'before=abc']) {
      const response = await server.http('GET', `/rooms/empty-query/messages?${query}`, { token });
      assert.equal(response.status, 400, `${query}: ${response.text}`);
      assert.equal(response.body.error.code, 'bad_request');
    }
  });
});
