// Bounded memory: 100 MB request bodies (chunked and Content-Length, generated on the fly, never held in
// memory here) reach the upstream intact, and a 100 MB response read by a slow client arrives intact, while
// ferry's peak RSS (VmHWM) stays under RSS_BOUND (64 MB; not asserted on the ASan build).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHash } from 'node:crypto';
import { setup, generatedBody, rawHttp, peakRss, newId, sleep, speechBytes, ASAN, RSS_BOUND } from './lib.mjs';

const ctx = setup();
const SIZE = 100 * 1024 * 1024;
const LONG = { timeout: 180000 };
const mb = (n) => `${(n / 1048576).toFixed(1)} MB`;

function checkRss(t, label) {
  const rss = peakRss(ctx.ferry.pid);
  t.diagnostic(`ferry peak RSS (VmHWM) after ${label}: ${rss === null ? 'n/a' : mb(rss)}${ASAN ? ' (ASan build: not asserted)' : ''}`);
  if (!ASAN) {
    assert.ok(rss !== null, 'VmHWM readable');
    assert.ok(rss < RSS_BOUND, `ferry peak RSS ${mb(rss)} must stay under ${mb(RSS_BOUND)}`);
  }
}

for (const framing of ['chunked', 'content-length']) {
  test(`100 MB upload to /v1/files (${framing}) arrives intact; RSS bounded`, LONG, async (t) => {
    const gen = generatedBody(SIZE, 256 * 1024);
    const id = newId();
    const headers = { 'content-type': 'application/octet-stream', 'x-test-id': id, authorization: 'Bearer sk-up' };
    if (framing === 'content-length') headers['content-length'] = String(SIZE);
    const t0 = Date.now();
    const r = await rawHttp({ port: ctx.ferry.port, method: 'POST', path: '/v1/files', headers, body: gen.iter, timeout: 150000 });
    t.diagnostic(`${framing}: ${mb(SIZE)} in ${Date.now() - t0} ms`);
    assert.equal(r.status, 200, r.text.slice(0, 300));
    const j = JSON.parse(r.text);
    assert.equal(j.bytes, SIZE);
    assert.equal(j.sha256, gen.sha256, 'the bytes that arrived are the bytes that were sent');
    const [e] = await ctx.mock.entries(id);
    assert.equal(e.body_bytes, SIZE);
    checkRss(t, `the ${framing} upload`);
  });
}

test('100 MB response to a slow reader arrives intact; RSS bounded (backpressure upstream ← client)', LONG, async (t) => {
  const expected = createHash('sha256');
  // The mock's bytes: byte i = (i*7+3) & 0xff, period 256: hash them in blocks.
  const block = speechBytes(1024 * 1024);
  for (let off = 0; off < SIZE; off += block.length) expected.update(block.subarray(0, Math.min(block.length, SIZE - off)));
  const want = expected.digest('hex');
  const got = createHash('sha256');
  let n = 0;
  await new Promise((resolve, reject) => {
    const rq = http.request({ host: '127.0.0.1', port: ctx.ferry.port, method: 'POST', path: '/v1/audio/speech',
      agent: false, headers: { 'content-type': 'application/json', 'x-mock-bytes': String(SIZE) }, timeout: 150000 }, async (res) => {
      try {
        assert.equal(res.statusCode, 200);
        assert.equal(res.headers['content-length'], String(SIZE));
        res.pause();
        await sleep(2000); // let every buffer between the mock and us fill up
        res.on('data', (d) => { got.update(d); n += d.length; });
        res.on('end', resolve);
        res.on('error', reject);
        res.resume();
      } catch (e) { reject(e); }
    });
    rq.on('timeout', () => rq.destroy(new Error('timeout')));
    rq.on('error', reject);
    rq.end(JSON.stringify({ model: 'tts-1', voice: 'alloy', input: 'x' }));
  });
  assert.equal(n, SIZE);
  assert.equal(got.digest('hex'), want);
  checkRss(t, 'the 100 MB download');
});
