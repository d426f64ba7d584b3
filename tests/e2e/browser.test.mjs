// A real browser: Debian's headless Chromium (driven by playwright-core) loads a page from one origin
// (http://127.0.0.1:A) that streams a chat completion from ferry on another origin (http://localhost:PORT)
// with fetch, reading the SSE body with a reader and appending tokens to the DOM. The CORS preflight happens
// (custom headers) and is answered by ferry; the tokens show up one by one; the rate-limit headers of a 429
// are readable by the page (Access-Control-Expose-Headers works in a browser, not only on paper).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { existsSync } from 'node:fs';
import { setup, newId, header, withTimeout } from './lib.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const ctx = setup();
let server = null;
let pagePort = 0;
let browser = null;

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>ferry browser test</title></head>
<body>
<pre id="out"></pre><div id="status">idle</div><div id="arrivals"></div><pre id="ratelimit"></pre>
<script>
async function streamChat(base, id) {
  const out = document.getElementById('out');
  const status = document.getElementById('status');
  const arrivals = [];
  status.textContent = 'fetching';
  try {
    const res = await fetch(base + '/v1/chat/completions', {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
        'Authorization': 'Bearer sk-browser-test',
        'x-test-id': id,
        'x-mock-chunks': '5',
        'x-mock-chunk-delay-ms': '100',
      },
      body: JSON.stringify({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    });
    if (!res.ok) throw new Error('HTTP ' + res.status);
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    let done = false;
    const t0 = performance.now();
    while (!done) {
      const r = await reader.read();
      if (r.done) break;
      buf += dec.decode(r.value, { stream: true });
      let i;
      while ((i = buf.indexOf('\\n\\n')) >= 0) {
        const ev = buf.slice(0, i);
        buf = buf.slice(i + 2);
        for (const line of ev.split('\\n')) {
          if (!line.startsWith('data: ')) continue;
          const data = line.slice(6);
          if (data === '[DONE]') { done = true; break; }
          const tok = JSON.parse(data).choices[0]?.delta?.content;
          if (tok) { out.textContent += tok; arrivals.push(Math.round(performance.now() - t0)); }
        }
      }
    }
    document.getElementById('arrivals').textContent = arrivals.join(',');
    status.textContent = done ? 'done' : 'truncated';
  } catch (e) {
    status.textContent = 'error: ' + e.message;
  }
}
async function rateLimited(base) {
  const res = await fetch(base + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'Authorization': 'Bearer sk-browser-test', 'x-mock-status': '429' },
    body: '{"model":"gpt-4o-mini","messages":[]}',
  });
  const h = {};
  for (const n of ['retry-after', 'retry-after-ms', 'x-ratelimit-remaining-requests', 'x-ratelimit-limit-requests', 'x-request-id', 'openai-processing-ms']) h[n] = res.headers.get(n);
  document.getElementById('ratelimit').textContent = JSON.stringify({ status: res.status, headers: h, body: await res.json() });
}
window.streamChat = streamChat;
window.rateLimited = rateLimited;
</script>
</body></html>`;

before(async () => {
  server = http.createServer((req, res) => {
    if (req.url === '/' || req.url.startsWith('/?')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(PAGE);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  pagePort = server.address().port;
});

after(async () => {
  if (browser) await withTimeout(browser.close(), 10000, 'chromium to close').catch(() => {});
  if (server) {
    server.closeAllConnections?.();
    await new Promise((r) => server.close(r));
  }
});

test('Chromium streams a chat completion from ferry on another origin, token by token', { timeout: 60000, skip: !existsSync(CHROMIUM) && `${CHROMIUM} not installed` }, async () => {
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30000,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-default-apps', '--disable-domain-reliability',
      '--disable-client-side-phishing-detection', '--no-pings', '--no-proxy-server', '--disable-breakpad',
      '--metrics-recording-only', '--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,CertificateTransparencyComponentUpdater',
      // Only loopback names resolve: nothing can leave the machine.
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1',
    ],
  });
  const page = await browser.newPage();
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(m.text()));
  const requests = [];
  page.on('request', (r) => requests.push(`${r.method()} ${r.url()}`));
  await page.goto(`http://127.0.0.1:${pagePort}/`, { timeout: 15000 });

  await ctx.mock.reset();
  const mark = ctx.ferry.mark();
  const id = newId();
  const ferryOrigin = `http://localhost:${ctx.ferry.port}`;
  await page.evaluate(([base, tid]) => { window.streamChat(base, tid); }, [ferryOrigin, id]);
  await page.waitForFunction(() => document.getElementById('status').textContent !== 'fetching' &&
    document.getElementById('status').textContent !== 'idle', null, { timeout: 20000 });
  const status = await page.textContent('#status');
  assert.equal(status, 'done', `page status: ${status}; console: ${consoleLines.join(' | ')}`);
  assert.equal(await page.textContent('#out'), 'tok0 tok1 tok2 tok3 tok4 ');
  const arrivals = (await page.textContent('#arrivals')).split(',').map(Number);
  assert.equal(arrivals.length, 5);
  assert.ok(arrivals[4] - arrivals[0] >= 300, `tokens arrived spread out in the page (${arrivals.join(',')} ms)`);

  // The mock saw the POST (with the page's headers), and never the preflight: ferry answered it.
  const log = await ctx.mock.log();
  const mine = log.filter((e) => header(e.headers, 'x-test-id') === id);
  assert.equal(mine.length, 1, 'the mock saw the request once');
  assert.equal(mine[0].method, 'POST');
  assert.equal(header(mine[0].headers, 'authorization'), 'Bearer sk-browser-test');
  assert.match(header(mine[0].headers, 'origin') || '', /^http:\/\/127\.0\.0\.1:\d+$/, 'Origin passes through');
  assert.equal(log.filter((e) => e.method === 'OPTIONS').length, 0, 'the preflight never reached the upstream');
  const { fields: pre } = await ctx.ferry.waitLog(mark, (x) => x.method === 'OPTIONS', { timeout: 2000 });
  assert.equal(pre.status, '204', 'the browser sent a preflight and ferry answered it');
  // Everything the browser fetched stayed on loopback.
  for (const r of requests) assert.match(r, /^\w+ http:\/\/(127\.0\.0\.1|localhost):\d+\//, `non-loopback request: ${r}`);

  // The headers clients need are exposed to the page, on an error as well.
  await page.evaluate((base) => window.rateLimited(base), ferryOrigin);
  const rl = JSON.parse(await page.textContent('#ratelimit'));
  assert.equal(rl.status, 429);
  assert.equal(rl.body.error.code, 'rate_limit_exceeded');
  assert.match(rl.headers['x-request-id'] || '', /^req_mock_\d+$/);
  assert.deepEqual({ ...rl.headers, 'x-request-id': 'checked' }, {
    'retry-after': '2', 'retry-after-ms': '2000', 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-limit-requests': '60',
    'x-request-id': 'checked', 'openai-processing-ms': '1',
  });
});
