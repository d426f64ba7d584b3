// Upstream keep-alive of ferry's own client, seen from a raw upstream written here that keeps every
// connection open and logs when each one opened and closed and how many requests it carried:
// sequential requests share one connection; an idle connection is closed after
// --upstream-keepalive-timeout, counted from its last request (the idle timer keeps running while a
// connection is busy, so a reuse must push the close back); no more idle connections are kept than
// --upstream-keepalive.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { startFerry, rawExchange, sleep, waitFor, T } from './lib.mjs';

let upstream = null;
const conns = []; // { opened, closed, requests, lastAt, socket }
const ferries = {};

/** Answers every request on the socket (keep-alive, Content-Length); /slow/N answers after N ms. */
function serve(s) {
  const c = { opened: performance.now(), closed: null, requests: 0, lastAt: null, socket: s };
  conns.push(c);
  s.on('close', () => { c.closed = performance.now(); });
  s.on('error', () => {});
  let buf = '';
  s.on('data', async (d) => {
    buf += d.toString('latin1');
    for (let end; (end = buf.indexOf('\r\n\r\n')) >= 0;) {
      const head = buf.slice(0, end);
      buf = buf.slice(end + 4);
      const path = head.slice(0, head.indexOf('\r\n')).split(' ')[1];
      c.requests++;
      const slow = /^\/slow\/(\d+)$/.exec(path);
      if (slow) await sleep(Number(slow[1]));
      c.lastAt = performance.now();
      s.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}');
    }
  });
}

const get = (ferry, path) => rawExchange(ferry.port, `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`, { count: 1, timeout: 8000 });
const open = () => conns.filter((c) => c.closed === null);

before(async () => {
  upstream = net.createServer(serve);
  await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
  const up = `http://127.0.0.1:${upstream.address().port}`;
  ferries.t1 = await startFerry({ upstream: up, threads: 1, args: ['--upstream-keepalive-timeout', '1s'] });
  ferries.cap = await startFerry({ upstream: up, threads: 1, args: ['--upstream-keepalive', '1'] });
}, { timeout: 30000 });

after(async () => {
  try {
    for (const f of Object.values(ferries)) await f.stop();
  } finally {
    for (const c of conns) c.socket.destroy();
    if (upstream) await new Promise((r) => upstream.close(r));
  }
}, { timeout: 20000 });

test('sequential requests share one upstream connection, closed --upstream-keepalive-timeout after the last one', T, async () => {
  const first = conns.length;
  for (let i = 0; i < 3; i++) assert.equal((await get(ferries.t1, '/a')).responses[0]?.status, 200);
  await sleep(600); // less than the timeout: the connection is reused, and its idle timer is pushed back
  assert.equal((await get(ferries.t1, '/b')).responses[0]?.status, 200);
  const mine = conns.slice(first);
  assert.equal(mine.length, 1, `one connection for 4 requests, got ${mine.length}`);
  const c = mine[0];
  assert.equal(c.requests, 4);
  await waitFor(() => c.closed !== null, { timeout: 5000, what: 'the idle upstream connection to close' });
  const idle = c.closed - c.lastAt;
  // not 1 s after the first request (about 0.6 s after the last one): 1 s after the last one
  assert.ok(idle >= 950 && idle < 2500, `closed ${idle.toFixed(0)} ms after its last answer`);
});

test('a kept connection busy for longer than the timeout is not closed under its request, and is kept a whole timeout after its answer', T, async () => {
  const first = conns.length;
  assert.equal((await get(ferries.t1, '/a')).responses[0]?.status, 200); // parked: its idle timer runs
  const w = await get(ferries.t1, '/slow/1500'); // the timer fires while this request is on it
  assert.equal(w.responses[0]?.status, 200, w.text.slice(0, 300));
  assert.equal(conns.length, first + 1, 'the kept connection carried both requests');
  const c = conns[first];
  assert.equal(c.requests, 2);
  await sleep(500);
  assert.equal(c.closed, null, 'still open 0.5 s after its answer');
  await waitFor(() => c.closed !== null, { timeout: 5000, what: 'the idle upstream connection to close' });
  const idle = c.closed - c.lastAt;
  assert.ok(idle >= 950 && idle < 2500, `closed ${idle.toFixed(0)} ms after its answer`);
});

test('--upstream-keepalive 1: after 3 concurrent requests one idle connection stays, the others are closed', T, async () => {
  const first = conns.length;
  const all = await Promise.all([0, 1, 2].map(() => get(ferries.cap, '/slow/300')));
  for (const w of all) assert.equal(w.responses[0]?.status, 200);
  const mine = conns.slice(first);
  assert.equal(mine.length, 3);
  await waitFor(() => mine.filter((c) => c.closed === null).length === 1, { timeout: 3000, what: 'two of three to close' });
  await sleep(200);
  assert.equal(mine.filter((c) => c.closed === null).length, 1);
  // the one kept is used again
  assert.equal((await get(ferries.cap, '/a')).responses[0]?.status, 200);
  assert.equal(conns.length, first + 3, 'no new connection');
  assert.equal(open().filter((c) => mine.includes(c)).length, 1);
});
