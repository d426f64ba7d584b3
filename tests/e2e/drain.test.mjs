// Graceful stop under load: SIGTERM while 500 streams are open. Every request must end one of three
// visible ways — completed, truncated mid-stream (head sent, no terminating chunk), or answered with an
// error JSON (those still waiting for the upstream at the drain deadline) — never a silent close, and
// ferry must exit 0 shortly after the drain deadline.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { setup, sleep, withTimeout, ASAN, assertNoSanitizerReports } from './lib.mjs';

const DRAIN_MS = 2000;
const ctx = setup({ ferryArgs: ['--drain-timeout', `${DRAIN_MS}ms`, '--quiet'] });

/** One raw request; resolves with everything received until the connection closed. */
function stream(port, headers) {
  return new Promise((resolve) => {
    const body = '{"model":"gpt-4o-mini","stream":true}';
    const s = net.connect(port, '127.0.0.1');
    const chunks = [];
    s.on('connect', () => {
      s.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
        Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('') +
        `Content-Length: ${body.length}\r\n\r\n${body}`);
    });
    s.on('data', (d) => {
      chunks.push(d);
      const all = Buffer.concat(chunks).toString('latin1');
      // A complete chunked response: we close ourselves (ferry keeps the connection alive).
      if (all.endsWith('0\r\n\r\n') && all.includes('data: [DONE]')) s.destroy();
    });
    s.on('error', () => {});
    s.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
  });
}

function classify(text) {
  if (text.length === 0) return 'silent';
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] || 0);
  if (status === 200 && text.endsWith('0\r\n\r\n') && text.includes('data: [DONE]')) return 'completed';
  if (status === 200 && !text.endsWith('0\r\n\r\n') && !text.includes('data: [DONE]')) return 'truncated';
  if (status >= 500 && /"error":\{"message":/.test(text)) {
    const len = Number(/content-length: (\d+)/i.exec(text)?.[1]);
    const body = text.slice(text.indexOf('\r\n\r\n') + 4);
    if (Buffer.byteLength(body, 'latin1') === len) return 'error-json';
  }
  return `other(${status}): ${JSON.stringify(text.slice(0, 200))}…${JSON.stringify(text.slice(-80))}`;
}

test('SIGTERM with 500 open streams: each completes, is visibly truncated, or gets an error JSON; exit 0',
  { timeout: 60000 }, async () => {
    const port = ctx.ferry.port;
    const kinds = [];
    const runs = [];
    for (let i = 0; i < 500; i++) {
      let h;
      if (i % 5 === 0) h = { 'x-mock-delay-ms': '8000' };                               // no head by the deadline
      else if (i % 5 === 1) h = { 'x-mock-chunks': '3', 'x-mock-chunk-delay-ms': '150' }; // finishes in time
      else h = { 'x-mock-chunks': '40', 'x-mock-chunk-delay-ms': '250' };                 // outlives the deadline
      kinds.push(i % 5 === 0 ? 'waiting' : i % 5 === 1 ? 'short' : 'long');
      runs.push(stream(port, h));
      if (i % 50 === 49) await sleep(20);
    }
    // Let every stream get going (the long ones have sent their head), then stop ferry.
    await sleep(ASAN ? 1500 : 800);
    const t0 = Date.now();
    ctx.ferry.proc.kill('SIGTERM');
    const exit = await withTimeout(ctx.ferry.proc.exited, DRAIN_MS + 8000, 'ferry to exit after SIGTERM');
    const took = Date.now() - t0;
    const results = await withTimeout(Promise.all(runs), 10000, 'every client to see its connection close');

    const tally = {};
    const bad = [];
    results.forEach((text, i) => {
      const c = classify(text);
      tally[`${kinds[i]}:${c}`] = (tally[`${kinds[i]}:${c}`] || 0) + 1;
      if (c === 'silent' || c.startsWith('other')) bad.push(`#${i} (${kinds[i]}): ${c}`);
    });
    console.log(`drain: exit ${JSON.stringify(exit)} after ${took} ms; ${JSON.stringify(tally)}`);
    assert.deepEqual(bad, [], `requests that ended invisibly or oddly:\n${bad.slice(0, 10).join('\n')}`);
    assert.equal(exit.code, 0, `exit status ${JSON.stringify(exit)}`);
    assert.ok(took < DRAIN_MS + 4000, `exit took ${took} ms for a ${DRAIN_MS} ms drain deadline`);
    // The long streams cannot finish before the deadline: they must be among the truncated ones.
    assert.ok((tally['long:truncated'] || 0) > 0, 'no long stream was truncated at the deadline');
    assert.equal(tally['short:completed'], 100, 'every short stream completes during the drain');
    assert.equal(tally['waiting:error-json'], 100, 'every request still waiting gets an error JSON');
    if (ASAN) assertNoSanitizerReports(ctx.ferry.proc);
    ctx.ferry = null; // already stopped: after() must not stop it again
  });
