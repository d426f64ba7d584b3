// Slow clients: slowloris (a head that never ends), slow body (an upload that stalls), slow read
// (a response nobody reads), from bounded clients written here and from one bounded run of
// Debian's slowhttptest. ferry must cut each of them by its timers (--head-timeout and
// --body-timeout: a 408 JSON; --write-timeout: the connection closed) while a normal client on
// the same ferry keeps getting fast answers: its p50/p99 latency during each attack is printed
// and p99 must stay under a generous bound.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import {
  setup, rawHttp, parseResponses, assertErrorJson, sleep, waitFor, ASAN, header, quietFdCount, fdTargets,
} from './lib.mjs';

const TIMEOUT_S = 2;
const ctx = setup({
  ferryArgs: ['--head-timeout', `${TIMEOUT_S}s`, '--body-timeout', `${TIMEOUT_S}s`, '--write-timeout', `${TIMEOUT_S}s`],
});
const P99_BOUND = 500; // ms, for a request that takes ~1-3 ms when ferry is idle
const T = { timeout: 30000 };

function quantile(sorted, q) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/** The normal client: sequential GET /v1/models on fresh connections until stop() is called. */
function probe(port) {
  const lat = [];
  const errors = [];
  let running = true;
  const done = (async () => {
    while (running) {
      const t0 = performance.now();
      try {
        const r = await rawHttp({ port, path: '/v1/models', timeout: 5000 });
        if (r.status !== 200) errors.push(`status ${r.status}`);
        lat.push(performance.now() - t0);
      } catch (e) {
        errors.push(e.message);
      }
      await sleep(20);
    }
  })();
  return {
    /** Stops the client and prints its latency; never throws (call check() to assert). */
    async stop(label) {
      running = false;
      await done;
      const s = [...lat].sort((a, b) => a - b);
      const res = { label, n: s.length, p50: quantile(s, 0.5), p99: quantile(s, 0.99), max: s[s.length - 1], errors };
      console.log(`# ${label}: normal client ${res.n} requests, p50 ${res.p50?.toFixed(1)} ms, ` +
        `p99 ${res.p99?.toFixed(1)} ms, max ${res.max?.toFixed(1)} ms, errors ${errors.length}`);
      return res;
    },
  };
}

function checkProbe(res) {
  assert.deepEqual(res.errors, [], `${res.label}: the normal client failed`);
  assert.ok(res.n >= 10, `${res.label}: the normal client made only ${res.n} requests`);
  assert.ok(res.p99 < P99_BOUND, `${res.label}: p99 ${res.p99.toFixed(1)} ms >= ${P99_BOUND} ms`);
}

/** Runs attack() while the normal client runs; stops the client whatever happens. */
async function duringAttack(label, attack, port = ctx.ferry.port) {
  const pr = probe(port);
  let res;
  try {
    await attack();
  } finally {
    res = await pr.stop(label);
  }
  return res;
}

/** A raw client connection that records what comes back and when it ends. */
function attacker(port) {
  const s = net.connect({ port, host: '127.0.0.1' });
  const a = { sock: s, chunks: [], closedAt: 0, error: null, t0: performance.now() };
  a.connected = new Promise((res, rej) => { s.once('connect', res); s.once('error', rej); });
  a.closed = new Promise((res) => {
    s.on('data', (d) => a.chunks.push(d));
    s.on('error', (e) => { a.error = e; });
    s.on('close', () => { a.closedAt = performance.now(); res(); });
  });
  a.text = () => Buffer.concat(a.chunks).toString('latin1');
  return a;
}

/** ferry's descriptors return to what they were before the attack. */
async function fdsBackTo(baseline) {
  let now = -1;
  try {
    await waitFor(async () => (now = await quietFdCount(ctx.ferry, { warm: 2 })) === baseline, { timeout: 8000, interval: 100 });
  } catch {
    assert.fail(`ferry holds ${now} descriptors, ${baseline} before: ${JSON.stringify(fdTargets(ctx.ferry.pid))}`);
  }
}

/** Every attacker got exactly one 408 JSON with Connection: close, after about TIMEOUT_S. */
function assert408(attackers, label) {
  const took = [];
  for (const a of attackers) {
    const { responses } = parseResponses(Buffer.concat(a.chunks), { eof: true });
    assert.equal(responses.length, 1, `${label}: one response, got ${JSON.stringify(a.text().slice(0, 200))}`);
    assert.equal(responses[0].status, 408, `${label}: ${JSON.stringify(a.text().slice(0, 200))}`);
    assert.match(responses[0].get('connection') || '', /close/i);
    assertErrorJson(responses[0].text, `${label} 408`);
    assert.ok(a.closedAt > 0, `${label}: ferry closed the connection`);
    took.push(a.closedAt - a.t0);
  }
  took.sort((x, y) => x - y);
  console.log(`# ${label}: ${attackers.length} connections cut after ${(took[0] / 1000).toFixed(2)}-` +
    `${(took[took.length - 1] / 1000).toFixed(2)} s (timeout ${TIMEOUT_S} s)`);
  assert.ok(took[0] >= TIMEOUT_S * 1000 - 100, `${label}: cut before the timeout (${took[0].toFixed(0)} ms)`);
  assert.ok(took[took.length - 1] <= TIMEOUT_S * 1000 + (ASAN ? 3000 : 1500),
    `${label}: cut late (${took[took.length - 1].toFixed(0)} ms)`);
}

test('slowloris: 100 heads trickled a field every 300 ms get 408 at --head-timeout; others stay fast', T, async () => {
  await ctx.mock.reset();
  const baseline = await quietFdCount(ctx.ferry);
  const attackers = [];
  const res = await duringAttack('slowloris (own client, 100 connections)', async () => {
    for (let i = 0; i < 100; i++) attackers.push(attacker(ctx.ferry.port));
    await Promise.all(attackers.map((a) => a.connected));
    for (const a of attackers) { a.t0 = performance.now(); a.sock.write('GET /v1/models?slowloris HTTP/1.1\r\nHost: x\r\n'); }
    let n = 0;
    const trickle = setInterval(() => {
      n++;
      for (const a of attackers) if (!a.closedAt) a.sock.write(`X-Slow-${n}: ${'a'.repeat(8)}\r\n`);
    }, 300);
    try {
      await Promise.race([Promise.all(attackers.map((a) => a.closed)), sleep(TIMEOUT_S * 1000 + 6000)]);
    } finally {
      clearInterval(trickle);
      for (const a of attackers) a.sock.destroy();
    }
  });
  assert408(attackers, 'slowloris');
  checkProbe(res);
  const reached = (await ctx.mock.log()).filter((e) => e.target.includes('slowloris'));
  assert.equal(reached.length, 0, 'no slow head reached the upstream');
  await fdsBackTo(baseline);
});

test('slow body: 50 uploads that stall get 408 at --body-timeout and their upstream calls are cancelled', T, async () => {
  await ctx.mock.reset();
  const attackers = [];
  const res = await duringAttack('slow body (own client, 50 uploads)', async () => {
    for (let i = 0; i < 50; i++) attackers.push(attacker(ctx.ferry.port));
    await Promise.all(attackers.map((a) => a.connected));
    for (const [i, a] of attackers.entries()) {
      a.sock.write(`POST /v1/files HTTP/1.1\r\nHost: x\r\nx-test-id: slow-body-${i}\r\nContent-Type: application/octet-stream\r\n` +
        'Content-Length: 100000\r\n\r\n0123456789');
      a.t0 = performance.now(); // the body timer counts from the last bytes read
    }
    try {
      await Promise.race([Promise.all(attackers.map((a) => a.closed)), sleep(TIMEOUT_S * 1000 + 6000)]);
    } finally {
      for (const a of attackers) a.sock.destroy();
    }
  });
  assert408(attackers, 'slow body');
  checkProbe(res);
  // The relay had started the upstream calls (uploads stream); every one must end cancelled.
  await waitFor(async () => {
    const log = (await ctx.mock.log()).filter((e) => /^slow-body-/.test(header(e.headers, 'x-test-id') || ''));
    return log.length === 50 && log.every((e) => e.client_aborted && !e.completed);
  }, { timeout: 5000, what: 'every stalled upload cancelled upstream' });
});

test('slow read: 10 clients that never read a 32 MB answer are closed at --write-timeout, upstream cancelled', T, async () => {
  await ctx.mock.reset();
  const baseline = await quietFdCount(ctx.ferry);
  const mark = ctx.ferry.mark();
  const attackers = [];
  const cut = () => ctx.ferry.proc.lines.slice(mark).filter((l) => /path=\/v1\/audio\/speech .*end=timeout/.test(l));
  let took = 0;
  let res;
  try {
    res = await duringAttack('slow read (own client, 10 x 32 MB unread)', async () => {
      for (let i = 0; i < 10; i++) attackers.push(attacker(ctx.ferry.port));
      await Promise.all(attackers.map((a) => a.connected));
      for (const [i, a] of attackers.entries()) {
        a.sock.pause(); // never read: the kernel buffers fill, then ferry's writes make no progress
        a.sock.write(`POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nx-test-id: slow-read-${i}\r\nx-mock-bytes: ${32 << 20}\r\n` +
          'Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}');
      }
      const t0 = performance.now();
      // ferry ends each one (access log end=timeout) while the clients still hold their sockets unread.
      try {
        await waitFor(() => cut().length >= 10, { timeout: 15000 });
      } catch {
        assert.fail(`ferry ended ${cut().length} of the 10 unread responses within 15 s (--write-timeout ${TIMEOUT_S}s): ` +
          'a client that stops reading must be closed after --write-timeout without progress');
      }
      took = performance.now() - t0;
    });
    console.log(`# slow read: all 10 cut ${(took / 1000).toFixed(2)} s after the requests (write timeout ${TIMEOUT_S} s)`);
    checkProbe(res);
    await waitFor(async () => {
      const log = (await ctx.mock.log()).filter((e) => /^slow-read-/.test(header(e.headers, 'x-test-id') || ''));
      return log.length === 10 && log.every((e) => e.client_aborted && !e.completed);
    }, { timeout: 5000, what: 'every unread answer cancelled upstream' });
    for (const a of attackers) assert.equal(a.closedAt, 0, 'the client never read, so it has not seen the close yet');
  } finally {
    for (const a of attackers) a.sock.destroy();
  }
  await fdsBackTo(baseline);
});

// A connection that never sends a byte has no request head yet: ferry counts it as idle, so it is
// closed by --keepalive-timeout, silently (RFC 9112 §9.5: nothing to answer).
test('100 connections that never send a byte are closed silently at --keepalive-timeout', T, async () => {
  const f = await ctx.startFerry({ upstream: ctx.mock.url, args: ['--keepalive-timeout', '2s', '--head-timeout', '1s'] });
  const attackers = [];
  const res = await duringAttack('idle connections (100, nothing sent)', async () => {
    for (let i = 0; i < 100; i++) attackers.push(attacker(f.port));
    await Promise.all(attackers.map((a) => a.connected));
    for (const a of attackers) a.t0 = performance.now();
    try {
      await Promise.race([Promise.all(attackers.map((a) => a.closed)), sleep(8000)]);
    } finally {
      for (const a of attackers) a.sock.destroy();
    }
  }, f.port);
  const took = attackers.map((a) => (a.closedAt ? a.closedAt - a.t0 : Infinity)).sort((x, y) => x - y);
  console.log(`# idle connections: closed after ${(took[0] / 1000).toFixed(2)}-${(took[took.length - 1] / 1000).toFixed(2)} s ` +
    '(--head-timeout 1s, --keepalive-timeout 2s)');
  checkProbe(res);
  assert.ok(took[took.length - 1] < 2000 + (ASAN ? 3000 : 1500), `all closed by the keep-alive timeout (${took[took.length - 1]} ms)`);
  for (const a of attackers) assert.equal(a.chunks.length, 0, `closed silently, got ${JSON.stringify(a.text().slice(0, 100))}`);
});

test('slowhttptest -H (slowloris, 200 connections, 10 s): connections are closed, service stays available', T, async (t) => {
  if (!existsSync('/usr/bin/slowhttptest')) { t.skip('slowhttptest is not installed (scripts/deps.sh test)'); return; }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-slowhttptest-'));
  try {
    let out;
    const res = await duringAttack('slowhttptest -H (200 connections)', async () => {
      out = await new Promise((resolve) => {
        execFile('slowhttptest', ['-H', '-c', '200', '-r', '100', '-i', '1', '-x', '24', '-l', '10', '-p', '2',
          '-u', `http://127.0.0.1:${ctx.ferry.port}/v1/models`, '-g', '-o', path.join(dir, 'stats')],
        { timeout: 25000, encoding: 'utf8' }, (err, stdout, stderr) => resolve({ err, stdout, stderr }));
      });
    });
    const csv = readFileSync(path.join(dir, 'stats.csv'), 'utf8').trim().split('\n');
    console.log(`# slowhttptest csv:\n#   ${csv.join('\n#   ')}`);
    const rows = csv.slice(1).map((l) => l.split(','));
    // Seconds, Closed, Pending, Connected, Service Available
    const last = rows[rows.length - 1];
    const closed = Number(last[1]);
    const maxConnected = Math.max(...rows.map((r) => Number(r[3])));
    const unavailable = rows.filter((r) => Number(r[4]) === 0).length;
    console.log(`# slowhttptest: ${rows.length} s, closed ${closed}, max connected ${maxConnected}, ` +
      `seconds with the service unavailable: ${unavailable}; ${(out.stdout.match(/exit status: .*/) || [''])[0]}`);
    checkProbe(res);
    assert.ok(closed >= 150, `ferry closed the slow connections by its head timeout (closed ${closed} of 200)`);
    assert.equal(unavailable, 0, 'slowhttptest\'s own probe found the service unavailable');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
