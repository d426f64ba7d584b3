// Upstream behaviours the mock does not produce, from a tiny raw-socket upstream written here: an upstream
// that sets its own CORS headers (ferry's `*` is set, not duplicated), a chunked non-SSE body and a
// close-delimited body (both streamed, X-Accel-Buffering: no, re-framed correctly), response headers named
// in Connection, repeated Set-Cookie, and an upstream that answers garbage or nothing (502, never a drop).
// Every case runs twice: through ferry's own upstream client and through libcurl (--upstream-client curl).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { startFerry, rawExchange, RawConn, assertCors, assertErrorJson, sleep, T } from './lib.mjs';

let upstream = null;
const ferries = {};
const sockets = new Set();

/** Canned answers, chosen by the request path. Each gets the socket and writes what it wants. */
const ROUTES = {
  '/acao': (s) => s.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nAccess-Control-Allow-Origin: https://only.example\r\n' +
    'Access-Control-Expose-Headers: x-custom\r\nX-Custom: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}'),
  '/chunked': async (s) => {
    s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n');
    for (let i = 0; i < 4; i++) {
      s.write(`6\r\npiece${i}\r\n`);
      await sleep(150);
    }
    s.end('0\r\n\r\n');
  },
  '/close-delimited': async (s) => {
    s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nfirst;');
    await sleep(150);
    s.end('second;last');
  },
  '/hop': (s) => s.end('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close, X-Hop-Secret\r\nX-Hop-Secret: internal\r\n' +
    'Keep-Alive: timeout=5\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; Path=/\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok'),
  '/garbage': (s) => s.end('this is not HTTP\r\n\r\n'),
  '/nothing': (s) => s.end(),
  '/half-head': (s) => s.end('HTTP/1.1 200 OK\r\nContent-Type: text/pl'),
  // framing fields on an answer that has no body (RFC 9110 8.6); the upstream keeps the socket
  // open, so a relay that waited for those 5 bytes would hang
  '/304': (s) => s.write('HTTP/1.1 304 Not Modified\r\nETag: "x"\r\nContent-Length: 5\r\nConnection: close\r\n\r\n'),
  '/103': (s) => s.end('HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n' +
    'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok'),
  // 256 fields (the most ferry relays) and 257
  '/fields-256': (s) => s.end(manyFields(254)),
  '/fields-257': (s) => s.end(manyFields(255)),
};

/** A 200 with n X-F-i fields plus Content-Length and Connection. */
function manyFields(n) {
  let h = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n';
  for (let i = 0; i < n; i++) h += `X-F-${i}: ${i}\r\n`;
  return `${h}\r\nok`;
}

before(async () => {
  upstream = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let buf = '';
    s.on('data', (d) => {
      if (buf === null) return;
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const path = buf.slice(0, buf.indexOf('\r\n')).split(' ')[1];
      buf = null;
      const route = ROUTES[path];
      if (route) Promise.resolve(route(s)).catch(() => s.destroy());
      else s.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    });
  });
  await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
  const up = `http://127.0.0.1:${upstream.address().port}`;
  ferries.ferry = await startFerry({ upstream: up });
  ferries.curl = await startFerry({ upstream: up, args: ['--upstream-client', 'curl'] });
}, { timeout: 30000 });

after(async () => {
  try {
    for (const f of Object.values(ferries)) await f.stop(); // throws on a sanitizer report (FERRY_ASAN=1)
  } finally {
    for (const s of sockets) s.destroy();
    if (upstream) await new Promise((r) => upstream.close(r));
  }
}, { timeout: 20000 });

for (const client of ['ferry', 'curl']) {
const get = (path) => rawExchange(ferries[client].port, `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`, { count: 1, timeout: 8000 });

test(`[${client}] an upstream's own Access-Control-Allow-Origin is replaced by "*", not duplicated`, T, async () => {
  const w = await get('/acao');
  const r = w.responses[0];
  assert.equal(r?.status, 200, w.text.slice(0, 300));
  assertCors(r.headers, '/acao');
  assert.equal(r.text, '{}');
});

test(`[${client}] a chunked (non-SSE) body streams piece by piece, with X-Accel-Buffering: no`, T, async () => {
  const c = new RawConn(ferries[client].port);
  try {
    await c.connected;
    const seen = [];
    const t0 = performance.now();
    c.write('GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n');
    const watch = setInterval(() => {
      const text = c.buf.toString('latin1');
      for (let i = 0; i < 4; i++) if (!seen[i] && text.includes(`piece${i}`)) seen[i] = performance.now() - t0;
    }, 5);
    const r = await c.next({ timeout: 8000 });
    clearInterval(watch);
    assert.equal(r.text, 'piece0piece1piece2piece3');
    assert.deepEqual(r.getAll('x-accel-buffering'), ['no']);
    assert.ok(seen[3] - seen[0] >= 300, `pieces arrived spread out: ${seen.map((x) => x?.toFixed(0)).join(',')} ms`);
  } finally {
    c.close();
  }
});

test(`[${client}] a close-delimited body reaches the client whole and properly framed`, T, async () => {
  const w = await get('/close-delimited');
  const r = w.responses[0];
  assert.ok(r, `a complete response: ${JSON.stringify(w.text.slice(0, 300))}`);
  assert.equal(r.status, 200);
  assert.equal(r.text, 'first;second;last');
  assert.ok(r.chunked || r.get('connection') === 'close', 'chunked, or close-delimited with Connection: close');
  assert.deepEqual(r.getAll('x-accel-buffering'), ['no']);
});

test(`[${client}] response: headers named in Connection and Keep-Alive are removed; Set-Cookie repeats are kept`, T, async () => {
  const r = (await get('/hop')).responses[0];
  assert.equal(r?.status, 200);
  assert.equal(r.get('x-hop-secret'), undefined, 'a header the upstream named in Connection is hop-by-hop');
  assert.equal(r.get('keep-alive'), undefined);
  assert.deepEqual(r.getAll('set-cookie'), ['a=1; Path=/', 'b=2; Path=/']);
  assert.equal(r.get('x-kept'), 'yes');
});

for (const [path, what] of [['/garbage', 'a non-HTTP answer'], ['/nothing', 'a close without an answer'], ['/half-head', 'half a head']]) {
  test(`[${client}] ${what} from the upstream → 502 JSON (never a dropped connection)`, T, async () => {
    const w = await get(path);
    const r = w.responses[0];
    assert.ok(r, `a response, not a drop: ${JSON.stringify(w.text.slice(0, 300))} (closed=${w.closed})`);
    assert.equal(r.status, 502);
    assertErrorJson(r.text, `${path} 502`);
    assertCors(r.headers, `${path} 502`);
  });
}

test(`[${client}] a 304 whose head announces a body is complete at its head; a 103 before the answer is not relayed`, T, async () => {
  const w = await get('/304');
  const r = w.responses[0];
  assert.equal(r?.status, 304, JSON.stringify(w.text.slice(0, 300)));
  assert.equal(r.text, '');
  const w2 = await get('/103');
  assert.equal(w2.responses[0]?.status, 200, JSON.stringify(w2.text.slice(0, 300)));
  assert.equal(w2.responses[0].text, 'ok');
  assert.ok(!w2.text.includes('103'), 'the interim answer stays between ferry and the upstream');
});

test(`[${client}] an answer with 256 fields is relayed whole; with 257, the built-in client answers 502 (libcurl's cuts at 256)`, T, async () => {
  const w = await get('/fields-256');
  const r = w.responses[0];
  assert.equal(r?.status, 200, JSON.stringify(w.text.slice(0, 300)));
  assert.equal(r.text, 'ok');
  assert.equal(r.get('x-f-0'), '0');
  assert.equal(r.get('x-f-253'), '253');
  const w2 = await get('/fields-257');
  const r2 = w2.responses[0];
  if (client === 'ferry') {
    assert.equal(r2?.status, 502, JSON.stringify(w2.text.slice(0, 300)));
    assertErrorJson(r2.text, '/fields-257 502');
    assert.match(r2.text, /more than 256 fields/);
  } else {
    assert.equal(r2?.status, 200, JSON.stringify(w2.text.slice(0, 300)));
    assert.equal(r2.get('x-f-253'), '253');
    assert.equal(r2.get('x-f-254'), undefined);
  }
});
}
