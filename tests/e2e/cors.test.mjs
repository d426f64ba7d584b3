// CORS: preflights are answered by ferry itself (204, echoing what was asked, Max-Age, Vary) and never reach
// the upstream; an OPTIONS that is not a preflight is relayed like any other method.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, newId, rawExchange, RawConn, req, sleep, T } from './lib.mjs';

const ctx = setup();

const list = (v) => (v || '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);

async function preflight(path, method, reqHeaders, extra = []) {
  const hs = [['Host', `127.0.0.1:${ctx.ferry.port}`], ['Origin', 'http://app.example'],
    ['Access-Control-Request-Method', method], ...extra];
  if (reqHeaders !== undefined) hs.push(['Access-Control-Request-Headers', reqHeaders]);
  const w = await rawExchange(ctx.ferry.port, req('OPTIONS', path, hs), { count: 1, timeout: 5000, methods: ['OPTIONS'] });
  assert.ok(w.responses[0], `a response: ${JSON.stringify(w.text.slice(0, 300))}`);
  return w.responses[0];
}

function assertPreflight(r, method, asked) {
  assert.equal(r.status, 204, `preflight → 204, got ${r.status}: ${r.head}`);
  assert.deepEqual(r.getAll('access-control-allow-origin'), ['*']);
  assert.ok(list(r.get('access-control-allow-methods')).includes(method.toLowerCase()),
    `Allow-Methods ${r.get('access-control-allow-methods')} includes ${method}`);
  const allowed = list(r.get('access-control-allow-headers'));
  for (const h of asked) assert.ok(allowed.includes(h) || allowed.includes('*'), `Allow-Headers ${allowed} includes ${h}`);
  assert.match(r.get('access-control-max-age') || '', /^\d+$/, 'Access-Control-Max-Age is a number of seconds');
  assert.ok(Number(r.get('access-control-max-age')) > 0);
  const vary = list(r.getAll('vary').join(','));
  assert.ok(vary.includes('origin') && vary.includes('access-control-request-headers'),
    `Vary: Origin, Access-Control-Request-Headers (got ${r.getAll('vary')})`);
  assert.equal(r.body.length, 0, '204 has no body');
}

test('preflight for the SDK\'s chat call: 204, echoes method and headers, never reaches the upstream', T, async () => {
  await ctx.mock.reset();
  const asked = ['authorization', 'content-type', 'x-stainless-os', 'x-stainless-retry-count', 'openai-organization'];
  const r = await preflight('/v1/chat/completions', 'POST', 'Authorization, Content-Type, X-Stainless-OS, x-stainless-retry-count, OpenAI-Organization');
  assertPreflight(r, 'POST', asked);
  await sleep(150);
  assert.deepEqual((await ctx.mock.log()).map((e) => `${e.method} ${e.target}`), [], 'preflight answered by ferry');
});

test('preflights for other methods and paths, with and without requested headers', T, async () => {
  await ctx.mock.reset();
  for (const [path, method, hdrs, asked] of [
    ['/v1/files/file-abc', 'DELETE', undefined, []],
    ['/v1/models', 'GET', 'x-custom-thing', ['x-custom-thing']],
    ['/v1/responses?stream=true', 'PUT', 'content-type', ['content-type']],
    ['/anything/else', 'PATCH', 'x-a,x-b', ['x-a', 'x-b']],
  ]) {
    assertPreflight(await preflight(path, method, hdrs), method, asked);
  }
  await sleep(150);
  assert.equal((await ctx.mock.log()).length, 0, 'no preflight reached the upstream');
});

test('a preflight keeps the connection usable for the real request', T, async () => {
  const id = newId();
  const c = new RawConn(ctx.ferry.port);
  try {
    await c.connected;
    c.write(req('OPTIONS', '/v1/chat/completions', [['Host', 'x'], ['Origin', 'http://app.example'],
      ['Access-Control-Request-Method', 'POST'], ['Access-Control-Request-Headers', 'content-type']]));
    const p = await c.next({ method: 'OPTIONS' });
    assert.equal(p.status, 204);
    const body = '{"model":"m","messages":[]}';
    c.write(req('POST', '/v1/chat/completions', [['Host', 'x'], ['Origin', 'http://app.example'], ['x-test-id', id],
      ['Content-Type', 'application/json'], ['Content-Length', body.length]], body));
    const r = await c.next();
    assert.equal(r.status, 200);
    assert.deepEqual(r.getAll('access-control-allow-origin'), ['*']);
    assert.equal((await ctx.mock.entries(id)).length, 1);
  } finally {
    c.close();
  }
});

test('OPTIONS without Access-Control-Request-Method is not a preflight: it is relayed', T, async () => {
  const id = newId();
  const w = await rawExchange(ctx.ferry.port, req('OPTIONS', '/v1/models', [['Host', 'x'], ['Origin', 'http://app.example'], ['x-test-id', id]]),
    { count: 1, timeout: 5000, methods: ['OPTIONS'] });
  assert.ok(w.responses[0], w.text);
  const [e] = await ctx.mock.entries(id);
  assert.ok(e, 'relayed to the upstream');
  assert.equal(e.method, 'OPTIONS');
  assert.equal(w.responses[0].status, e.status, 'the upstream\'s answer comes back');
  assert.deepEqual(w.responses[0].getAll('access-control-allow-origin'), ['*']);
});
