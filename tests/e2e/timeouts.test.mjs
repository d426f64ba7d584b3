// Timeouts that know about streams: a slow first byte is fine below --first-byte-timeout (reasoning models
// think), a silent stream is cut at --idle-timeout (visible truncation, upstream cancelled), and slow
// clients are dropped at --head-timeout / --body-timeout / --keepalive-timeout.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, newId, rawHttp, rawExchange, RawConn, req, sleep, T } from './lib.mjs';

const ctx = setup({ ferryArgs: ['--first-byte-timeout', '3s', '--idle-timeout', '1s', '--head-timeout', '1s',
  '--body-timeout', '1s', '--keepalive-timeout', '1s'] });

test('a slow first byte under --first-byte-timeout is waited for', T, async () => {
  const r = await rawHttp({ port: ctx.ferry.port, method: 'POST', path: '/v1/chat/completions',
    headers: { 'content-type': 'application/json', 'x-mock-delay-ms': '1800' }, body: JSON.stringify({ model: 'm', messages: [] }) });
  assert.equal(r.status, 200, 'not cut by the (1 s) idle timeout either: the wait for the head is first-byte');
});

test('a stream that goes silent past --idle-timeout is truncated and cancelled upstream', T, async () => {
  const id = newId();
  const mark = ctx.ferry.mark();
  const body = JSON.stringify({ model: 'm', stream: true, messages: [] });
  const t0 = Date.now();
  const w = await rawExchange(ctx.ferry.port, req('POST', '/v1/chat/completions', [['Host', 'x'], ['x-test-id', id],
    ['x-mock-chunks', '5'], ['x-mock-chunk-delay-ms', '4000'], ['Content-Type', 'application/json'], ['Content-Length', body.length]], body),
  { waitClose: true, timeout: 8000 });
  assert.equal(w.timedOut, false, 'ferry ended the stalled stream');
  assert.ok(Date.now() - t0 < 4000, `cut after ${Date.now() - t0} ms, before the next chunk came`);
  assert.ok(w.partial, `head sent, then truncated: ${w.text.slice(0, 200)}`);
  assert.doesNotMatch(w.text, /\[DONE\]/);
  // (The previous test's line may land after the mark.)
  const { fields } = await ctx.ferry.waitLog(mark, (x) => x.end !== 'ok');
  assert.equal(fields.end, 'timeout');
  await ctx.mock.waitEntry(id, (e) => e.client_aborted, { timeout: 3000, what: 'upstream cancelled' });
});

test('chunks slower than nothing but faster than --idle-timeout are fine', T, async () => {
  const body = JSON.stringify({ model: 'm', stream: true, messages: [] });
  const w = await rawExchange(ctx.ferry.port, req('POST', '/v1/chat/completions', [['Host', 'x'],
    ['x-mock-chunks', '4'], ['x-mock-chunk-delay-ms', '600'], ['Content-Type', 'application/json'], ['Content-Length', body.length]], body),
  { count: 1, timeout: 8000 });
  assert.equal(w.responses[0]?.status, 200);
  assert.match(w.responses[0].text, /data: \[DONE\]/);
});

test('a client that stalls in the head is dropped after --head-timeout (408 or close)', T, async () => {
  await ctx.mock.reset();
  const t0 = Date.now();
  const w = await rawExchange(ctx.ferry.port, 'GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow', { waitClose: true, timeout: 5000 });
  assert.equal(w.timedOut, false, 'connection closed by ferry');
  assert.ok(Date.now() - t0 < 4000);
  if (w.responses.length) assert.equal(w.responses[0].status, 408);
  assert.equal((await ctx.mock.log()).length, 0);
});

test('a client that stalls mid-body is dropped after --body-timeout and the upstream cancelled', T, async () => {
  const id = newId();
  const t0 = Date.now();
  const w = await rawExchange(ctx.ferry.port, req('POST', '/v1/files', [['Host', 'x'], ['x-test-id', id],
    ['Content-Length', '100000']], 'only a little'), { waitClose: true, timeout: 6000 });
  assert.equal(w.timedOut, false, 'connection closed by ferry');
  assert.ok(Date.now() - t0 < 5000);
  if (w.responses.length) assert.ok([408, 400].includes(w.responses[0].status), `status ${w.responses[0].status}`);
  const entries = await ctx.mock.entries(id);
  if (entries.length) await ctx.mock.waitEntry(id, (e) => e.client_aborted, { timeout: 3000, what: 'upstream cancelled' });
});

test('an idle keep-alive connection is closed after --keepalive-timeout', T, async () => {
  const c = new RawConn(ctx.ferry.port);
  try {
    await c.connected;
    c.write('GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal((await c.next()).status, 200);
    const t0 = Date.now();
    assert.ok(await c.waitClosed(4000), 'closed');
    assert.ok(Date.now() - t0 >= 500, 'not before the timeout');
  } finally {
    c.close();
  }
  await sleep(0);
});
