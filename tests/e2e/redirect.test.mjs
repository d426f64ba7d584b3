// Redirects: followed up to 5 (method and body kept for 307/308), credentials never go to another host
// (127.0.0.1 and localhost are different hosts), and a streamed body that cannot be replayed gets the
// redirect response as it is.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, newId, header, rawHttp, sha256, generatedBody, sleep, T } from './lib.mjs';

const ctx = setup();
const AUTH = 'Bearer sk-redirect-secret-0123456789';

/** A redirect chain of `hops` hops on the mock ending at `final` (absolute URL). */
function chain(hops, final, status = 307) {
  let url = final;
  for (let i = 0; i < hops; i++) url = `${ctx.mock.url}/__mock/redirect?status=${status}&to=${encodeURIComponent(url)}`;
  return url.slice(ctx.mock.url.length); // path + query for the first hop, relative to ferry
}

test('GET through one 302 → the target\'s answer; same host keeps Authorization', T, async () => {
  const id = newId();
  const r = await rawHttp({ port: ctx.ferry.port, path: chain(1, `${ctx.mock.url}/v1/models?x=1`, 302),
    headers: { authorization: AUTH, 'x-test-id': id } });
  assert.equal(r.status, 200, r.text.slice(0, 300));
  assert.equal(JSON.parse(r.text).object, 'list');
  const [e] = await ctx.mock.entries(id);
  assert.equal(e?.target, '/v1/models?x=1');
  assert.equal(header(e.headers, 'authorization'), AUTH, 'same host: credentials kept');
});

test('POST through 307 and 308: method and body replayed to the target', T, async () => {
  for (const status of [307, 308]) {
    const id = newId();
    const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `hop ${status}` }] });
    const r = await rawHttp({ port: ctx.ferry.port, method: 'POST', path: chain(1, `${ctx.mock.url}/v1/chat/completions`, status),
      headers: { 'content-type': 'application/json', authorization: AUTH, 'x-test-id': id }, body });
    assert.equal(r.status, 200, `${status}: ${r.text.slice(0, 300)}`);
    assert.equal(JSON.parse(r.text).object, 'chat.completion');
    const [e] = await ctx.mock.entries(id);
    assert.equal(e.method, 'POST');
    assert.equal(e.body_sha256, sha256(body), `${status}: body replayed intact`);
  }
});

test('five redirects are followed; a sixth is not', T, async () => {
  const id5 = newId();
  const r5 = await rawHttp({ port: ctx.ferry.port, path: chain(5, `${ctx.mock.url}/v1/models`), headers: { 'x-test-id': id5 } });
  assert.equal(r5.status, 200, `5 hops: ${r5.status} ${r5.text.slice(0, 200)}`);
  assert.equal((await ctx.mock.entries(id5)).length, 1);
  const id6 = newId();
  const r6 = await rawHttp({ port: ctx.ferry.port, path: chain(6, `${ctx.mock.url}/v1/models`), headers: { 'x-test-id': id6 } });
  assert.notEqual(r6.status, 200, '6 hops must not reach the target');
  assert.ok((r6.status >= 300 && r6.status < 400) || r6.status === 502, `6 hops: the last redirect as is, or 502; got ${r6.status}`);
  if (r6.status === 502) assert.ok(JSON.parse(r6.text).error, 'a 502 is OpenAI-shaped');
  await sleep(100);
  assert.equal((await ctx.mock.entries(id6)).length, 0, 'the target was never requested');
});

test('a redirect to another host (127.0.0.1 → localhost) does not carry Authorization', T, async () => {
  const id = newId();
  const r = await rawHttp({ port: ctx.ferry.port, path: chain(1, `http://localhost:${ctx.mock.port}/v1/models`),
    headers: { authorization: AUTH, 'x-test-id': id, 'openai-organization': 'org-x' } });
  assert.equal(r.status, 200, r.text.slice(0, 300));
  const [e] = await ctx.mock.entries(id);
  assert.ok(e, 'the other host got the request');
  assert.equal(header(e.headers, 'host'), `localhost:${ctx.mock.port}`);
  assert.equal(header(e.headers, 'authorization'), undefined, 'Authorization must not go to another host');
});

test('a streamed (chunked) body that cannot be replayed gets the 307 as is', T, async () => {
  const id = newId();
  const gen = generatedBody(4 * 1024 * 1024, 64 * 1024);
  const to = `${ctx.mock.url}/v1/files`;
  const r = await rawHttp({ port: ctx.ferry.port, method: 'POST', path: chain(1, to),
    headers: { 'content-type': 'application/octet-stream', authorization: AUTH, 'x-test-id': id }, body: gen.iter });
  assert.equal(r.status, 307, `expected the redirect itself: ${r.status} ${r.text.slice(0, 200)}`);
  assert.equal(r.headers.location, to);
  assert.deepEqual(r.headers['access-control-allow-origin'], '*');
  await sleep(100);
  assert.equal((await ctx.mock.entries(id)).length, 0, 'the body was not sent to the target');
});
