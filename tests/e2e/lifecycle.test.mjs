// The process: --help/--version, flags and FERRY_* environment variables, bad flags refused, the banner,
// the access log (one line per request, no query string, no secrets), and graceful stop on SIGTERM/SIGINT
// (exit 0; in-flight streams finish or are visibly truncated, never dropped before their head).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import net from 'node:net';
import {
  setup, FERRY_BIN, ROOT, RawConn, rawHttp, rawExchange, newId, req, sleep, withTimeout, Ferry, ASAN,
  assertNoSanitizerReports, T,
} from './lib.mjs';

const ctx = setup({ withFerry: false });

function run(args, { env = {}, timeout = 10000 } = {}) {
  return new Promise((resolve) => {
    execFile(FERRY_BIN, args, { cwd: ROOT, env: { ...process.env, ...env }, timeout, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? null) : 0, signal: err?.signal ?? null, stdout, stderr });
    });
  });
}

const FLAGS = ['--listen', '--upstream', '--threads', '--ca-file', '--connect-timeout', '--first-byte-timeout',
  '--idle-timeout', '--head-timeout', '--body-timeout', '--write-timeout', '--keepalive-timeout', '--drain-timeout',
  '--max-request-line', '--max-header-bytes', '--max-headers', '--max-body', '--max-chunk-ext', '--buffer-size',
  '--max-redirects', '--drop-headers', '--quiet', '--help', '--version'];

test('--help: exit 0, documents every flag', T, async () => {
  const r = await run(['--help']);
  assert.equal(r.code, 0, r.stderr);
  const out = r.stdout + r.stderr;
  const missing = FLAGS.filter((f) => !out.includes(f));
  assert.deepEqual(missing, [], `--help does not mention ${missing.join(' ')}`);
  assert.match(out, /FERRY_/, 'mentions the environment variables');
});

test('--version: exit 0, prints the version', T, async () => {
  const r = await run(['--version']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout + r.stderr, /ferry\D*\d+\.\d+\.\d+/);
});

test('bad flags and values are refused with a message and a non-zero exit', T, async () => {
  for (const args of [['--no-such-flag'], ['--first-byte-timeout', 'soon'], ['--max-body', '12q'],
    ['--listen', 'nonsense'], ['--threads', '-3'], ['--upstream', 'ftp://example.com']]) {
    const r = await run(args.includes('--listen') ? args : [...args, '--listen', '127.0.0.1:0'], { timeout: 3000 });
    assert.equal(r.signal, null, `${args.join(' ')} must be refused at start-up (ferry was still running after 3 s)`);
    assert.notEqual(r.code, 0, `${args.join(' ')} must fail (it exited ${r.code})`);
    assert.ok(r.stderr.trim().length > 0, `${args.join(' ')}: says why on stderr`);
  }
});

test('environment variables configure ferry; flags win over them', T, async () => {
  const f = await ctx.startFerry({ listen: null, threads: 0, env: {
    FERRY_LISTEN: '127.0.0.1:0', FERRY_UPSTREAM: ctx.mock.url, FERRY_THREADS: '3' } });
  assert.equal(f.upstream.replace(/\/$/, ''), ctx.mock.url);
  assert.equal(f.threads, 3);
  assert.equal((await rawHttp({ port: f.port, path: '/v1/models' })).status, 200);
  const g = await ctx.startFerry({ upstream: ctx.mock.url, threads: 1, env: { FERRY_UPSTREAM: 'http://127.0.0.1:1', FERRY_THREADS: '4' } });
  assert.equal(g.threads, 1);
  assert.equal((await rawHttp({ port: g.port, path: '/v1/models' })).status, 200, '--upstream beats FERRY_UPSTREAM');
});

test('access log: one line per request with every field; no query string, no secrets', T, async () => {
  const f = await ctx.startFerry({ upstream: ctx.mock.url });
  const mark = f.mark();
  const body = JSON.stringify({ model: 'm', messages: [] });
  const r = await rawHttp({ port: f.port, method: 'POST', path: '/v1/chat/completions?api-key=sk-query-secret',
    headers: { 'content-type': 'application/json', authorization: 'Bearer sk-header-secret', cookie: 'sid=cookie-secret' }, body });
  assert.equal(r.status, 200);
  await rawHttp({ port: f.port, path: '/v1/models' });
  await f.waitLog(mark, (x) => x.path === '/v1/models');
  const lines = f.proc.lines.slice(mark).filter((l) => l.startsWith('ts='));
  assert.equal(lines.length, 2, `one line per request:\n${lines.join('\n')}`);
  const a = Ferry.parseLog(lines[0]);
  for (const k of ['ts', 'client', 'method', 'path', 'status', 'upstream_status', 'bytes_in', 'bytes_out', 'ttfb_ms', 'total_ms', 'end']) {
    assert.ok(k in a, `field ${k} in ${lines[0]}`);
  }
  assert.match(a.ts, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/);
  assert.equal(a.client, '127.0.0.1');
  assert.equal(a.method, 'POST');
  assert.equal(a.path, '/v1/chat/completions');
  assert.equal(a.status, '200');
  assert.equal(a.upstream_status, '200');
  assert.equal(a.end, 'ok');
  assert.ok(Number(a.bytes_in) >= body.length, `bytes_in ${a.bytes_in}`);
  assert.ok(Number(a.bytes_out) >= r.body.length, `bytes_out ${a.bytes_out}`);
  assert.ok(Number(a.total_ms) >= Number(a.ttfb_ms) && Number(a.ttfb_ms) >= 0);
  const all = f.proc.stdout + f.proc.stderr;
  for (const s of ['sk-query-secret', 'sk-header-secret', 'cookie-secret']) assert.ok(!all.includes(s), `${s} leaked into ferry's output`);
  // A preflight is logged too.
  const m2 = f.mark();
  await rawExchange(f.port, req('OPTIONS', '/v1/models', [['Host', 'x'], ['Access-Control-Request-Method', 'GET']]), { count: 1, methods: ['OPTIONS'] });
  const { fields: pre } = await f.waitLog(m2, (x) => x.method === 'OPTIONS');
  assert.equal(pre.status, '204');
});

test('access log: requests ferry rejects itself are logged with end=rejected', T, async () => {
  const f = await ctx.startFerry({ upstream: ctx.mock.url });
  for (const [raw, status] of [
    ['GET /v1/models HTTP/1.1\r\n\r\n', '400'],
    ['POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', '400'],
    [`GET /v1/models?q=${'a'.repeat(9000)} HTTP/1.1\r\nHost: x\r\n\r\n`, '414'],
    ['POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 600000000\r\n\r\n', '413'],
  ]) {
    const mark = f.mark();
    const w = await rawExchange(f.port, raw, { waitClose: true });
    assert.equal(String(w.responses[0]?.status), status);
    const { fields } = await f.waitLog(mark, (x) => x.status === status, { timeout: 2000 });
    assert.equal(fields.end, 'rejected', `a ${status} is logged with end=rejected`);
  }
});

test('--quiet: no access log on stdout', T, async () => {
  const f = await ctx.startFerry({ upstream: ctx.mock.url, args: ['--quiet'] });
  await rawHttp({ port: f.port, path: '/v1/models' });
  await sleep(300);
  assert.equal(f.logLines.length, 0);
});

async function startStream(f, id, chunks, delay) {
  const c = new RawConn(f.port);
  await c.connected;
  const body = JSON.stringify({ model: 'm', stream: true, messages: [] });
  c.write(req('POST', '/v1/chat/completions', [['Host', 'x'], ['x-test-id', id], ['x-mock-chunks', chunks],
    ['x-mock-chunk-delay-ms', delay], ['Content-Type', 'application/json'], ['Content-Length', body.length]], body));
  await withTimeout((async () => {
    while (!c.buf.toString('latin1').includes('tok0')) await sleep(10);
  })(), 5000, 'the first token');
  return c;
}

test('SIGTERM during a slow stream: the stream completes within the drain deadline, new connections are refused, exit 0', T, async () => {
  const f = await ctx.startFerry({ upstream: ctx.mock.url, args: ['--drain-timeout', '10s'] });
  const id = newId();
  const c = await startStream(f, id, 10, 150);
  f.proc.kill('SIGTERM');
  await sleep(300);
  // Stop accepting: a new connection is refused, or answered with Connection: close.
  const fresh = await rawExchange(f.port, 'GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n', { waitClose: true, timeout: 3000 });
  if (fresh.responses.length) assert.match(fresh.responses[0].get('connection') || '', /close/i);
  else assert.ok(fresh.error?.code === 'ECONNREFUSED' || fresh.closed, `new connection refused (${fresh.error?.code})`);
  const closed = await c.waitClosed(8000);
  const text = c.buf.toString('latin1');
  assert.match(text, /^HTTP\/1\.1 200/, 'the head had been sent');
  assert.ok(closed, 'ferry ends the connection after the stream');
  assert.match(text, /data: \[DONE\]\n\n\r\n0\r\n\r\n$/, 'the stream completed (drain deadline not reached)');
  const exit = await withTimeout(f.proc.exited, 5000, 'ferry to exit after the drain');
  assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null });
  if (ASAN) assertNoSanitizerReports(f.proc);
});

test('SIGTERM with a stream longer than --drain-timeout: truncated at the deadline, exit 0', T, async () => {
  const f = await ctx.startFerry({ upstream: ctx.mock.url, args: ['--drain-timeout', '1s'] });
  const id = newId();
  const c = await startStream(f, id, 100, 100);
  const t0 = Date.now();
  f.proc.kill('SIGTERM');
  const exit = await withTimeout(f.proc.exited, 6000, 'ferry to exit at the drain deadline');
  assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null });
  assert.ok(Date.now() - t0 >= 800, 'the stream was given the drain time');
  assert.ok(await c.waitClosed(3000), 'client connection closed');
  const text = c.buf.toString('latin1');
  assert.match(text, /^HTTP\/1\.1 200/);
  assert.doesNotMatch(text, /\[DONE\]/, 'never a fabricated [DONE]');
  assert.doesNotMatch(text, /\r\n0\r\n\r\n$/, 'no terminating chunk: a visible truncation');
  await ctx.mock.waitEntry(id, (e) => e.client_aborted, { timeout: 3000, what: 'upstream cancelled' });
  if (ASAN) assertNoSanitizerReports(f.proc);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  test(`${sig} with an idle keep-alive connection: prompt exit 0`, T, async () => {
    const f = await ctx.startFerry({ upstream: ctx.mock.url });
    const c = new RawConn(f.port);
    await c.connected;
    c.write('GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal((await c.next()).status, 200);
    const t0 = Date.now();
    f.proc.kill(sig);
    const exit = await withTimeout(f.proc.exited, 5000, `ferry to exit on ${sig}`);
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null });
    assert.ok(Date.now() - t0 < 3000, `exited in ${Date.now() - t0} ms`);
    assert.ok(await c.waitClosed(1000), 'idle connection closed');
    c.close();
    if (ASAN) assertNoSanitizerReports(f.proc);
  });
}

test('a client that vanishes while ferry writes does not kill it (SIGPIPE ignored)', T, async () => {
  const f = await ctx.startFerry({ upstream: ctx.mock.url });
  for (let i = 0; i < 5; i++) {
    const s = net.connect(f.port, '127.0.0.1');
    await new Promise((r) => s.once('connect', r));
    s.write('POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nx-mock-bytes: 20000000\r\nContent-Length: 2\r\n\r\n{}');
    await sleep(100);
    s.resetAndDestroy ? s.resetAndDestroy() : s.destroy();
  }
  await sleep(300);
  assert.equal(f.proc.exit, null, `ferry died: ${JSON.stringify(f.proc.exit)}`);
  assert.equal((await rawHttp({ port: f.port, path: '/v1/models' })).status, 200);
});

