// Strictness and limits over a raw socket: every ambiguous or malformed request gets 400 (405 for CONNECT)
// with `Connection: close` and never reaches the upstream; size limits answer 414/431/413 with JSON;
// absolute-form targets never change the upstream; keep-alive and pipelining answer in order.

import { test, describe, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  setup, newId, header, rawExchange, RawConn, assertCors, assertErrorJson, sleep, sha256, waitFor, T,
} from './lib.mjs';

const ctx = setup();
let small = null; // a ferry with small limits, to test the flags themselves
const SMALL_ARGS = ['--max-request-line', '1k', '--max-header-bytes', '4k', '--max-headers', '20',
  '--max-body', '1m', '--max-chunk-ext', '64'];

const BODY = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}';
const chunked = (s) => `${s.length.toString(16)}\r\n${s}\r\n0\r\n\r\n`;

/**
 * Send `raw` (latin1 string) to ferry; it must answer exactly one response with one of `statuses`,
 * say `Connection: close`, close the connection, carry CORS and JSON error, and the mock must log nothing.
 */
async function expectRejected(raw, { statuses = [400], port = ctx.ferry.port, json = true } = {}) {
  await ctx.mock.reset();
  const w = await rawExchange(port, raw, { waitClose: true, timeout: 5000 });
  const shown = JSON.stringify(w.text.slice(0, 400));
  assert.equal(w.error?.code === 'ECONNRESET' && w.responses.length === 0, false,
    `connection reset without a response (ferry must answer, not drop): ${shown}`);
  assert.ok(w.responses.length >= 1, `a complete response: got ${shown}`);
  assert.equal(w.responses.length, 1, `exactly one response (a second means a smuggled request): ${shown}`);
  const r = w.responses[0];
  assert.ok(statuses.includes(r.status), `status ${r.status}, expected ${statuses.join(' or ')}: ${shown}`);
  assert.match(r.get('connection') || '', /close/i, `Connection: close expected: ${shown}`);
  assert.equal(w.timedOut, false, `ferry closes the connection after the error: ${shown}`);
  if (json) {
    assertErrorJson(r.text, `${r.status} body`);
    assertCors(r.headers, `${r.status} response`);
  }
  await sleep(150);
  const log = await ctx.mock.log();
  assert.deepEqual(log.map((e) => `${e.method} ${e.target}`), [], 'nothing reaches the upstream');
  return r;
}

/** Send `raw`; expect one 200 (a positive control beside each limit). */
async function expectOk(raw, { port = ctx.ferry.port, status = 200 } = {}) {
  const w = await rawExchange(port, raw, { count: 1, timeout: 5000 });
  assert.equal(w.responses[0]?.status, status, `expected ${status}: ${JSON.stringify(w.text.slice(0, 400))}`);
  return w.responses[0];
}

describe('400 + Connection: close, nothing upstream', () => {
  const P = (extraHeaders, body = '', line = 'POST /v1/chat/completions HTTP/1.1') =>
    `${line}\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nx-test-id: ${newId()}\r\n${extraHeaders}\r\n${body}`;
  const G = (extraHeaders, line = 'GET /v1/models HTTP/1.1') =>
    `${line}\r\n${extraHeaders}x-test-id: ${newId()}\r\n\r\n`;
  const L = BODY.length;

  const cases = {
    'Content-Length with Transfer-Encoding': P(`Content-Length: ${L}\r\nTransfer-Encoding: chunked\r\n`, chunked(BODY)),
    'Transfer-Encoding with Content-Length': P(`Transfer-Encoding: chunked\r\nContent-Length: ${L}\r\n`, chunked(BODY)),
    'duplicate Content-Length, same value': P(`Content-Length: ${L}\r\nContent-Length: ${L}\r\n`, BODY),
    'duplicate Content-Length, different values': P(`Content-Length: ${L}\r\nContent-Length: 5\r\n`, BODY),
    'Content-Length as a list': P(`Content-Length: ${L}, ${L}\r\n`, BODY),
    'Content-Length with a letter': P(`Content-Length: ${L}a\r\n`, BODY),
    'negative Content-Length': P('Content-Length: -1\r\n', BODY),
    'Content-Length with a plus sign': P(`Content-Length: +${L}\r\n`, BODY),
    'hexadecimal Content-Length': P(`Content-Length: 0x${L.toString(16)}\r\n`, BODY),
    'empty Content-Length': P('Content-Length: \r\n', BODY),
    'Content-Length with inner space': P('Content-Length: 1 0\r\n', BODY),
    'Content-Length overflowing 64 bits': P('Content-Length: 99999999999999999999999999\r\n', BODY),
    'Transfer-Encoding: gzip': P('Transfer-Encoding: gzip\r\n', BODY),
    'Transfer-Encoding: chunked, gzip': P('Transfer-Encoding: chunked, gzip\r\n', chunked(BODY)),
    'Transfer-Encoding: xchunked': P('Transfer-Encoding: xchunked\r\n', chunked(BODY)),
    'Transfer-Encoding: identity': P('Transfer-Encoding: identity\r\n', BODY),
    'Transfer-Encoding: chunked, chunked': P('Transfer-Encoding: chunked, chunked\r\n', chunked(chunked(BODY))),
    'two Transfer-Encoding: chunked headers': P('Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n', chunked(BODY)),
    'Transfer-Encoding on HTTP/1.0': P('Transfer-Encoding: chunked\r\n', chunked(BODY), 'POST /v1/chat/completions HTTP/1.0'),
    'obs-fold in a header': P(`Content-Length: ${L}\r\nX-Folded: a\r\n b\r\n`, BODY),
    'obs-fold with a tab, continuing Host': G('Host: 127.0.0.1\r\n\tother.host\r\n'),
    'whitespace before the first header': G(' Host: 127.0.0.1\r\n'),
    'bare CR inside a header value': G('Host: 127.0.0.1\r\nX-A: a\rb\r\n'),
    'bare CR ending a header line': G('Host: 127.0.0.1\rX-A: b\r\n'),
    'bare CR ending the request line': 'GET /v1/models HTTP/1.1\rHost: 127.0.0.1\r\n\r\n',
    'bare CR inside a header name': G('Host: 127.0.0.1\r\nX\rA: b\r\n'),
    'bare LF everywhere': `GET /v1/models HTTP/1.1\nHost: 127.0.0.1\nx-test-id: ${newId()}\n\n`,
    'bare LF ending one header line': G('Host: 127.0.0.1\nX-A: b\r\n'),
    'bare LF ending the request line': `GET /v1/models HTTP/1.1\nHost: 127.0.0.1\r\n\r\n`,
    'bare LF ending the head': `GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\n`,
    'control byte in a header name': G('Host: 127.0.0.1\r\nX-A\x01b: c\r\n'),
    'control byte in a header value': G('Host: 127.0.0.1\r\nX-A: b\x01c\r\n'),
    'NUL in a header value': G('Host: 127.0.0.1\r\nX-A: b\x00c\r\n'),
    'DEL in a header value': G('Host: 127.0.0.1\r\nX-A: b\x7fc\r\n'),
    'ESC in a header value': G('Host: 127.0.0.1\r\nX-A: \x1b[31mred\r\n'),
    'space inside a header name': G('Host: 127.0.0.1\r\nX A: b\r\n'),
    'space before the colon': G('Host: 127.0.0.1\r\nX-A : b\r\n'),
    'empty header name': G('Host: 127.0.0.1\r\n: b\r\n'),
    'header line without a colon': G('Host: 127.0.0.1\r\nX-A b\r\n'),
    'missing Host on HTTP/1.1': G(''),
    'duplicate Host, same value': G('Host: 127.0.0.1\r\nHost: 127.0.0.1\r\n'),
    'duplicate Host, different values': G('Host: 127.0.0.1\r\nHost: other.host\r\n'),
    'origin-form not starting with /': G('Host: 127.0.0.1\r\n', 'GET v1/models HTTP/1.1'),
    'target with userinfo trick (@host)': G('Host: 127.0.0.1\r\n', 'GET @other.host/v1/models HTTP/1.1'),
    'smuggling: bare CR in the chunk size line': 'POST /v1/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n' +
      '2\r\r;a\r\n02\r\n41\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n',
    'chunk size not hex': P('Transfer-Encoding: chunked\r\n', `zz\r\n${BODY}\r\n0\r\n\r\n`),
    'chunk size with 0x prefix': P('Transfer-Encoding: chunked\r\n', `0x${L.toString(16)}\r\n${BODY}\r\n0\r\n\r\n`),
    'negative chunk size': P('Transfer-Encoding: chunked\r\n', `-${L.toString(16)}\r\n${BODY}\r\n0\r\n\r\n`),
    'chunk size overflowing 64 bits': P('Transfer-Encoding: chunked\r\n', `1ffffffffffffffff1\r\n${BODY}\r\n0\r\n\r\n`),
    'bare LF after the chunk size': P('Transfer-Encoding: chunked\r\n', `${L.toString(16)}\n${BODY}\r\n0\r\n\r\n`),
    'chunk data not followed by CRLF': P('Transfer-Encoding: chunked\r\n', `${L.toString(16)}\r\n${BODY}XX0\r\n\r\n`),
    'bare CR in a chunk extension': P('Transfer-Encoding: chunked\r\n', `${L.toString(16)};a\rb\r\n${BODY}\r\n0\r\n\r\n`),
    'chunk extension over the default limit (8 KiB)': P('Transfer-Encoding: chunked\r\n',
      `${L.toString(16)};${'e'.repeat(8192)}=1\r\n${BODY}\r\n0\r\n\r\n`),
    'HTTP/1.2': G('Host: 127.0.0.1\r\n', 'GET /v1/models HTTP/1.2'),
  };
  for (const [name, raw] of Object.entries(cases)) {
    test(name, T, async () => {
      await expectRejected(raw, { statuses: name === 'HTTP/1.2' ? [400, 505] : [400] });
    });
  }

  test('CONNECT → 400 or 405', T, async () => {
    await expectRejected('CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n', { statuses: [400, 405] });
    await expectRejected(`CONNECT 127.0.0.1:${ctx.mock.port} HTTP/1.1\r\nHost: 127.0.0.1:${ctx.mock.port}\r\n\r\n`, { statuses: [400, 405] });
  });

  test('the smuggling input never makes two requests at the upstream, even split across writes', T, async () => {
    await ctx.mock.reset();
    const parts = ['POST /v1/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n', '2\r\r;a\r\n02\r\n41\r\n',
      '0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n'];
    const w = await rawExchange(ctx.ferry.port, parts, { gap: 100, waitClose: true, timeout: 5000 });
    await sleep(150);
    const log = await ctx.mock.log();
    assert.ok(log.length <= 1, `the upstream saw ${log.length} requests: ${log.map((e) => e.target).join(', ')}`);
    assert.ok(!log.some((e) => e.target === '/x'), 'the smuggled GET /x never reaches the upstream');
    assert.ok(w.responses.length <= 1, `one response at most: ${w.text.slice(0, 300)}`);
    assert.equal(w.responses[0]?.status, 400);
  });
});

describe('limits', () => {
  beforeEach(async () => {
    if (!small) small = await ctx.startFerry({ upstream: ctx.mock.url, args: SMALL_ARGS });
  });

  test('request line over the default 8k → 414', T, async () => {
    await expectRejected(`GET /v1/models?q=${'a'.repeat(9000)} HTTP/1.1\r\nHost: x\r\n\r\n`, { statuses: [414] });
  });
  test('--max-request-line 1k: 1.5k → 414, 900 bytes → relayed', T, async () => {
    await expectRejected(`GET /v1/models?q=${'a'.repeat(1500)} HTTP/1.1\r\nHost: x\r\n\r\n`, { statuses: [414], port: small.port });
    await expectOk(`GET /v1/models?q=${'a'.repeat(900)} HTTP/1.1\r\nHost: x\r\n\r\n`, { port: small.port });
  });
  test('more than the default 100 headers → 431', T, async () => {
    const hs = Array.from({ length: 120 }, (_, i) => `X-H${i}: v\r\n`).join('');
    await expectRejected(`GET /v1/models HTTP/1.1\r\nHost: x\r\n${hs}\r\n`, { statuses: [431] });
  });
  test('--max-headers 20: 25 → 431, 15 → relayed', T, async () => {
    const hs = (n) => Array.from({ length: n }, (_, i) => `X-H${i}: v\r\n`).join('');
    await expectRejected(`GET /v1/models HTTP/1.1\r\nHost: x\r\n${hs(25)}\r\n`, { statuses: [431], port: small.port });
    await expectOk(`GET /v1/models HTTP/1.1\r\nHost: x\r\n${hs(15)}\r\n`, { port: small.port });
  });
  test('header bytes over the default 32k → 431', T, async () => {
    await expectRejected(`GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(40000)}\r\n\r\n`, { statuses: [431] });
    const many = Array.from({ length: 50 }, (_, i) => `X-H${i}: ${'c'.repeat(800)}\r\n`).join('');
    await expectRejected(`GET /v1/models HTTP/1.1\r\nHost: x\r\n${many}\r\n`, { statuses: [431] });
  });
  test('--max-header-bytes 4k: 5k → 431, 3k → relayed', T, async () => {
    await expectRejected(`GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(5000)}\r\n\r\n`, { statuses: [431], port: small.port });
    await expectOk(`GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(3000)}\r\n\r\n`, { port: small.port });
  });
  test('Content-Length over the default 512m → 413 before any body', T, async () => {
    await expectRejected('POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 600000000\r\n\r\n', { statuses: [413] });
  });
  test('--max-body 1m: Content-Length 2m → 413; 500k → relayed intact', T, async () => {
    await expectRejected('POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 2000000\r\n\r\n', { statuses: [413], port: small.port });
    const body = Buffer.alloc(500000, 'q').toString('latin1');
    const r = await expectOk(`POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\n\r\n${body}`, { port: small.port });
    assert.equal(JSON.parse(r.text).sha256, sha256(Buffer.from(body, 'latin1')));
  });
  test('--max-body 1m: a chunked body growing past 1m → 413', T, async () => {
    const piece = Buffer.alloc(256 * 1024, 'z').toString('latin1');
    const parts = ['POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n'];
    for (let i = 0; i < 8; i++) parts.push(`${piece.length.toString(16)}\r\n${piece}\r\n`);
    parts.push('0\r\n\r\n');
    const w = await rawExchange(small.port, parts, { waitClose: true, timeout: 8000 });
    assert.equal(w.responses[0]?.status, 413, `expected 413: ${JSON.stringify(w.text.slice(0, 300))} (error ${w.error?.code})`);
    assertErrorJson(w.responses[0].text);
  });
  test('--max-chunk-ext 64: a 100-byte extension → 400, a 20-byte one → relayed', T, async () => {
    const b = 'hello';
    // The accepted one first: ferry then holds an idle upstream connection, and the refused one
    // (head and bad chunk in one read) must still not put a single byte on it.
    const r = await expectOk(`POST /v1/files HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;${'x'.repeat(20)}\r\n${b}\r\n0\r\n\r\n`, { port: small.port });
    assert.equal(JSON.parse(r.text).sha256, sha256(b));
    await expectRejected(`POST /v1/files HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;${'x'.repeat(100)}\r\n${b}\r\n0\r\n\r\n`, { port: small.port });
  });
});

describe('absolute-form targets', () => {
  for (const [target, expected] of [
    ['http://other.host/v1/models', '/v1/models'],
    ['http://other.host:1234/v1/models?a=b&c=%2F', '/v1/models?a=b&c=%2F'],
    ['https://user:pw@other.host/v1/models', '/v1/models'],
  ]) {
    test(`GET ${target} → the configured upstream, path ${expected}`, T, async () => {
      const id = newId();
      const r = await expectOk(`GET ${target} HTTP/1.1\r\nHost: other.host\r\nx-test-id: ${id}\r\n\r\n`);
      assert.equal(JSON.parse(r.text).object, 'list');
      const [e] = await ctx.mock.entries(id);
      assert.ok(e, 'the configured upstream got it');
      assert.equal(e.target, expected);
      assert.equal(header(e.headers, 'host'), `127.0.0.1:${ctx.mock.port}`);
    });
  }
});

describe('connections', () => {
  test('keep-alive: several requests on one connection, including a stream and an upstream error', T, async () => {
    const id = newId();
    const c = new RawConn(ctx.ferry.port);
    try {
      await c.connected;
      const chat = (stream, extra = '') => {
        const b = JSON.stringify({ model: 'm', stream, messages: [] });
        return `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-test-id: ${id}\r\nContent-Type: application/json\r\n${extra}Content-Length: ${b.length}\r\n\r\n${b}`;
      };
      c.write(`GET /v1/models HTTP/1.1\r\nHost: x\r\nx-test-id: ${id}\r\n\r\n`);
      let r = await c.next();
      assert.equal(r.status, 200);
      assert.equal(JSON.parse(r.text).object, 'list');
      c.write(chat(true, 'x-mock-chunk-delay-ms: 10\r\n'));
      r = await c.next();
      assert.equal(r.status, 200);
      assert.equal(r.chunked, true);
      assert.match(r.text, /data: \[DONE\]/);
      c.write(chat(false, 'x-mock-status: 429\r\n'));
      r = await c.next();
      assert.equal(r.status, 429);
      assert.equal(r.get('retry-after'), '2');
      c.write(chat(false));
      r = await c.next();
      assert.equal(r.status, 200);
      assert.equal(JSON.parse(r.text).object, 'chat.completion');
      c.write(`HEAD /v1/models HTTP/1.1\r\nHost: x\r\nx-test-id: ${id}\r\n\r\n`);
      r = await c.next({ method: 'HEAD' });
      assert.equal(r.status, 404, 'the mock has no HEAD /v1/models: its 404 head, without a body');
      c.write(`GET /v1/models HTTP/1.1\r\nHost: x\r\nx-test-id: ${id}\r\n\r\n`);
      r = await c.next();
      assert.equal(r.status, 200, 'still usable after a HEAD');
      assert.doesNotMatch(r.get('connection') || '', /close/i);
      assert.equal(c.closed, false);
      assert.equal((await ctx.mock.entries(id)).length, 6);
    } finally {
      c.close();
    }
  });

  test('pipelining: three requests in one write → three responses, in order', T, async () => {
    const ids = [newId(), newId(), newId()];
    const b1 = JSON.stringify({ model: 'm', stream: true, messages: [] });
    const b3 = JSON.stringify({ model: 'm', messages: [] });
    const raw =
      `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-test-id: ${ids[0]}\r\nx-mock-delay-ms: 300\r\nx-mock-chunks: 3\r\nx-mock-chunk-delay-ms: 30\r\nContent-Type: application/json\r\nContent-Length: ${b1.length}\r\n\r\n${b1}` +
      `GET /v1/models HTTP/1.1\r\nHost: x\r\nx-test-id: ${ids[1]}\r\n\r\n` +
      `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-test-id: ${ids[2]}\r\nx-mock-chunks: 2\r\nContent-Type: application/json\r\nContent-Length: ${b3.length}\r\n\r\n${b3}`;
    const w = await rawExchange(ctx.ferry.port, raw, { count: 3, timeout: 10000 });
    assert.equal(w.responses.length, 3, `three responses: ${JSON.stringify(w.text.slice(0, 600))}`);
    const [r1, r2, r3] = w.responses;
    assert.equal(r1.status, 200);
    assert.match(r1.get('content-type'), /text\/event-stream/);
    assert.match(r1.text, /tok2 .*\n\n[^]*data: \[DONE\]/);
    assert.equal(JSON.parse(r2.text).object, 'list');
    assert.equal(JSON.parse(r3.text).choices[0].message.content, 'tok0 tok1 ');
    for (const id of ids) assert.equal((await ctx.mock.entries(id)).length, 1);
  });

  test('HTTP/1.0 without keep-alive, and Connection: close on 1.1 → answered, then closed', T, async () => {
    let w = await rawExchange(ctx.ferry.port, 'GET /v1/models HTTP/1.0\r\n\r\n', { waitClose: true });
    assert.equal(w.responses[0]?.status, 200, w.text.slice(0, 300));
    assert.equal(w.timedOut, false, 'closed after the response');
    w = await rawExchange(ctx.ferry.port, 'GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', { waitClose: true });
    assert.equal(w.responses[0]?.status, 200);
    assert.match(w.responses[0].get('connection') || '', /close/i);
    assert.equal(w.timedOut, false, 'closed after the response');
  });

  test('Expect: 100-continue: the body is accepted and relayed intact', T, async () => {
    const body = Buffer.alloc(200000, 'e');
    const c = new RawConn(ctx.ferry.port);
    try {
      await c.connected;
      c.write(`POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nExpect: 100-continue\r\nContent-Length: ${body.length}\r\n\r\n`);
      // A client waits a little for "100 Continue" and sends anyway (as curl does after 1 s).
      await waitFor(() => c.buf.toString('latin1').startsWith('HTTP/1.1 100'), { timeout: 1500 }).catch(() => {});
      const got100 = c.buf.toString('latin1').startsWith('HTTP/1.1 100');
      c.write(body);
      const r = await c.next({ timeout: 8000 });
      assert.equal(r.status, 200);
      assert.equal(JSON.parse(r.text).sha256, sha256(body));
      assert.ok(got100, 'ferry (or the upstream through it) answered 100 Continue');
    } finally {
      c.close();
    }
  });
});
