// Soak: mixed traffic (non-stream, streams, uploads, client aborts, upstream faults, keep-alive and
// pipelining) against one ferry for a fixed time, then the verdict: no sanitizer report (use the ASan
// build), the same number of open descriptors as before the load, and RSS that stops growing.
//
//   node tests/soak/soak.mjs SECONDS          (FERRY_BIN=build-asan/ferry FERRY_ASAN=1 for the ASan build)
//
// Every loop is bounded by the deadline; the script exits non-zero on any failure.
import net from 'node:net';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { startMock, startFerry, sleep, ASAN, assertNoSanitizerReports, withTimeout } from '../e2e/lib.mjs';

const SECONDS = Number(process.argv[2] || 60);
const WORKERS = 12;

/** ferry's descriptors by kind: sockets to clients (local port = ferry's), to the upstream (remote
 * port = the mock's), and everything else (listeners, epoll, eventfds, pipes, files). */
function fdKinds(pid, ferryPort, upstreamPort) {
  const inodes = new Map();
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(f, 'utf8').split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length < 10) continue;
      inodes.set(c[9], { local: parseInt(c[1].split(':')[1], 16), remote: parseInt(c[2].split(':')[1], 16), state: c[3] });
    }
  }
  const k = { client: 0, upstream: 0, other: 0 };
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target;
    try { target = readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
    const m = /^socket:\[(\d+)\]$/.exec(target);
    const t = m && inodes.get(m[1]);
    if (t && t.local === ferryPort && t.state !== '0A') k.client++;      // 0A = LISTEN
    else if (t && t.remote === upstreamPort) k.upstream++;
    else k.other++;
  }
  return k;
}
const rssKb = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);

function exchange(port, data, { abortAfterBytes = 0, timeout = 15000 } = {}) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = 0;
    const chunks = [];
    const t = setTimeout(() => { s.destroy(); resolve({ timeout: true, text: Buffer.concat(chunks).toString('latin1') }); }, timeout);
    s.on('connect', () => { for (const d of [].concat(data)) s.write(d); });
    s.on('data', (d) => {
      chunks.push(d);
      got += d.length;
      const text = Buffer.concat(chunks).toString('latin1');
      if (abortAfterBytes && got >= abortAfterBytes) { s.destroy(); return; }
      if (/\r\n0\r\n\r\n$/.test(text) || /^HTTP\/1\.1 \d+[^]*content-length: (\d+)/i.test(text)) {
        const m = /content-length: (\d+)/i.exec(text);
        const i = text.indexOf('\r\n\r\n');
        if (text.endsWith('0\r\n\r\n') || (m && i >= 0 && text.length - i - 4 >= Number(m[1]))) s.end();
      }
    });
    s.on('error', () => {});
    s.on('close', () => { clearTimeout(t); resolve({ text: Buffer.concat(chunks).toString('latin1') }); });
  });
}

const post = (path, headers, body) =>
  `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
  Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('') +
  `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;

const ops = [
  ['chat', (p) => exchange(p, post('/v1/chat/completions', { 'Connection': 'close' }, '{"model":"m"}'))],
  ['stream', (p) => exchange(p, post('/v1/chat/completions', { 'x-mock-chunks': '20', 'Connection': 'close' }, '{"stream":true}'))],
  ['abort-stream', (p) => exchange(p, post('/v1/chat/completions', { 'x-mock-chunks': '50', 'x-mock-chunk-delay-ms': '20' }, '{"stream":true}'), { abortAfterBytes: 600 })],
  ['abort-waiting', (p) => exchange(p, post('/v1/chat/completions', { 'x-mock-delay-ms': '2000' }, '{}'), { timeout: 100 })],
  ['upload', (p) => {
    const size = 2 * 1024 * 1024;
    return exchange(p, [`POST /v1/files HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: ${size}\r\n\r\n`, Buffer.alloc(size, 7)]);
  }],
  ['chunked-upload', (p) => exchange(p, [`POST /v1/files HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n`,
    '4000\r\n' + 'a'.repeat(0x4000) + '\r\n', '0\r\n\r\n'])],
  ['status-500', (p) => exchange(p, post('/v1/chat/completions', { 'x-mock-status': '500', 'Connection': 'close' }, '{}'))],
  ['reset', (p) => exchange(p, post('/v1/chat/completions', { 'x-mock-reset': 'before-headers', 'Connection': 'close' }, '{}'))],
  ['close-mid', (p) => exchange(p, post('/v1/chat/completions', { 'x-mock-close-after': '2' }, '{"stream":true}'))],
  ['first-byte-timeout', (p) => exchange(p, post('/v1/chat/completions', { 'x-mock-delay-ms': '1500', 'Connection': 'close' }, '{}'))],
  ['pipelined', (p) => exchange(p, 'GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')],
  ['bad-request', (p) => exchange(p, 'POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n')],
];

async function main() {
  const mock = await startMock();
  const ferry = await startFerry({
    upstream: mock.url, args: ['--quiet', '--first-byte-timeout', '1s'],
    env: ASAN ? { ASAN_OPTIONS: 'detect_leaks=1:halt_on_error=1:quarantine_size_mb=16' } : {},
  });
  const pid = ferry.pid;
  let failed = [];
  try {
    await exchange(ferry.port, 'GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    await sleep(300);
    const fd0 = fdKinds(pid, ferry.port, mock.port);
    const deadline = Date.now() + SECONDS * 1000;
    const counts = {};
    const rss = [];
    const sampler = setInterval(() => { try { rss.push(rssKb(pid)); } catch {} }, 1000);
    const worker = async (w) => {
      let i = w;
      while (Date.now() < deadline) {
        const [name, fn] = ops[i++ % ops.length];
        const r = await fn(ferry.port);
        counts[name] = (counts[name] || 0) + 1;
        if (r.timeout && name !== 'abort-waiting') failed.push(`${name}: no answer within 15 s`);
        if (!r.timeout && r.text.length === 0 && !name.startsWith('abort')) failed.push(`${name}: silent close`);
      }
    };
    await withTimeout(Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w))), SECONDS * 1000 + 60000, 'soak workers');
    clearInterval(sampler);
    await sleep(2500); // aborted upstream calls and lingering closes settle
    const fd1 = fdKinds(pid, ferry.port, mock.port);
    const third = rss[Math.floor(rss.length / 3)] || rss[0];
    const last = rss[rss.length - 1];
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    console.log(`soak: ${SECONDS}s, ${total} requests ${JSON.stringify(counts)}`);
    console.log(`soak: fds before ${JSON.stringify(fd0)} after ${JSON.stringify(fd1)}; RSS kB first ${rss[0]} at 1/3 ${third} max ${Math.max(...rss)} last ${last}`);
    // Client sockets must all be gone; idle upstream connections may stay cached (at most one per
    // concurrent transfer); nothing else may change.
    if (fd1.client !== 0) failed.push(`${fd1.client} client sockets still open after the load`);
    if (fd1.other !== fd0.other) failed.push(`non-socket descriptors changed: ${fd0.other} -> ${fd1.other}`);
    if (fd1.upstream > WORKERS * 2) failed.push(`${fd1.upstream} upstream sockets left (cache bound ${WORKERS * 2})`);
    if (last > third * 1.25 + 8192) failed.push(`RSS kept growing: ${third} kB at 1/3, ${last} kB at the end`);
    if (failed.length > 20) failed = failed.slice(0, 20);
  } finally {
    await ferry.stop().catch((e) => failed.push(String(e.message).split('\n')[0]));
    if (ASAN) { try { assertNoSanitizerReports(ferry.proc); } catch (e) { failed.push(e.message.slice(0, 2000)); } }
    await mock.stop();
  }
  console.log(failed.length ? `soak: FAILED\n${failed.join('\n')}` : 'soak: ok (no sanitizer report, no descriptor leak, flat RSS)');
  console.log(`${failed.length ? 0 : 1} passed, ${failed.length ? 1 : 0} failed`);
  process.exit(failed.length ? 1 : 0);
}

main().catch((e) => { console.error(e); process.exit(1); });
