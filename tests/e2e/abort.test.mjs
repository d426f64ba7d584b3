// Client aborts: whatever the phase (waiting for the upstream's head, mid-stream, mid-upload), ferry cancels
// the upstream transfer promptly (the mock logs client_aborted) and logs end=client_closed; many aborts in a
// row leave ferry healthy.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { setup, sdk, newId, RawConn, rawHttp, sleep, req, waitFor, header, T } from './lib.mjs';

const ctx = setup();
const chat = (stream) => ({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'long' }], stream });

test('abort mid-stream (SDK): the upstream sees its client go away within ~1 s', T, async () => {
  const client = await sdk(ctx.ferry);
  const id = newId();
  const mark = ctx.ferry.mark();
  const stream = await client.chat.completions.create(chat(true),
    { headers: { 'x-test-id': id, 'x-mock-chunks': '100', 'x-mock-chunk-delay-ms': '100' } });
  let n = 0;
  let abortedAt = 0;
  try {
    for await (const c of stream) {
      if (c.choices[0]?.delta?.content) n++;
      if (n === 2) {
        abortedAt = performance.now();
        stream.controller.abort();
      }
    }
  } catch (e) {
    if (e.name !== 'AbortError' && !/abort/i.test(String(e))) throw e;
  }
  assert.ok(abortedAt > 0, 'aborted after two tokens');
  const e = await ctx.mock.waitEntry(id, (x) => x.client_aborted, { timeout: 5000, what: 'client_aborted' });
  const took = performance.now() - abortedAt;
  assert.ok(took <= 1500, `the mock saw the abort ${took.toFixed(0)} ms after the client left (expected ≤ ~1 s)`);
  assert.equal(e.completed, false);
  const { fields } = await ctx.ferry.waitLog(mark, (f) => f.path === '/v1/chat/completions' && f.end !== 'ok');
  assert.equal(fields.end, 'client_closed');
});

test('abort while waiting for the upstream\'s head → upstream cancelled', T, async () => {
  const id = newId();
  const mark = ctx.ferry.mark();
  const c = new RawConn(ctx.ferry.port);
  await c.connected;
  const body = JSON.stringify(chat(false));
  c.write(req('POST', '/v1/chat/completions', [['Host', 'x'], ['x-test-id', id], ['x-mock-delay-ms', '20000'],
    ['Content-Type', 'application/json'], ['Content-Length', body.length]], body));
  await ctx.mock.waitEntry(id, () => true, { what: 'the request to reach the mock' });
  await sleep(200);
  const t0 = performance.now();
  c.close();
  await ctx.mock.waitEntry(id, (x) => x.client_aborted, { timeout: 5000, what: 'client_aborted' });
  const took = performance.now() - t0;
  assert.ok(took <= 1500, `upstream cancelled ${took.toFixed(0)} ms after the client left`);
  const { fields } = await ctx.ferry.waitLog(mark, (f) => f.end !== 'ok');
  assert.equal(fields.end, 'client_closed');
  assert.equal(fields.status === '200', false, 'not logged as a success');
});

test('abort mid-upload → upstream cancelled, no complete request upstream', T, async () => {
  const id = newId();
  const c = new RawConn(ctx.ferry.port);
  await c.connected;
  c.write(req('POST', '/v1/files', [['Host', 'x'], ['x-test-id', id], ['Content-Type', 'application/octet-stream'],
    ['Content-Length', 50 * 1024 * 1024]]));
  c.write(Buffer.alloc(2 * 1024 * 1024, 'u'));
  await ctx.mock.waitEntry(id, (x) => x.body_bytes > 0, { what: 'upload bytes at the mock' });
  const t0 = performance.now();
  c.close();
  const e = await ctx.mock.waitEntry(id, (x) => x.client_aborted, { timeout: 5000, what: 'client_aborted' });
  assert.ok(performance.now() - t0 <= 1500, 'cancelled promptly');
  assert.equal(e.completed, false);
  assert.ok(e.body_bytes < 50 * 1024 * 1024);
});

test('twenty aborted streams in a row leave ferry healthy', T, async () => {
  const client = await sdk(ctx.ferry);
  const ids = [];
  for (let i = 0; i < 20; i++) {
    const id = newId();
    ids.push(id);
    const ac = new AbortController();
    const p = client.chat.completions.create(chat(true),
      { signal: ac.signal, headers: { 'x-test-id': id, 'x-mock-chunks': '50', 'x-mock-chunk-delay-ms': '20' } });
    // Abort at different phases: before the head, right after it, after some tokens.
    if (i % 3 === 0) setTimeout(() => ac.abort(), 5);
    try {
      const s = await p;
      let n = 0;
      for await (const c of s) {
        if (++n >= i % 3) { ac.abort(); break; }
        void c;
      }
    } catch { /* aborted */ }
  }
  // Every one of them that reached the upstream is cancelled there.
  await waitFor(async () => {
    const log = await ctx.mock.log();
    return log.filter((e) => ids.includes(header(e.headers, 'x-test-id'))).every((e) => e.client_aborted);
  }, { timeout: 5000, what: 'every aborted stream to be cancelled upstream' });
  const r = await rawHttp({ port: ctx.ferry.port, path: '/v1/models' });
  assert.equal(r.status, 200, 'ferry still answers');
  assert.equal(ctx.ferry.proc.exit, null, 'ferry still runs');
});
