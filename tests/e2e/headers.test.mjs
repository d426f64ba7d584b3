// Seed parity, checked against the mock's /__mock/echo (exactly what arrived upstream): every method, path,
// query and header goes through unchanged, except hop-by-hop headers, the drop list, and Host (the
// upstream's). ferry adds nothing of its own (no curl User-Agent, Accept, Expect...). Response headers come
// back unchanged plus CORS.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  setup, rawHttp, rawExchange, rawHeaderList, header, sha256, assertCors, generatedBody, req, T,
} from './lib.mjs';

const ctx = setup();

/** Raw request through ferry (exact bytes we choose), returning the echo JSON. */
async function echoRaw(port, method, target, headers, body = '') {
  const hs = [['Host', `127.0.0.1:${port}`], ...headers];
  if (body.length && !headers.some(([k]) => /^(content-length|transfer-encoding)$/i.test(k))) hs.push(['Content-Length', Buffer.byteLength(body, 'latin1')]);
  const w = await rawExchange(port, req(method, target, hs, body), { count: 1, timeout: 8000, methods: [method] });
  const r = w.responses[0];
  assert.ok(r, `a response: ${JSON.stringify(w.text.slice(0, 300))}`);
  assert.equal(r.status, 200, r.text.slice(0, 300));
  return { r, echo: JSON.parse(r.text) };
}

const lc = (list) => list.map(([k, v]) => [k.toLowerCase(), v]);
const FRAMING = new Set(['content-length', 'transfer-encoding']);

test('method, path and query arrive unchanged, for every method', T, async () => {
  const target = '/__mock/echo/a%20b//double/slash;p=1?q=1&b=%2F&empty=&flag&sp=a+b&u=%E2%9C%93';
  for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
    const body = ['POST', 'PUT', 'PATCH'].includes(method) ? '{"x":1}' : '';
    const { echo } = await echoRaw(ctx.ferry.port, method, target, [['X-Probe', method]], body);
    assert.equal(echo.method, method);
    assert.equal(echo.target, target, `${method}: target unchanged`);
    assert.equal(echo.body_bytes, body.length);
    assert.equal(header(echo.headers, 'x-probe'), method);
  }
});

test('headers: end-to-end ones unchanged (incl. repeats), hop-by-hop and the drop list removed, nothing added', T, async () => {
  const sent = [
    ['Authorization', 'Bearer sk-parity-0123456789'],
    ['OpenAI-Organization', 'org-123'],
    ['OpenAI-Project', 'proj_abc'],
    ['OpenAI-Beta', 'assistants=v2'],
    ['Content-Type', 'application/json'],
    ['User-Agent', 'parity-test/1.0'],
    ['X-Stainless-Lang', 'js'],
    ['X-Multi', 'one'],
    ['X-Multi', 'two'],
    ['X-Empty', ''],
    ['X-Spaces', 'a  b\tc'],
    ['Accept-Encoding', 'identity'],
  ];
  const hop = [
    ['Connection', 'keep-alive, X-Conn-Named'],
    ['X-Conn-Named', 'must-not-pass'],
    ['Keep-Alive', 'timeout=5'],
    ['TE', 'trailers'],
    ['Trailer', 'X-Trailer'],
    ['Proxy-Authorization', 'Basic c2VjcmV0'],
    ['Proxy-Connection', 'keep-alive'],
  ];
  const dropped = [
    ['Cookie', 'session=secret'],
    ['Forwarded', 'for=10.0.0.1'],
    ['Via', '1.1 someproxy'],
    ['X-Forwarded-For', '10.0.0.1'],
    ['X-Forwarded-Proto', 'https'],
    ['X-Forwarded-Host', 'evil.example'],
    ['X-Real-IP', '10.0.0.2'],
    ['CF-Connecting-IP', '10.0.0.3'],
    ['CF-Ray', 'abc'],
  ];
  const body = '{"model":"gpt-4o-mini","messages":[]}';
  const { echo } = await echoRaw(ctx.ferry.port, 'POST', '/__mock/echo/parity', [...sent, ...hop, ...dropped], body);
  const got = lc(echo.headers);
  assert.deepEqual(got.filter(([k]) => k === 'host'), [['host', `127.0.0.1:${ctx.mock.port}`]], 'Host is the upstream\'s, once');
  const rest = got.filter(([k]) => k !== 'host' && !FRAMING.has(k));
  // Exactly the end-to-end headers, same values, repeats kept in order; nothing removed that should pass,
  // nothing added (curl's default User-Agent/Accept/Expect must not leak in).
  assert.deepEqual(rest.map(([k, v]) => `${k}: ${v}`).sort(), lc(sent).map(([k, v]) => `${k}: ${v}`).sort());
  assert.deepEqual(header(echo.headers, 'x-multi', true), ['one', 'two'], 'repeated headers keep their order');
  assert.equal(echo.body_sha256, sha256(body));
});

test('no User-Agent or Accept is invented when the client sends none', T, async () => {
  const { echo } = await echoRaw(ctx.ferry.port, 'GET', '/__mock/echo/bare', []);
  const names = lc(echo.headers).map(([k]) => k).filter((k) => !FRAMING.has(k));
  assert.deepEqual(names, ['host'], `only Host expected upstream, got ${JSON.stringify(echo.headers)}`);
});

test('--drop-headers replaces the list: listed names (and prefix*) are dropped, the rest passes', T, async () => {
  const f = await ctx.startFerry({ upstream: ctx.mock.url, args: ['--drop-headers', 'x-secret,x-internal-*'] });
  const { echo } = await echoRaw(f.port, 'GET', '/__mock/echo/drop', [
    ['X-Secret', '1'], ['X-Internal-A', '2'], ['X-Internal-B', '3'], ['X-Keep', '4'], ['X-Secretive', '5']]);
  const names = lc(echo.headers).map(([k]) => k);
  assert.ok(!names.includes('x-secret'));
  assert.ok(!names.includes('x-internal-a'));
  assert.ok(!names.includes('x-internal-b'));
  assert.equal(header(echo.headers, 'x-keep'), '4');
  assert.equal(header(echo.headers, 'x-secretive'), '5', 'x-secret is a name, not a prefix');
});

test('request bodies arrive intact, Content-Length and chunked (1 MB, generated)', T, async () => {
  for (const framing of ['content-length', 'chunked']) {
    const n = 1024 * 1024 + 7;
    const gen = generatedBody(n, 64 * 1024);
    const headers = { 'content-type': 'application/octet-stream' };
    if (framing === 'content-length') headers['content-length'] = String(n);
    const r = await rawHttp({ port: ctx.ferry.port, method: 'POST', path: '/__mock/echo/body', headers, body: gen.iter });
    assert.equal(r.status, 200);
    const echo = JSON.parse(r.text);
    assert.equal(echo.body_bytes, n, framing);
    assert.equal(echo.body_sha256, gen.sha256, framing);
    if (framing === 'content-length') assert.equal(header(echo.headers, 'content-length'), String(n), 'Content-Length kept');
  }
});

test('response headers come back unchanged (Content-Length kept), plus CORS', T, async () => {
  const direct = await rawHttp({ port: ctx.mock.port, path: '/v1/models' });
  const via = await rawHttp({ port: ctx.ferry.port, path: '/v1/models' });
  assert.equal(via.status, direct.status);
  assert.equal(via.text, direct.text);
  const skip = new Set(['connection', 'keep-alive', 'transfer-encoding', 'date', 'x-request-id']);
  const ferryAdds = new Set(['access-control-allow-origin', 'access-control-expose-headers', 'x-accel-buffering']);
  const norm = (raw, drop) => lc(rawHeaderList(raw)).filter(([k]) => !skip.has(k) && !drop.has(k)).map(([k, v]) => `${k}: ${v}`).sort();
  assert.deepEqual(norm(via.rawHeaders, ferryAdds), norm(direct.rawHeaders, new Set()));
  assert.ok(via.headers['content-length'], 'a Content-Length response stays a Content-Length response');
  assert.match(via.headers['x-request-id'], /^req_mock_\d+$/);
  assertCors(rawHeaderList(via.rawHeaders));
});
