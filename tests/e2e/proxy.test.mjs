// Egress proxies: an upstream's calls go through its configured proxy (http://, socks5://,
// socks5h://), and nowhere else; http_proxy in ferry's environment is ignored. The proxies are
// small ones written here, on loopback, that count what went through them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import http from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startMock, startFerry, newId, header, rawHttp, T } from './lib.mjs';

const ctx = { ferries: [], httpSeen: [], socksSeen: [] };

function httpProxy() {
  // Plain-HTTP forward proxy: absolute-form requests are re-sent to their origin.
  const srv = http.createServer((req, res) => {
    ctx.httpSeen.push(req.url);
    const u = new URL(req.url);
    const up = http.request({ host: u.hostname, port: u.port, method: req.method, path: u.pathname + u.search,
      headers: req.headers, agent: false }, (r) => { res.writeHead(r.statusCode, r.headers); r.pipe(res); });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r(srv)));
}

function socksProxy() {
  // SOCKS5, no authentication, CONNECT only; records the address it was asked for.
  const srv = net.createServer((c) => {
    c.once('data', (hello) => {
      if (hello[0] !== 5) return c.destroy();
      c.write(Buffer.from([5, 0]));
      c.once('data', (req) => {
        let host, off;
        if (req[3] === 1) { host = [...req.subarray(4, 8)].join('.'); off = 8; }
        else if (req[3] === 3) { host = req.subarray(5, 5 + req[4]).toString(); off = 5 + req[4]; }
        else return c.destroy();
        const port = req.readUInt16BE(off);
        ctx.socksSeen.push(`${req[3] === 3 ? 'name' : 'ip'}:${host}:${port}`);
        const up = net.connect(port, host === 'localhost' ? '127.0.0.1' : host, () => {
          c.write(Buffer.from([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
          up.pipe(c);
          c.pipe(up);
        });
        up.on('error', () => c.destroy());
        c.on('error', () => up.destroy());
      });
    });
  });
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r(srv)));
}

before(async () => {
  ctx.mock = await startMock();
  ctx.hp = await httpProxy();
  ctx.sp = await socksProxy();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-proxy-'));
  const file = path.join(dir, 'proxy.yaml');
  writeFileSync(file, `upstreams:
  viahttp:   { url: "${ctx.mock.url}", proxy: "http://127.0.0.1:${ctx.hp.address().port}" }
  viasocks:  { url: "${ctx.mock.url}", proxy: "socks5://127.0.0.1:${ctx.sp.address().port}" }
  viasocksh: { url: "http://localhost:${ctx.mock.port}", proxy: "socks5h://127.0.0.1:${ctx.sp.address().port}" }
  direct:    { url: "${ctx.mock.url}" }
routes:
  - { models: [via-http], upstream: viahttp }
  - { models: [via-socks], upstream: viasocks }
  - { models: [via-socksh], upstream: viasocksh }
  - { path: /, upstream: direct }
`);
  // An environment proxy that would swallow everything: it must be ignored.
  ctx.ferry = await startFerry({ args: ['-c', file], env: { http_proxy: 'http://127.0.0.1:1', HTTP_PROXY: 'http://127.0.0.1:1', ALL_PROXY: 'socks5://127.0.0.1:1' } });
});
after(async () => {
  if (ctx.ferry) await ctx.ferry.stop();
  ctx.hp?.close();
  ctx.sp?.close();
  if (ctx.mock) await ctx.mock.stop();
});

async function via(model) {
  const id = newId();
  const r = await rawHttp({ port: ctx.ferry.port, method: 'POST', path: '/__mock/echo',
    headers: { 'x-test-id': id, 'content-type': 'application/json' }, body: JSON.stringify({ model }) });
  return { ...r, id };
}

test('http:// proxy: the call goes through it, in absolute form', T, async () => {
  const r = await via('via-http');
  assert.equal(r.status, 200, r.text);
  assert.ok(ctx.httpSeen.some((u) => u === `${ctx.mock.url}/__mock/echo`), JSON.stringify(ctx.httpSeen));
});

test('socks5:// proxy (ferry resolves) and socks5h:// (the proxy resolves the name)', T, async () => {
  const a = await via('via-socks');
  assert.equal(a.status, 200, a.text);
  assert.ok(ctx.socksSeen.includes(`ip:127.0.0.1:${ctx.mock.port}`), JSON.stringify(ctx.socksSeen));
  const b = await via('via-socksh');
  assert.equal(b.status, 200, b.text);
  assert.ok(ctx.socksSeen.includes(`name:localhost:${ctx.mock.port}`), JSON.stringify(ctx.socksSeen));
});

test('an upstream without a proxy is called directly; http_proxy in the environment is ignored', T, async () => {
  const before = ctx.httpSeen.length + ctx.socksSeen.length;
  const r = await via('gpt-4o-mini');
  assert.equal(r.status, 200, r.text);
  assert.equal(ctx.httpSeen.length + ctx.socksSeen.length, before);
  assert.equal(header(JSON.parse(r.text).headers, 'host'), `127.0.0.1:${ctx.mock.port}`);
});
