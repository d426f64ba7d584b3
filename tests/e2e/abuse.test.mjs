// The protocol-abuse table (tests/abuse/cases.txt, plus the Transfer-Encoding obfuscation matrix
// generated here): each case's raw bytes go to ferry on a fresh connection; the statuses, the
// error shape, what reached the mock upstream, and ferry's accept/reject verdict against
// python3-h11's (tests/abuse/h11_verdict.py) are checked. Where h11 and ferry disagree, the table
// says why and the test requires exactly that disagreement. A raw upstream then shows the bytes
// ferry really sends when a chunked request carries trailers.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  ROOT, setup, startFerry, rawExchange, assertErrorJson, header, sleep,
} from './lib.mjs';

const FERRY_ARGS = ['--max-request-line', '1k', '--max-header-bytes', '4k', '--max-headers', '20',
  '--max-body', '64k', '--max-chunk-ext', '32', '--head-timeout', '2s', '--body-timeout', '2s'];
const PYTHON = '/usr/bin/python3'; // Debian's, with python3-h11 (the PATH one may be another)
const H11 = path.join(ROOT, 'tests/abuse/h11_verdict.py');
const ctx = setup({ ferryArgs: FERRY_ARGS });
const TC = { timeout: 15000 };

// ---------------------------------------------------------------------------------------------
// The table

/** Bytes from the table's escaped notation: \r \n \t \\ \xHH and {N*c}. */
export function decode(s) {
  const out = [];
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '\\') {
      const n = s[++i];
      if (n === 'r') out.push(13);
      else if (n === 'n') out.push(10);
      else if (n === 't') out.push(9);
      else if (n === '\\') out.push(92);
      else if (n === 'x') { out.push(parseInt(s.slice(i + 1, i + 3), 16)); i += 2; }
      else throw new Error(`bad escape \\${n} in ${JSON.stringify(s)}`);
    } else if (c === '{' && /^\{\d+\*[^}]\}/.test(s.slice(i))) {
      const m = /^\{(\d+)\*([^}])\}/.exec(s.slice(i));
      for (let k = 0; k < Number(m[1]); k++) out.push(m[2].charCodeAt(0));
      i += m[0].length - 1;
    } else {
      const code = c.charCodeAt(0);
      if (code > 0x7e) throw new Error(`raw non-ASCII in the table; use \\xHH: ${JSON.stringify(s)}`);
      out.push(code);
    }
  }
  return Buffer.from(out);
}

function parseTable(text) {
  const cases = [];
  let cur = null;
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    const name = /^\[(.+)\]$/.exec(line);
    if (name) {
      cur = { name: name[1], raw: [], lacks: [] };
      cases.push(cur);
      continue;
    }
    if (!cur) throw new Error(`line outside a case: ${line}`);
    if (line.startsWith('> ')) { cur.raw.push(line.slice(2)); continue; }
    const kv = /^([a-z0-9]+):\s*(.*)$/.exec(line);
    if (!kv) throw new Error(`[${cur.name}] cannot read: ${line}`);
    const [, k, v] = kv;
    if (k === 'status') cur.status = v.split(/\s+/).map(Number);
    else if (k === 'upstream') {
      const m = /^(\d+)(?:-(\d+))?$/.exec(v);
      cur.upstream = { min: Number(m[1]), max: Number(m[2] ?? m[1]) };
    } else if (k === 'target') cur.target = v;
    else if (k === 'body') cur.body = Number(v);
    else if (k === 'lacks') cur.lacks = v.split(',').map((x) => x.trim().toLowerCase());
    else if (k === 'absent') cur.absent = v;
    else if (k === 'h11') cur.h11 = v;
    else if (k === 'why') cur.why = v;
    else throw new Error(`[${cur.name}] unknown field ${k}`);
  }
  for (const c of cases) {
    c.bytes = decode(c.raw.join(''));
    if (!c.status) throw new Error(`[${c.name}] has no status`);
    if (!c.upstream) c.upstream = c.status[0] >= 400 ? { min: 0, max: 0 } : { min: 1, max: 1 };
    if (c.h11 && !c.why) throw new Error(`[${c.name}] differs from h11 without a why`);
  }
  return cases;
}

// The Transfer-Encoding obfuscation matrix: each byte at each place around `Transfer-Encoding:
// chunked`. Only optional whitespace (SP, HTAB) around the value is allowed: then the body is
// de-chunked as usual; anything else is a 400 before anything goes upstream.
const TE_BYTES = [0x01, 0x04, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1f, 0x20, 0x7f, 0xa0, 0xff];
const TE_PLACES = {
  'before-name': (b) => `${b}Transfer-Encoding: chunked`,
  'after-name': (b) => `Transfer-Encoding${b}: chunked`,
  'value-start': (b) => `Transfer-Encoding: ${b}chunked`,
  'inside-value': (b) => `Transfer-Encoding: chun${b}ked`,
  'value-end': (b) => `Transfer-Encoding: chunked${b}`,
};

function teMatrix() {
  const cases = [];
  for (const [place, make] of Object.entries(TE_PLACES)) {
    for (const byte of TE_BYTES) {
      const b = String.fromCharCode(byte);
      const ows = byte === 0x09 || byte === 0x20;
      const ok = ows && (place === 'value-start' || place === 'value-end');
      const c = {
        name: `te-matrix ${place} 0x${byte.toString(16).padStart(2, '0')}`,
        bytes: Buffer.from(`POST /v1/files HTTP/1.1\r\nHost: x\r\n${make(b)}\r\nConnection: close\r\n\r\n` +
          '5\r\nhello\r\n0\r\n\r\n', 'latin1'),
        status: [ok ? 200 : 400],
        upstream: ok ? { min: 1, max: 1 } : { min: 0, max: 0 },
        body: ok ? 5 : undefined,
        lacks: [],
      };
      if (byte === 0x09 && place === 'value-end') {
        // OWS after the value is valid, but Debian's llhttp 8.1 refuses "chunked<HTAB>".
        c.status = [400];
        c.upstream = { min: 0, max: 0 };
        c.body = undefined;
        c.h11 = 'accept';
        c.why = 'HTAB after "chunked" is valid OWS; Debian\'s llhttp 8.1 refuses it ("Request has invalid ' +
          '`Transfer-Encoding`") so ferry answers 400 (SP there is accepted)';
      }
      if (ows && place === 'before-name') {
        c.h11 = 'accept';
        c.why = 'obs-fold: h11 unfolds the line into the Host value (RFC 9112 §5.2 lets a recipient replace it with SP) ' +
          'and sees no Transfer-Encoding; ferry refuses obs-fold (400)';
      }
      cases.push(c);
    }
  }
  return cases;
}

const CASES = [...parseTable(readFileSync(path.join(ROOT, 'tests/abuse/cases.txt'), 'utf8')), ...teMatrix()];

// ---------------------------------------------------------------------------------------------

function h11Verdict(bytes) {
  return new Promise((resolve, reject) => {
    const child = execFile(PYTHON, [H11], { encoding: 'utf8', timeout: 10000 }, (err, stdout, stderr) => {
      if (err) { reject(new Error(`h11_verdict.py failed: ${err.message}\n${stderr}`)); return; }
      resolve(JSON.parse(stdout));
    });
    child.stdin.end(bytes);
  });
}

const shown = (buf) => JSON.stringify(buf.toString('latin1').slice(0, 300));
const summary = { cases: 0, agree: 0, differ: [] };

let lastId = 0; // mock log ids only grow: a case's upstream requests are those after lastId

async function runCase(c) {
  const w = await rawExchange(ctx.ferry.port, c.bytes, { waitClose: true, timeout: 5000 });
  const what = `[${c.name}] sent ${shown(c.bytes)}\n  got ${shown(w.buf)}`;
  assert.equal(w.timedOut, false, `${what}\n  ferry must end the exchange (close) on its own`);
  assert.equal(w.partial, null, `${what}\n  a truncated response`);
  assert.deepEqual(w.responses.map((r) => r.status), c.status, `${what}\n  statuses`);
  let ferryVerdict = 'accept';
  for (const r of w.responses) {
    const own = r.get('x-request-id') === undefined; // the mock stamps every answer it gives
    if (own && r.status >= 400) {
      ferryVerdict = 'reject';
      assert.match(r.get('connection') || '', /close/i, `${what}\n  Connection: close on a ferry error`);
      assertErrorJson(r.text, `[${c.name}] ${r.status}`);
    }
  }
  if (c.absent) assert.ok(!w.text.includes(c.absent), `${what}\n  must not contain ${c.absent}`);

  await sleep(20); // the mock logs on its own thread
  const all = await ctx.mock.log();
  const log = all.filter((e) => e.id > lastId);
  lastId = Math.max(lastId, ...all.map((e) => e.id));
  const targets = log.map((e) => e.target);
  assert.ok(log.length >= c.upstream.min && log.length <= c.upstream.max,
    `${what}\n  upstream requests: ${log.length} ${JSON.stringify(targets)}, expected ${c.upstream.min}-${c.upstream.max}`);
  assert.ok(!targets.some((t) => t.includes('smuggled')), `${what}\n  a smuggled request reached the upstream: ${targets}`);
  if (c.upstream.min === 0) {
    for (const e of log) assert.equal(e.completed, false, `${what}\n  the upstream completed a refused request`);
  }
  if (c.target !== undefined) assert.equal(log[0]?.target, c.target, `${what}\n  upstream target`);
  if (c.body !== undefined) assert.equal(log[0]?.body_bytes, c.body, `${what}\n  upstream body bytes`);
  for (const e of log) {
    for (const n of c.lacks) {
      assert.equal(header(e.headers, n), undefined, `${what}\n  "${n}" reached the upstream: ${JSON.stringify(e.headers)}`);
    }
  }

  const h = await verdicts.get(c.name);
  summary.cases++;
  const about = `${what}\n  ferry: ${ferryVerdict}, h11: ${h.verdict}${h.error ? ` (${h.error})` : ''}`;
  if (c.h11 === undefined) {
    assert.equal(h.verdict, ferryVerdict, `${about}\n  ferry and h11 disagree and the table does not say why`);
    summary.agree++;
  } else {
    assert.equal(h.verdict, c.h11, `${about}\n  the table says h11 would ${c.h11}: ${c.why}`);
    assert.notEqual(ferryVerdict, c.h11, `${about}\n  the table documents a difference that is not there`);
    summary.differ.push(`${c.name}: ferry ${ferryVerdict}, h11 ${h.verdict} — ${c.why}`);
  }
  // Both accepted: the upstream got exactly the body h11 read.
  if (ferryVerdict === 'accept' && h.verdict === 'accept' && log.length && h.requests[0]?.complete &&
      log[0].body_sha256 && c.status[0] < 300) {
    assert.equal(log[0].body_sha256, h.requests[0].body_sha256, `${about}\n  the upstream's body differs from h11's`);
  }
}

// h11's verdict on each case, one python process per case, a few at a time, started at once so
// that they run while ferry is being exercised.
const verdicts = new Map();

describe(`protocol abuse table (${CASES.length} cases)`, () => {
  before(() => {
    const seen = new Set();
    for (const c of CASES) {
      assert.ok(!seen.has(c.name), `duplicate case name ${c.name}`);
      seen.add(c.name);
    }
    const queue = [...CASES];
    const worker = async () => {
      while (queue.length) {
        const c = queue.shift();
        verdicts.get(c.name).resolve(await h11Verdict(c.bytes).catch((e) => ({ verdict: 'error', error: e.message })));
      }
    };
    for (const c of CASES) {
      let resolve;
      const p = new Promise((r) => { resolve = r; });
      p.resolve = resolve;
      verdicts.set(c.name, p);
    }
    for (let i = 0; i < 3; i++) worker();
  });
  for (const c of CASES) test(c.name, TC, () => runCase(c));
  after(() => {
    console.log(`# abuse: ${summary.cases} cases, ${summary.agree} agree with h11, ${summary.differ.length} documented differences`);
    for (const d of summary.differ) console.log(`#   ${d}`);
  });
});

// An Upgrade request is relayed as a plain request (Upgrade is hop-by-hop). What follows on the
// same connection must then be either refused by a close (Connection: close on the answer) or
// served normally: `curl --http2 http://ferry/a http://ferry/b` sends `Connection: Upgrade,
// HTTP2-Settings` + `Upgrade: h2c` and reuses the connection for the second URL.
test('after a Connection: Upgrade request, the next request on the connection is not broken', TC, async () => {
  const { RawConn } = await import('./lib.mjs');
  const c = new RawConn(ctx.ferry.port);
  try {
    await c.connected;
    c.write('GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n' +
      'HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n');
    const first = await c.next();
    assert.equal(first.status, 200);
    if (/close/i.test(first.get('connection') || '')) {
      assert.ok(await c.waitClosed(3000), 'Connection: close announced, then closed');
      return;
    }
    c.write('GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n');
    const second = await c.next();
    assert.equal(second.status, 200, `the second request on a kept-alive connection: ${second.status} ${second.text}`);
  } finally {
    c.close();
  }
});

// A deep pipeline in one write: ferry reads only as much as its input buffer holds, answers one
// request at a time, in order, and every request reaches the upstream exactly once.
test('500 pipelined requests in one write are answered in order, each relayed once', TC, async () => {
  const n = 500;
  let raw = '';
  for (let i = 0; i < n; i++) {
    raw += `GET /v1/models?deep=${i} HTTP/1.1\r\nHost: x\r\n${i === n - 1 ? 'Connection: close\r\n' : ''}\r\n`;
  }
  const w = await rawExchange(ctx.ferry.port, raw, { waitClose: true, timeout: 30000 });
  assert.equal(w.timedOut, false, 'ferry closed after the last one');
  assert.equal(w.responses.length, n, `${w.responses.length} responses`);
  assert.ok(w.responses.every((r) => r.status === 200), 'all 200');
  await sleep(50);
  const ids = w.responses.map((r) => Number(/req_mock_(\d+)/.exec(r.get('x-request-id'))[1]));
  for (let i = 1; i < n; i++) assert.ok(ids[i] > ids[i - 1], `responses in request order (${ids[i - 1]}, ${ids[i]})`);
  const log = (await ctx.mock.log()).filter((e) => e.target.startsWith('/v1/models?deep='));
  assert.deepEqual(log.map((e) => e.target), Array.from({ length: n }, (_, i) => `/v1/models?deep=${i}`));
});

// ---------------------------------------------------------------------------------------------
// Trailers on the wire: what ferry sends upstream for a chunked request with trailers that try
// to smuggle Content-Length or Authorization. The mock does not record trailers, so a raw
// upstream captures the exact bytes.

describe('request trailers never reach the upstream', () => {
  let up = null;
  let ferry = null;
  const received = [];
  before(async () => {
    up = net.createServer((s) => {
      let buf = Buffer.alloc(0);
      s.on('error', () => {});
      s.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        const t = buf.toString('latin1');
        const headEnd = t.indexOf('\r\n\r\n');
        if (headEnd < 0) return;
        const head = t.slice(0, headEnd);
        const chunked = /\r\ntransfer-encoding:\s*chunked/i.test(head);
        const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        const done = chunked ? /\r\n0\r\n(?:[^\r\n]+\r\n)*\r\n$/.test(t.slice(headEnd + 2))
          : t.length >= headEnd + 4 + Number(cl ? cl[1] : 0);
        if (!done) return;
        received.push(t);
        s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
      });
    });
    await new Promise((r) => up.listen(0, '127.0.0.1', r));
    ferry = await startFerry({ upstream: `http://127.0.0.1:${up.address().port}` });
  });
  after(async () => {
    if (ferry) await ferry.stop();
    await new Promise((r) => up.close(r));
  });

  test('Content-Length, Authorization and other trailers are dropped; the body is exact', TC, async () => {
    const body = 'hello world';
    const raw = 'POST /v1/files HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n' +
      `${body.length.toString(16)}\r\n${body}\r\n0\r\nContent-Length: 999\r\nAuthorization: Bearer sk-smuggled\r\n` +
      'X-Trailer-Probe: 1\r\nTransfer-Encoding: gzip\r\n\r\n';
    received.length = 0;
    const w = await rawExchange(ferry.port, raw, { waitClose: true, timeout: 5000 });
    // llhttp 8.1 refuses a Transfer-Encoding trailer (see the table); then nothing may complete.
    const r = w.responses[0];
    assert.ok(r, `a response: ${shown(w.buf)}`);
    await sleep(50);
    const wire = received.join('');
    assert.doesNotMatch(wire, /sk-smuggled|x-trailer-probe|999|gzip/i, `trailers on the upstream wire:\n${wire}`);
    if (r.status === 200) assert.match(wire, /hello world/);
  });

  test('a trailer-only request: exactly the body, no trailer fields upstream', TC, async () => {
    const raw = 'POST /v1/files HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n' +
      '5\r\nhello\r\n0\r\nContent-Length: 999\r\nAuthorization: Bearer sk-smuggled\r\nX-Trailer-Probe: 1\r\n\r\n';
    received.length = 0;
    const w = await rawExchange(ferry.port, raw, { waitClose: true, timeout: 5000 });
    assert.equal(w.responses[0]?.status, 200, shown(w.buf));
    const wire = received.join('');
    assert.equal(received.length, 1, `one upstream request: ${wire}`);
    assert.doesNotMatch(wire, /sk-smuggled|x-trailer-probe|999/i, `trailers on the upstream wire:\n${wire}`);
    const bodyOnWire = wire.slice(wire.indexOf('\r\n\r\n') + 4);
    assert.ok(['hello', '5\r\nhello\r\n0\r\n\r\n'].includes(bodyOnWire),
      `upstream body (Content-Length or chunked without trailers): ${JSON.stringify(bodyOnWire)}`);
  });
});
