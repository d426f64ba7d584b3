// Client half-close (shutdown of the sending side after a complete request). By default ferry treats
// EOF as the client leaving and cancels the upstream call, as nginx does: the two cannot be told apart
// before anything is written. With --half-close the response is delivered, and a client that really
// left is noticed at the first failed write (the upstream call is cancelled then).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { setup, startFerry, newId, T, sleep, withTimeout } from './lib.mjs';

const ctx = setup();

function request(id, extra = '') {
  const body = '{"model":"gpt-4o-mini","stream":true}';
  return `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-test-id: ${id}\r\n${extra}` +
    `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
}

/** Sends the request, half-closes, and collects everything until ferry closes. */
function halfClosed(port, data) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.end(data));
    const chunks = [];
    s.on('data', (d) => chunks.push(d));
    s.on('error', () => {});
    s.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
  });
}

test('default: a half-close while waiting cancels the upstream call', T, async () => {
  const id = newId();
  const text = await withTimeout(halfClosed(ctx.ferry.port, request(id, 'x-mock-delay-ms: 2000\r\n')), 5000, 'close');
  assert.equal(text, '', 'nothing is sent to a client that has gone');
  // Cancelled either before the upstream saw the request at all, or while it was waiting.
  await sleep(2500);
  for (const e of await ctx.mock.entries(id)) {
    assert.equal(e.completed, false, 'the upstream call was not cancelled');
    assert.equal(e.client_aborted, true, 'the upstream did not see the cancellation');
  }
});

test('--half-close: the response still arrives after the client shut down its side', T, async () => {
  const f = await ctx.startFerry({ upstream: ctx.mock.url, args: ['--half-close'] });
  const id = newId();
  const text = await withTimeout(halfClosed(f.port, request(id, 'x-mock-delay-ms: 300\r\n')), 5000, 'response');
  assert.match(text, /^HTTP\/1\.1 200 /);
  assert.match(text, /data: \[DONE\]/);
  assert.ok(text.endsWith('0\r\n\r\n'), 'complete chunked body');
  assert.match(text, /\r\nConnection: close\r\n/i, 'the connection is not kept after a half-close');
  const e = await ctx.mock.waitEntry(id, (x) => x.completed);
  assert.equal(e.client_aborted, false);
});

test('--half-close: a client that really closed is noticed at the first write and the upstream is cancelled', T, async () => {
  const f = await ctx.startFerry({ upstream: ctx.mock.url, args: ['--half-close'] });
  const id = newId();
  const s = net.connect(f.port, '127.0.0.1');
  s.on('error', () => {});
  await new Promise((r) => s.on('connect', r));
  s.write(request(id, 'x-mock-chunks: 100\r\nx-mock-chunk-delay-ms: 50\r\n'));
  await new Promise((r) => s.once('data', r)); // the head arrived: the stream is going
  s.destroy();                                  // full close: further writes from ferry are refused
  const e = await ctx.mock.waitEntry(id, (x) => x.client_aborted, { timeout: 4000, what: 'the upstream call to be cancelled' });
  assert.equal(e.completed, false);
  await sleep(50);
});
