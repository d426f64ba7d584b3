// Upstream key pools: round-robin, cool-down on 429 for the upstream's retry-after, disable on 401
// and on 429 insufficient_quota with probes (GET /v1/models) until the key works again, failover to
// the next key before any byte reached the client and never after, 503 when no key is healthy, and
// the pool keys never reaching the client. Faults come from the mock's per-key fault table.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startMock, startFerry, newId, header, rawHttp, sleep, waitFor, T } from './lib.mjs';

const K = ['sk-pool-one-1111111111', 'sk-pool-two-2222222222', 'sk-pool-three-33333333'];
const ctx = {};

before(async () => {
  ctx.mock = await startMock();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-pool-'));
  const file = path.join(dir, 'pool.yaml');
  writeFileSync(file, `key-probe-interval: 500ms
key-cooldown: 1s
max-retries: 2
upstreams:
  pool: { url: "${ctx.mock.url}", keys: [${K.join(', ')}] }
`);
  ctx.ferry = await startFerry({ args: ['-c', file], threads: 1 });
});
after(async () => {
  if (ctx.ferry) await ctx.ferry.stop();
  if (ctx.mock) await ctx.mock.stop();
});

async function faults(spec) {
  const r = await rawHttp({ port: ctx.mock.port, method: 'POST', path: '/__mock/key-faults', headers: { 'x-mock-key-faults': spec }, body: '' });
  assert.equal(r.status, 200);
}

async function chat(headers = {}, body = '{"model":"gpt-4o-mini"}') {
  const id = newId();
  const r = await rawHttp({ port: ctx.ferry.port, method: 'POST', path: '/v1/chat/completions',
    headers: { 'content-type': 'application/json', authorization: 'Bearer sk-client-own', 'x-test-id': id, ...headers }, body });
  return { ...r, id };
}

/** Waits for a line on ferry's stderr written after `mark` (a stderr length). */
const stderrMark = () => ctx.ferry.proc.stderr.length;
const waitStderr = (mark, re, what, timeout = 5000) =>
  ctx.ferry.proc.waitUntil((p) => re.test(p.stderr.slice(mark)), { timeout, what });

const keyOf = (e) => (header(e.headers, 'authorization') || '').replace(/^Bearer /, '');

async function keysUsed(id) {
  return (await ctx.mock.entries(id)).map((e) => [keyOf(e), e.status]);
}

test('round-robin over the pool; the client\'s key never goes upstream', T, async () => {
  await faults('');
  const seen = [];
  for (let i = 0; i < 6; i++) {
    const r = await chat();
    assert.equal(r.status, 200);
    const [[k]] = await keysUsed(r.id);
    seen.push(k);
  }
  assert.deepEqual([...new Set(seen)].sort(), [...K].sort());
  assert.ok(!seen.includes('sk-client-own'));
});

test('429: the key rests for the retry-after, the request fails over invisibly', T, async () => {
  await faults(`${K[1]}=429`);
  const used = [];
  for (let i = 0; i < 6; i++) {
    const r = await chat();
    assert.equal(r.status, 200, r.text);
    used.push(...await keysUsed(r.id));
  }
  const limited = used.filter(([k]) => k === K[1]);
  assert.equal(limited.length, 1, `the rate-limited key was used again while resting: ${JSON.stringify(used)}`);
  assert.equal(limited[0][1], 429);
  await faults('');
  await sleep(2300); // the mock's retry-after is 2 s
  const back = [];
  for (let i = 0; i < 3; i++) back.push(...await keysUsed((await chat()).id));
  assert.ok(back.some(([k]) => k === K[1]), 'the key came back after its rest');
});

test('401: the key is disabled, probed with GET /v1/models, and enabled once it works', T, async () => {
  await faults(`${K[0]}=401`);
  const mark = stderrMark();
  for (let i = 0; i < 4; i++) assert.equal((await chat()).status, 200);
  await waitStderr(mark, /key #1 rejected or out of quota: disabled/, 'the disable message');
  const probes = async () => (await ctx.mock.log()).filter((e) => e.method === 'GET' && e.target === '/v1/models' && keyOf(e) === K[0]);
  await waitFor(async () => (await probes()).length >= 1, { timeout: 4000, what: 'a probe of the disabled key' });
  await faults('');
  await waitStderr(mark, /key #1 works again: enabled/, 'the key to be enabled again');
  const back = [];
  for (let i = 0; i < 3; i++) back.push(...await keysUsed((await chat()).id));
  assert.ok(back.some(([k]) => k === K[0]));
});

test('every key rejected: a 502 that never shows the masked key, then 503 until a probe succeeds', T, async () => {
  await faults(K.map((k) => `${k}=401`).join(','));
  const r = await chat();
  assert.equal(r.status, 502);
  assert.ok(!r.text.includes('***') && !K.some((k) => r.text.includes(k.slice(-4))), r.text);
  assert.equal(JSON.parse(r.text).error.type, 'relay_error');
  const again = await chat();
  assert.equal(again.status, 503);
  assert.match(JSON.parse(again.text).error.message, /retry later/);
  await faults('');
  await waitFor(async () => (await chat()).status === 200, { timeout: 5000, what: 'a key to be enabled by its probe' });
});

test('429 insufficient_quota disables the key (probed later), other keys answer', T, async () => {
  await faults('');
  // every key healthy again after the previous test
  await waitFor(async () => { const r = await chat(); return r.status === 200; }, { timeout: 5000 });
  await sleep(1500);
  await faults(`${K[2]}=429q`);
  const mark = stderrMark();
  for (let i = 0; i < 4; i++) assert.equal((await chat()).status, 200);
  await waitStderr(mark, /key #3 rejected or out of quota: disabled/, 'the quota key to be disabled');
  await faults('');
  await waitStderr(mark, /key #3 works again/, 'recovery');
});

test('failover before the first byte only: a stream cut mid-way is not retried', T, async () => {
  await faults('');
  const r = await chat({ 'x-mock-close-after': '2' }, '{"model":"m","stream":true}').catch((e) => ({ error: e }));
  await sleep(200);
  const entries = await ctx.mock.log();
  const id = r.id || null;
  if (id) assert.equal((await ctx.mock.entries(id)).length, 1);
  else assert.equal(entries.filter((e) => header(e.headers, 'x-mock-close-after') === '2').length >= 1, true);
});

test('5xx: retried on other keys up to --max-retries; a body too large to keep is never sent twice', T, async () => {
  await faults('');
  const r = await chat({ 'x-mock-status': '500' });
  assert.equal(r.status, 500, 'the last answer is relayed');
  assert.equal((await keysUsed(r.id)).length, 3, '1 + max-retries attempts');
  const id = newId();
  const c = await rawHttp({ port: ctx.ferry.port, method: 'POST', path: '/v1/chat/completions',
    headers: { 'x-mock-status': '500', 'x-test-id': id, 'transfer-encoding': 'chunked' },
    // 256 KiB > --buffer-size: the start of the body is gone once sent, so it cannot be replayed
    body: (async function* () { for (let i = 0; i < 16; i++) yield Buffer.alloc(16384, 0x61); })() });
  assert.equal(c.status, 500);
  assert.equal((await ctx.mock.entries(id)).length, 1);
});

test('openai-organization does not come back from a pooled upstream', T, async () => {
  await faults('');
  const r = await chat();
  assert.equal(r.status, 200);
  assert.equal(r.headers['openai-organization'], undefined);
  assert.equal(r.headers['openai-version'], '2020-10-01');
});

test('the pool keys never appear in ferry\'s output', T, () => {
  for (const k of K) {
    assert.ok(!ctx.ferry.proc.stdout.includes(k));
    assert.ok(!ctx.ferry.proc.stderr.includes(k));
  }
});
