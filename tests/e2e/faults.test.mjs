// Faults on both sides, each with how the request ended and nothing leaked.
// Upstream: refused, reset before the head, reset mid-body, silent before the head (first-byte
// timeout), silent mid-stream (idle timeout), malformed framing (the next request still works),
// TLS failure, a slow connect, gzip bodies passed through byte for byte. Client: gone before the
// head is complete, during the upload, while the upstream connects, while waiting for the first
// byte, mid-stream, and while the response is paused by backpressure.
// For each: the status or truncation the client sees, the access log's end=, the mock's
// client_aborted where the request reached it, exactly one access-log line per request, and
// ferry's descriptor count back to its baseline after each batch.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import zlib from 'node:zlib';
import { spawn } from 'node:child_process';
import {
  setup, makeCerts, newId, req, rawExchange, RawConn, assertErrorJson, sleep, waitFor, header, deadPort,
  quietFdCount, fdTargets, Ferry,
} from './lib.mjs';

const certs = makeCerts();
after(() => certs.cleanup());
const ctx = setup({
  mockOpts: { cert: certs.cert, key: certs.key },
  ferryArgs: ['--first-byte-timeout', '2s', '--idle-timeout', '1s', '--connect-timeout', '3s'],
});
const T = { timeout: 20000 };
const CHAT = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] });
const STREAM = JSON.stringify({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'x' }] });

/** A raw chat request with fault headers. */
function chat(id, faults = [], body = CHAT) {
  return req('POST', '/v1/chat/completions', [['Host', 'x'], ['x-test-id', id], ['Content-Type', 'application/json'],
    ['Content-Length', body.length], ...faults], body);
}

/** Waits for the access-log line of the request started after `mark`; checks that it is the only one. */
async function oneLogLine(ferry, mark, what) {
  const { fields } = await ferry.waitLog(mark, () => true, { timeout: 8000 });
  await sleep(150);
  const since = ferry.proc.lines.slice(mark).filter((l) => l.startsWith('ts='));
  assert.equal(since.length, 1, `${what}: one access-log line per request, got:\n${since.join('\n')}`);
  return fields;
}

async function expectFdsBack(ferry, baseline, what, warm = 2) {
  let now = -1;
  try {
    await waitFor(async () => (now = await quietFdCount(ferry, { warm })) === baseline, { timeout: 8000, interval: 100 });
  } catch {
    assert.fail(`${what}: ferry holds ${now} descriptors, ${baseline} before the batch: ${JSON.stringify(fdTargets(ferry.pid))}`);
  }
}

const results = [];
function note(what, seen, end) {
  results.push(`${what}: ${seen}, end=${end}`);
}

// ---------------------------------------------------------------------------------------------
describe('upstream faults (mock fault injection), one ferry, no descriptor leaked', () => {
  let baseline;
  before(async () => { baseline = await quietFdCount(ctx.ferry); });
  after(async () => {
    for (const r of results.splice(0)) console.log(`# ${r}`);
  });

  test('reset before the head → 502 JSON, end=upstream_error', T, async () => {
    const id = newId();
    const mark = ctx.ferry.mark();
    const w = await rawExchange(ctx.ferry.port, chat(id, [['x-mock-reset', 'before-headers']]), { count: 1, timeout: 8000 });
    const r = w.responses[0];
    assert.equal(r?.status, 502, w.text.slice(0, 300));
    assertErrorJson(r.text);
    const f = await oneLogLine(ctx.ferry, mark, 'reset before the head');
    assert.equal(f.end, 'upstream_error');
    note('reset before the head', `${r.status} JSON`, f.end);
  });

  test('reset mid-body of a stream → head, then a visible truncation (no last chunk, no [DONE])', T, async () => {
    const id = newId();
    const mark = ctx.ferry.mark();
    const w = await rawExchange(ctx.ferry.port, chat(id, [['x-mock-reset', 'mid-body'], ['x-mock-chunks', '20']], STREAM),
      { waitClose: true, timeout: 8000 });
    assert.equal(w.responses.length, 0, 'no complete response');
    assert.equal(w.partial?.status, 200, w.text.slice(0, 300));
    assert.doesNotMatch(w.text, /\[DONE\]/);
    const f = await oneLogLine(ctx.ferry, mark, 'reset mid-body (stream)');
    assert.equal(f.end, 'upstream_error');
    note('reset mid-body (stream)', `200 head, truncated after ${w.partial.body.length} body bytes`, f.end);
  });

  test('reset mid-body of a Content-Length answer → the client gets less than Content-Length', T, async () => {
    const id = newId();
    const mark = ctx.ferry.mark();
    const w = await rawExchange(ctx.ferry.port, req('POST', '/v1/audio/speech', [['Host', 'x'], ['x-test-id', id],
      ['x-mock-reset', 'mid-body'], ['x-mock-bytes', '200000'], ['Content-Type', 'application/json'], ['Content-Length', 2]], '{}'),
    { waitClose: true, timeout: 8000 });
    assert.equal(w.responses.length, 0, 'no complete response');
    assert.equal(w.partial?.status, 200, w.text.slice(0, 300));
    const cl = Number(w.partial.get('content-length') ?? NaN);
    assert.ok(!(w.partial.body.length >= cl), `truncated: ${w.partial.body.length} of ${cl}`);
    const f = await oneLogLine(ctx.ferry, mark, 'reset mid-body (Content-Length)');
    assert.equal(f.end, 'upstream_error');
    note('reset mid-body (Content-Length)', `200 head, ${w.partial.body.length} of ${cl} bytes`, f.end);
  });

  test('silent before the head past --first-byte-timeout (2s) → 504 JSON, upstream cancelled', T, async () => {
    const id = newId();
    const mark = ctx.ferry.mark();
    const t0 = Date.now();
    const w = await rawExchange(ctx.ferry.port, chat(id, [['x-mock-delay-ms', '6000']]), { count: 1, timeout: 8000 });
    const r = w.responses[0];
    assert.equal(r?.status, 504, w.text.slice(0, 300));
    assertErrorJson(r.text);
    const took = Date.now() - t0;
    assert.ok(took >= 1900 && took < 4000, `answered after ${took} ms`);
    const f = await oneLogLine(ctx.ferry, mark, 'silent before the head');
    assert.equal(f.end, 'timeout');
    await ctx.mock.waitEntry(id, (e) => e.client_aborted, { what: 'the upstream call cancelled' });
    note('silent before the head', `${r.status} JSON after ${took} ms`, f.end);
  });

  test('silent mid-stream past --idle-timeout (1s) → truncated, upstream cancelled', T, async () => {
    const id = newId();
    const mark = ctx.ferry.mark();
    const t0 = Date.now();
    const w = await rawExchange(ctx.ferry.port, chat(id, [['x-mock-chunks', '5'], ['x-mock-chunk-delay-ms', '4000']], STREAM),
      { waitClose: true, timeout: 8000 });
    assert.equal(w.timedOut, false);
    assert.equal(w.partial?.status, 200, w.text.slice(0, 300));
    assert.doesNotMatch(w.text, /\[DONE\]/);
    const f = await oneLogLine(ctx.ferry, mark, 'silent mid-stream');
    assert.equal(f.end, 'timeout');
    await ctx.mock.waitEntry(id, (e) => e.client_aborted, { what: 'the upstream call cancelled' });
    note('silent mid-stream', `200 head, truncated after ${Date.now() - t0} ms`, f.end);
  });

  test('malformed framing from the upstream → truncated; the following requests work', T, async () => {
    for (const [label, body] of [['stream', STREAM], ['non-stream', CHAT]]) {
      const id = newId();
      const mark = ctx.ferry.mark();
      const w = await rawExchange(ctx.ferry.port, chat(id, [['x-mock-bad-framing', '1']], body), { waitClose: true, timeout: 8000 });
      assert.equal(w.responses.length, 0, `${label}: no complete response: ${w.text.slice(0, 200)}`);
      const seen = w.partial ? `${w.partial.status} head, truncated` : `${w.text.slice(9, 12)} (no body)`;
      if (!w.partial) assert.equal(w.text.slice(9, 12), '502', `${label}: ${w.text.slice(0, 200)}`);
      const f = await oneLogLine(ctx.ferry, mark, `bad framing (${label})`);
      assert.equal(f.end, 'upstream_error');
      note(`malformed framing (${label})`, seen, f.end);
      // The broken upstream connection is not reused: the next requests are whole.
      for (let i = 0; i < 3; i++) {
        const m2 = ctx.ferry.mark();
        const ok = await rawExchange(ctx.ferry.port, chat(newId(), [], STREAM), { count: 1, timeout: 8000 });
        assert.equal(ok.responses[0]?.status, 200, `${label}: request ${i} after the bad framing`);
        assert.match(ok.responses[0].text, /data: \[DONE\]/);
        assert.equal((await oneLogLine(ctx.ferry, m2, 'after bad framing')).end, 'ok');
      }
    }
  });

  test('upstream closes mid-stream (x-mock-close-after) → truncated, end=upstream_error', T, async () => {
    const mark = ctx.ferry.mark();
    const w = await rawExchange(ctx.ferry.port, chat(newId(), [['x-mock-close-after', '2']], STREAM), { waitClose: true, timeout: 8000 });
    assert.equal(w.partial?.status, 200, w.text.slice(0, 300));
    assert.doesNotMatch(w.text, /\[DONE\]/);
    const f = await oneLogLine(ctx.ferry, mark, 'close mid-stream');
    assert.equal(f.end, 'upstream_error');
    note('upstream FIN mid-stream', '200 head, truncated', f.end);
  });

  test('after the batch: ferry holds as many descriptors as before', T, async () => {
    await expectFdsBack(ctx.ferry, baseline, 'upstream faults');
  });
});

// ---------------------------------------------------------------------------------------------
describe('upstreams that fail to connect', () => {
  test('refused (nothing listens) → 502 JSON, end=upstream_error, no descriptor leaked', T, async () => {
    const f = await ctx.startFerry({ upstream: `http://127.0.0.1:${await deadPort()}` });
    const base = await quietFdCount(f, { warm: 0 });
    for (let i = 0; i < 5; i++) {
      const mark = f.mark();
      const w = await rawExchange(f.port, chat(newId()), { count: 1, timeout: 8000 });
      assert.equal(w.responses[0]?.status, 502, w.text.slice(0, 300));
      assertErrorJson(w.responses[0].text);
      const fields = await oneLogLine(f, mark, 'refused');
      assert.equal(fields.end, 'upstream_error');
      if (i === 0) note('connection refused', '502 JSON', fields.end);
    }
    await expectFdsBack(f, base, 'refused', 0);
  });

  test('TLS failure (unknown CA; TLS to a plain port) → 502 JSON, end=upstream_error, no leak', T, async () => {
    for (const [label, url, args] of [
      ['certificate not verified', `https://127.0.0.1:${ctx.mock.tlsPort}`, ['--ca-file', certs.otherCa]],
      ['TLS to a plain HTTP port', `https://127.0.0.1:${ctx.mock.port}`, ['--ca-file', certs.ca]],
    ]) {
      const f = await ctx.startFerry({ upstream: url, args });
      const base = await quietFdCount(f, { warm: 0 });
      for (let i = 0; i < 3; i++) {
        const mark = f.mark();
        const w = await rawExchange(f.port, chat(newId()), { count: 1, timeout: 8000 });
        assert.equal(w.responses[0]?.status, 502, `${label}: ${w.text.slice(0, 300)}`);
        assertErrorJson(w.responses[0].text);
        const fields = await oneLogLine(f, mark, label);
        assert.equal(fields.end, 'upstream_error');
        if (i === 0) note(`TLS: ${label}`, '502 JSON', fields.end);
      }
      await expectFdsBack(f, base, label, 0);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// An upstream that never accepts: a listening socket whose accept queue is full, so a new
// connection stays in SYN-SENT (the kernel drops the SYNs). Held by a small python helper.

function blackhole() {
  const code = [
    'import socket, sys, time',
    's = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)',
    'port = s.getsockname()[1]',
    'fill = []',
    'for i in range(8):',
    '    c = socket.socket(); c.setblocking(False)',
    '    try: c.connect(("127.0.0.1", port))',
    '    except BlockingIOError: pass',
    '    fill.append(c)',
    'time.sleep(0.3)',
    'print(port, flush=True)',
    'sys.stdin.read()',
  ].join('\n');
  const child = spawn('/usr/bin/python3', ['-c', code], { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = new Promise((resolve, reject) => {
    child.stdout.once('data', (d) => resolve(Number(String(d).trim())));
    child.once('exit', (c) => reject(new Error(`blackhole exited ${c}`)));
  });
  return { port, stop: () => { child.stdin.end(); child.kill(); } };
}

describe('an upstream that never accepts the connection', () => {
  let hole;
  before(async () => { hole = blackhole(); await hole.port; });
  after(() => hole.stop());

  test('connect timeout (--connect-timeout 1s) → 504/502 JSON, end=timeout|upstream_error', T, async () => {
    const f = await ctx.startFerry({ upstream: `http://127.0.0.1:${await hole.port}`, args: ['--connect-timeout', '1s'] });
    const base = await quietFdCount(f, { warm: 0 });
    const mark = f.mark();
    const t0 = Date.now();
    const w = await rawExchange(f.port, chat(newId()), { count: 1, timeout: 8000 });
    const r = w.responses[0];
    assert.ok([502, 504].includes(r?.status), w.text.slice(0, 300));
    assertErrorJson(r.text);
    const took = Date.now() - t0;
    assert.ok(took >= 900 && took < 4000, `answered after ${took} ms`);
    const fields = await oneLogLine(f, mark, 'connect timeout');
    assert.ok(['timeout', 'upstream_error'].includes(fields.end), fields.end);
    note('connect timeout', `${r.status} JSON after ${took} ms`, fields.end);
    await expectFdsBack(f, base, 'connect timeout', 0);
  });

  test('client gone while the upstream connects → end=client_closed, the connecting socket closed', T, async () => {
    const f = await ctx.startFerry({ upstream: `http://127.0.0.1:${await hole.port}`, args: ['--connect-timeout', '20s'] });
    const base = await quietFdCount(f, { warm: 0 });
    for (let i = 0; i < 5; i++) {
      const mark = f.mark();
      const c = new RawConn(f.port);
      await c.connected;
      c.write(chat(newId()));
      await sleep(300);
      c.close();
      const fields = await oneLogLine(f, mark, 'gone while connecting');
      assert.equal(fields.end, 'client_closed');
      if (i === 0) note('client gone while the upstream connects', 'connection closed by the client', fields.end);
    }
    await expectFdsBack(f, base, 'client gone while connecting', 0);
  });
});

// ---------------------------------------------------------------------------------------------
describe('client faults at every phase (main ferry), no descriptor leaked', () => {
  let baseline;
  before(async () => { baseline = await quietFdCount(ctx.ferry); });
  after(async () => {
    for (const r of results.splice(0)) console.log(`# ${r}`);
  });

  test('gone before the head is complete → nothing upstream, no request logged as served', T, async () => {
    await ctx.mock.reset();
    const mark = ctx.ferry.mark();
    for (const part of ['POST /v1/chat/comp', 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le']) {
      const c = new RawConn(ctx.ferry.port);
      await c.connected;
      c.write(part);
      await sleep(150);
      c.close();
    }
    await sleep(300);
    assert.equal((await ctx.mock.log()).length, 0, 'nothing reached the upstream');
    const lines = ctx.ferry.proc.lines.slice(mark).filter((l) => l.startsWith('ts='));
    for (const l of lines) assert.equal(Ferry.parseLog(l).end, 'client_closed', l);
    note('gone mid-head', `nothing upstream, ${lines.length} access lines`, lines.length ? 'client_closed' : '(none)');
  });

  test('gone during the upload → upstream cancelled (client_aborted), end=client_closed', T, async () => {
    const id = newId();
    const mark = ctx.ferry.mark();
    const c = new RawConn(ctx.ferry.port);
    await c.connected;
    c.write(req('POST', '/v1/files', [['Host', 'x'], ['x-test-id', id], ['Content-Type', 'application/octet-stream'],
      ['Content-Length', 20 * 1024 * 1024]]));
    c.write(Buffer.alloc(1024 * 1024, 'u'));
    await ctx.mock.waitEntry(id, (e) => e.body_bytes > 0, { what: 'upload bytes at the mock' });
    c.close();
    const e = await ctx.mock.waitEntry(id, (x) => x.client_aborted, { what: 'client_aborted' });
    assert.equal(e.completed, false);
    const f = await oneLogLine(ctx.ferry, mark, 'gone mid-upload');
    assert.equal(f.end, 'client_closed');
    note('gone mid-upload', `upstream client_aborted after ${e.body_bytes} bytes`, f.end);
  });

  test('gone while waiting for the first byte → upstream cancelled, end=client_closed', T, async () => {
    const id = newId();
    const mark = ctx.ferry.mark();
    const c = new RawConn(ctx.ferry.port);
    await c.connected;
    c.write(chat(id, [['x-mock-delay-ms', '5000']]));
    await ctx.mock.waitEntry(id, () => true, { what: 'the request at the mock' });
    await sleep(300);
    c.close();
    await ctx.mock.waitEntry(id, (x) => x.client_aborted, { timeout: 3000, what: 'client_aborted' });
    const f = await oneLogLine(ctx.ferry, mark, 'gone before the first byte');
    assert.equal(f.end, 'client_closed');
    note('gone before the first byte', 'upstream client_aborted', f.end);
  });

  test('gone mid-stream → upstream cancelled, end=client_closed', T, async () => {
    const id = newId();
    const mark = ctx.ferry.mark();
    const c = new RawConn(ctx.ferry.port);
    await c.connected;
    c.write(chat(id, [['x-mock-chunks', '200'], ['x-mock-chunk-delay-ms', '50']], STREAM));
    await waitFor(() => (c.buf.toString('latin1').match(/data: /g) || []).length >= 3, { what: 'three events' });
    c.close();
    const e = await ctx.mock.waitEntry(id, (x) => x.client_aborted, { timeout: 3000, what: 'client_aborted' });
    assert.equal(e.completed, false);
    const f = await oneLogLine(ctx.ferry, mark, 'gone mid-stream');
    assert.equal(f.end, 'client_closed');
    note('gone mid-stream', 'upstream client_aborted', f.end);
  });

  test('gone while the answer is paused by backpressure (64 MB, never read) → upstream cancelled', T, async () => {
    const id = newId();
    const mark = ctx.ferry.mark();
    const c = new RawConn(ctx.ferry.port);
    try {
      await c.connected;
      c.sock.pause();
      c.write(req('POST', '/v1/audio/speech', [['Host', 'x'], ['x-test-id', id], ['x-mock-bytes', 64 << 20],
        ['Content-Type', 'application/json'], ['Content-Length', 2]], '{}'));
      await ctx.mock.waitEntry(id, () => true, { what: 'the request at the mock' });
      await sleep(1000); // buffers full: ferry has paused the transfer (the mock blocks in write)
      const e0 = (await ctx.mock.entries(id))[0];
      assert.equal(e0.completed, false, 'the mock is still blocked writing');
    } finally {
      c.close();
    }
    const e = await ctx.mock.waitEntry(id, (x) => x.client_aborted, { timeout: 3000, what: 'client_aborted' });
    assert.equal(e.completed, false);
    const f = await oneLogLine(ctx.ferry, mark, 'gone while paused');
    assert.equal(f.end, 'client_closed');
    note('gone while paused by backpressure', `upstream client_aborted, ${f.bytes_out} bytes had gone out`, f.end);
  });

  test('after the batch: ferry holds as many descriptors as before', T, async () => {
    await expectFdsBack(ctx.ferry, baseline, 'client faults');
  });
});

// ---------------------------------------------------------------------------------------------
// Compressed bodies pass untouched: a raw upstream answers gzip bytes (Content-Length and
// chunked); the client must receive exactly those bytes with Content-Encoding: gzip, and the
// upstream must see the client's Accept-Encoding as sent (none added when the client sent none).

describe('gzip bodies are relayed byte for byte', () => {
  let up = null;
  let f = null;
  const seen = [];
  const PAYLOAD = zlib.gzipSync(Buffer.from(JSON.stringify({ object: 'list', data: Array.from({ length: 200 }, (_, i) => ({ id: `m${i}` })) })));
  before(async () => {
    up = net.createServer((s) => {
      let buf = '';
      s.on('error', () => {});
      s.on('data', (d) => {
        buf += d.toString('latin1');
        if (!buf.includes('\r\n\r\n')) return;
        seen.push(buf);
        const path = buf.split(' ')[1];
        const head = 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nConnection: close\r\n';
        if (path === '/cl') {
          s.end(Buffer.concat([Buffer.from(`${head}Content-Length: ${PAYLOAD.length}\r\n\r\n`), PAYLOAD]));
        } else {
          const half = PAYLOAD.length >> 1;
          s.write(`${head}Transfer-Encoding: chunked\r\n\r\n`);
          s.write(Buffer.concat([Buffer.from(`${half.toString(16)}\r\n`), PAYLOAD.subarray(0, half), Buffer.from('\r\n')]));
          setTimeout(() => s.end(Buffer.concat([Buffer.from(`${(PAYLOAD.length - half).toString(16)}\r\n`),
            PAYLOAD.subarray(half), Buffer.from('\r\n0\r\n\r\n')])), 50);
        }
      });
    });
    await new Promise((r) => up.listen(0, '127.0.0.1', r));
    f = await ctx.startFerry({ upstream: `http://127.0.0.1:${up.address().port}` });
  });
  after(() => new Promise((r) => up.close(r)));

  for (const path of ['/cl', '/chunked']) {
    for (const ae of ['gzip, deflate, br', null]) {
      test(`${path}, client Accept-Encoding ${ae ?? '(none)'}`, T, async () => {
        seen.length = 0;
        const headers = [['Host', 'x'], ...(ae ? [['Accept-Encoding', ae]] : [])];
        const w = await rawExchange(f.port, req('GET', path, headers), { count: 1, timeout: 8000 });
        const r = w.responses[0];
        assert.equal(r?.status, 200, w.text.slice(0, 300));
        assert.equal(r.get('content-encoding'), 'gzip');
        assert.ok(r.body.equals(PAYLOAD), `body differs: ${r.body.length} bytes vs ${PAYLOAD.length}`);
        assert.equal(zlib.gunzipSync(r.body).toString().slice(0, 17), '{"object":"list",');
        const upHead = seen[0] || '';
        const sentAe = /\r\naccept-encoding:\s*([^\r]*)/i.exec(upHead)?.[1];
        assert.equal(sentAe, ae ?? undefined, `Accept-Encoding upstream: ${JSON.stringify(upHead)}`);
      });
    }
  }
});
