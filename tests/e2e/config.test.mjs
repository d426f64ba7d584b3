// The configuration file: upstreams, routes by path and by the request's model, per-upstream key
// pools (the pool key replaces the client's credentials, round-robin, and never appears in ferry's
// output), ${ENV} references, `ferry check-config`, and errors that name FILE:LINE:COLUMN and field.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startMock, startFerry, newId, header, rawHttp, rawHeaderList, assertCors, assertErrorJson, FERRY_BIN, T } from './lib.mjs';

const ctx = { mock: null, ferries: [] };
ctx.startFerry = async (opts) => { const f = await startFerry(opts); ctx.ferries.push(f); return f; };
after(async () => {
  for (const f of ctx.ferries) await f.stop();
  if (ctx.mock) await ctx.mock.stop();
});
const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-config-'));
const CANARY = 'sk-canary-' + newId().replace(/-/g, '');
let ferry;

function writeConfig(name, text) {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
}

before(async () => {
  ctx.mock = await startMock();
  const file = writeConfig('gateway.yaml', `
# two upstreams on the same mock, told apart by the Host they are called with
first-byte-timeout: 5s
upstreams:
  pooled:
    url: ${ctx.mock.url}/
    keys: ["\${FERRY_TEST_POOL_KEY}", "sk-pool-second"]
  plain: { url: "http://localhost:${ctx.mock.port}" }
routes:
  - { models: ["deepseek-*", "claude-?-*"], upstream: plain }
  - { path: /v1/, upstream: pooled }
  - { path: /__mock/echo, upstream: pooled }
`);
  ferry = await ctx.startFerry({ args: ['-c', file], env: { FERRY_TEST_POOL_KEY: CANARY } });
});

async function echo(body, headers = {}) {
  const id = newId();
  const r = await rawHttp({ port: ferry.port, method: 'POST', path: '/__mock/echo',
    headers: { 'content-type': 'application/json', 'x-test-id': id, ...headers }, body });
  assert.equal(r.status, 200, r.text);
  return JSON.parse(r.text);
}

test('the banner lists every upstream by name', T, () => {
  assert.match(ferry.banner, /-> pooled=http:\/\/127\.0\.0\.1:\d+,plain=http:\/\/localhost:\d+ /);
});

test('routes by the body\'s top-level model (globs), ignoring nested "model" members', T, async () => {
  const a = await echo('{"messages":[{"model":"deepseek-chat"}],"model":"deepseek-chat"}');
  assert.match(header(a.headers, 'host'), /^localhost:/);
  const b = await echo('{"metadata":{"model":"deepseek-chat"},"model":"gpt-4o-mini"}');
  assert.match(header(b.headers, 'host'), /^127\.0\.0\.1:/);
  const c = await echo('{"model":"claude-3-haiku"}');
  assert.match(header(c.headers, 'host'), /^localhost:/);
});

test('a key pool replaces the client\'s credentials, round-robin', T, async () => {
  const seen = [];
  for (let i = 0; i < 4; i++) {
    const e = await echo('{"model":"gpt-4o-mini"}', { authorization: 'Bearer sk-client', 'x-api-key': 'client', 'api-key': 'client' });
    assert.equal(header(e.headers, 'x-api-key'), undefined);
    assert.equal(header(e.headers, 'api-key'), undefined);
    assert.equal(header(e.headers, 'authorization', true).length, 1);
    seen.push(header(e.headers, 'authorization'));
  }
  assert.deepEqual(new Set(seen), new Set([`Bearer ${CANARY}`, 'Bearer sk-pool-second']));
  assert.notEqual(seen[0], seen[1], 'consecutive requests use different keys');
  // The upstream without a pool gets the client's own credentials, as the seed does.
  const p = await echo('{"model":"deepseek-chat"}', { authorization: 'Bearer sk-client' });
  assert.equal(header(p.headers, 'authorization'), 'Bearer sk-client');
});

test('no route: 404 in OpenAI\'s error shape with CORS, nothing upstream', T, async () => {
  const id = newId();
  const r = await rawHttp({ port: ferry.port, method: 'GET', path: '/elsewhere', headers: { 'x-test-id': id } });
  assert.equal(r.status, 404);
  assertCors(rawHeaderList(r.rawHeaders), '404');
  assert.equal(assertErrorJson(r.text).error.code, 'no_route');
  assert.deepEqual(await ctx.mock.entries(id), []);
});

test('the pool key never appears in ferry\'s output', T, async () => {
  await echo('{"model":"gpt-4o-mini"}');
  assert.ok(!ferry.proc.stdout.includes(CANARY), 'key in stdout');
  assert.ok(!ferry.proc.stderr.includes(CANARY), 'key in stderr');
});

test('check-config: ok summary without keys; errors name FILE:LINE:COLUMN and the field', T, () => {
  const good = writeConfig('good.yaml', `upstreams:\n  a: { url: "https://api.example.com", keys: ["\${FERRY_TEST_POOL_KEY}"] }\n`);
  const out = execFileSync(FERRY_BIN, ['check-config', '-c', good], { env: { ...process.env, FERRY_TEST_POOL_KEY: CANARY } }).toString();
  assert.match(out, /ok: .*1 upstream, 1 route/);
  assert.match(out, /upstream a: https:\/\/api\.example\.com, 1 key/);
  assert.ok(!out.includes(CANARY));

  const bad = writeConfig('bad.yaml', [
    'first-byte-timeout: 10x',               // line 1
    'upstreams:',                            // line 2
    '  a: { url: "ftp://x" }',               // line 3
    'routes:',                               // line 4
    '  - { path: /v1/, upstream: nope }',    // line 5
    'no-such-setting: 1',                    // line 6
    '  ', ''].join('\n'));
  const r = spawnSync(FERRY_BIN, ['check-config', '-c', bad]);
  assert.equal(r.status, 2);
  const err = r.stderr.toString();
  assert.match(err, new RegExp(`${bad.replace(/[.]/g, '\\.')}:1:21: first-byte-timeout: invalid value '10x'`));
  assert.match(err, /bad\.yaml:3:\d+: upstreams\.a\.url: 'ftp:\/\/x' is not an http/);
  assert.match(err, /bad\.yaml:5:\d+: routes\[0\]\.upstream: no upstream called 'nope'/);
  assert.match(err, /bad\.yaml:6:1: no-such-setting: unknown setting/);

  const unset = writeConfig('unset.yaml', 'upstreams:\n  a: { url: "http://x", keys: ["${FERRY_NOT_SET_ANYWHERE}"] }\n');
  const u = spawnSync(FERRY_BIN, ['check-config', '-c', unset]);
  assert.equal(u.status, 2);
  assert.match(u.stderr.toString(), /unset\.yaml:2:\d+: upstreams\.a\.keys: environment variable FERRY_NOT_SET_ANYWHERE is not set/);

  const latin1 = path.join(dir, 'latin1.yaml');
  writeFileSync(latin1, Buffer.from('listen: 127.0.0.1:8080\ndrop-headers: \xff\n', 'latin1'));
  const l1 = spawnSync(FERRY_BIN, ['check-config', '-c', latin1]);
  assert.equal(l1.status, 2);
  assert.match(l1.stderr.toString(), /latin1\.yaml:2:15: the file is not UTF-8 text/);

  const syntax = writeConfig('syntax.yaml', 'upstreams: [\n');
  const y = spawnSync(FERRY_BIN, ['check-config', '-c', syntax]);
  assert.equal(y.status, 2);
  assert.match(y.stderr.toString(), /syntax\.yaml:\d+:\d+: YAML: /);
});

test('flags and environment override the file', T, async () => {
  const file = writeConfig('override.yaml', `listen: 127.0.0.1:1\nthreads: 3\nupstream: ${ctx.mock.url}\n`);
  // --listen comes from startFerry's flag; the thread count from the environment.
  const f = await ctx.startFerry({ args: ['-c', file], threads: 0, env: { FERRY_THREADS: '1' } });
  assert.equal(f.threads, 1);
  const r = await rawHttp({ port: f.port, method: 'GET', path: '/v1/models' });
  assert.equal(r.status, 200);
});
