// Errors: the upstream's own errors pass through untouched (status, JSON, headers the SDK reads), the
// seed's check, and the errors ferry makes itself (upstream down → 502, silent → 504, broken mid-stream →
// a truncation the client can see, never a fabricated [DONE]).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  setup, sdk, OpenAIClass, newId, rawHttp, rawExchange, rawHeaderList, assertCors, assertErrorJson,
  deadPort, req, waitFor, T,
} from './lib.mjs';

const ctx = setup({ ferryArgs: ['--first-byte-timeout', '1s'] });
const MODEL = 'gpt-4o-mini';
const chat = (extra = {}) => ({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], ...extra });

async function sdkError(p) {
  try {
    await p;
  } catch (e) {
    return e;
  }
  assert.fail('expected the SDK to throw');
}

test('401 from upstream: AuthenticationError with the masked key, x-request-id readable', T, async () => {
  const OpenAI = await OpenAIClass();
  const client = await sdk(ctx.ferry, { apiKey: 'sk-abcdefghijklmnopwxyz' });
  const id = newId();
  const e = await sdkError(client.chat.completions.create(chat(), { headers: { 'x-mock-status': '401', 'x-test-id': id } }));
  assert.ok(e instanceof OpenAI.AuthenticationError, `got ${e?.constructor?.name}: ${e?.message}`);
  assert.equal(e.status, 401);
  assert.equal(e.code, 'invalid_api_key');
  assert.equal(e.type, 'invalid_request_error');
  assert.match(e.message, /Incorrect API key provided: sk-[a-z]*\*\*\*wxyz/);
  assert.match(e.headers.get('x-request-id'), /^req_mock_\d+$/);
  assert.equal(e.requestID, e.headers.get('x-request-id'));
  assertCors([...e.headers.entries()], '401 response');
  assert.equal((await ctx.mock.entries(id)).length, 1, 'exactly one upstream request (ferry does not retry)');
});

test('429 from upstream: RateLimitError with retry-after and x-ratelimit-* headers', T, async () => {
  const OpenAI = await OpenAIClass();
  const client = await sdk(ctx.ferry);
  const id = newId();
  const e = await sdkError(client.chat.completions.create(chat(), { headers: { 'x-mock-status': '429', 'x-test-id': id } }));
  assert.ok(e instanceof OpenAI.RateLimitError, `got ${e?.constructor?.name}: ${e?.message}`);
  assert.equal(e.status, 429);
  assert.equal(e.code, 'rate_limit_exceeded');
  assert.equal(e.headers.get('retry-after'), '2');
  assert.equal(e.headers.get('retry-after-ms'), '2000');
  assert.equal(e.headers.get('x-ratelimit-limit-requests'), '60');
  assert.equal(e.headers.get('x-ratelimit-remaining-requests'), '0');
  assert.equal(e.headers.get('x-ratelimit-reset-requests'), '2s');
  assert.match(e.headers.get('x-request-id'), /^req_mock_\d+$/);
  assertCors([...e.headers.entries()], '429 response');
  assert.equal((await ctx.mock.entries(id)).length, 1, 'exactly one upstream request (ferry does not retry)');
});

test('500 and 503 from upstream pass through as InternalServerError', T, async () => {
  const OpenAI = await OpenAIClass();
  const client = await sdk(ctx.ferry);
  for (const code of [500, 503]) {
    const id = newId();
    const e = await sdkError(client.chat.completions.create(chat(), { headers: { 'x-mock-status': String(code), 'x-test-id': id } }));
    assert.ok(e instanceof OpenAI.InternalServerError, `got ${e?.constructor?.name}: ${e?.message}`);
    assert.equal(e.status, code);
    assert.equal(e.type, 'server_error');
    assert.match(e.headers.get('x-request-id'), /^req_mock_\d+$/);
    assert.equal((await ctx.mock.entries(id)).length, 1, `exactly one upstream request for ${code}`);
  }
});

test('the seed\'s check: no key → the upstream\'s own 401 JSON, byte for byte', T, async () => {
  const body = JSON.stringify(chat());
  const headers = { 'content-type': 'application/json', 'x-mock-status': '401' };
  const direct = await rawHttp({ port: ctx.mock.port, method: 'POST', path: '/v1/chat/completions', headers, body });
  const via = await rawHttp({ port: ctx.ferry.port, method: 'POST', path: '/v1/chat/completions', headers, body });
  assert.equal(via.status, 401);
  assert.equal(via.text, direct.text, 'the error body is the upstream\'s, unchanged');
  assert.match(via.headers['content-type'], /application\/json/);
  assertErrorJson(via.text, 'upstream 401');
  assertCors(rawHeaderList(via.rawHeaders), 'seed check');
});

test('upstream down → 502 with OpenAI error JSON and CORS headers; the SDK sees APIError 502', async (t) => {
  const port = await deadPort();
  const f = await ctx.startFerry({ upstream: `http://127.0.0.1:${port}` });
  const mark = f.mark();
  const r = await rawHttp({ port: f.port, method: 'POST', path: '/v1/chat/completions',
    headers: { 'content-type': 'application/json', origin: 'http://example.test' }, body: JSON.stringify(chat()) });
  assert.equal(r.status, 502);
  assert.match(r.headers['content-type'] || '', /application\/json/);
  assertErrorJson(r.text, '502 body');
  assertCors(rawHeaderList(r.rawHeaders), '502 response');
  const { fields } = await f.waitLog(mark, (x) => x.status === '502');
  assert.equal(fields.end, 'upstream_error');

  const OpenAI = await OpenAIClass();
  const client = await sdk(f);
  const e = await sdkError(client.models.list());
  assert.ok(e instanceof OpenAI.APIError, `got ${e?.constructor?.name}`);
  assert.equal(e.status, 502);
  assert.ok(e.error?.message, 'the SDK parsed the error JSON');
}, T);

test('upstream silent past --first-byte-timeout → 504 JSON, and ferry hangs up on the upstream', T, async () => {
  const id = newId();
  const mark = ctx.ferry.mark();
  const t0 = Date.now();
  const r = await rawHttp({ port: ctx.ferry.port, method: 'POST', path: '/v1/chat/completions',
    headers: { 'content-type': 'application/json', 'x-mock-delay-ms': '5000', 'x-test-id': id },
    body: JSON.stringify(chat()) });
  const took = Date.now() - t0;
  assert.equal(r.status, 504);
  assert.ok(took >= 900 && took < 4500, `504 after ${took} ms (first-byte timeout is 1 s)`);
  assertErrorJson(r.text, '504 body');
  assertCors(rawHeaderList(r.rawHeaders), '504 response');
  const { fields } = await ctx.ferry.waitLog(mark, (x) => x.status === '504');
  assert.equal(fields.end, 'timeout');
  // The upstream transfer is cancelled: the mock sees its client go away while it waits.
  await ctx.mock.waitEntry(id, (e) => e.client_aborted === true, { timeout: 3000, what: 'client_aborted at the mock' });
});

test('upstream closes mid-stream → the client sees a truncation, never [DONE]', T, async () => {
  const OpenAI = await OpenAIClass();
  const client = await sdk(ctx.ferry);
  const mark = ctx.ferry.mark();
  // Through the SDK: it either throws while reading or ends early; it never sees finish_reason / [DONE].
  const stream = await client.chat.completions.create(chat({ stream: true }),
    { headers: { 'x-mock-close-after': '2', 'x-mock-chunks': '10' } });
  const tokens = [];
  let finished = false;
  let threw = null;
  try {
    for await (const c of stream) {
      if (c.choices[0]?.delta?.content) tokens.push(c.choices[0].delta.content);
      if (c.choices[0]?.finish_reason) finished = true;
    }
  } catch (e) {
    threw = e;
  }
  assert.ok(tokens.length <= 2, `got ${tokens.length} tokens`);
  assert.equal(finished, false);
  // Either the SDK threw while reading (undici reports a chunked body cut short as "terminated") or it
  // ended early; in both cases it saw no finish_reason above.
  if (threw) assert.ok(!(threw instanceof OpenAI.APIUserAbortError), String(threw));
  const { fields } = await ctx.ferry.waitLog(mark, (x) => x.end !== 'ok');
  assert.equal(fields.end, 'upstream_error');

  // On the wire: chunked, no terminating chunk, no [DONE], connection closed.
  const body = JSON.stringify(chat({ stream: true }));
  const w = await rawExchange(ctx.ferry.port, req('POST', '/v1/chat/completions', [
    ['Host', `127.0.0.1:${ctx.ferry.port}`], ['Content-Type', 'application/json'], ['Content-Length', body.length],
    ['x-mock-close-after', '2'], ['x-mock-chunks', '10']], body), { waitClose: true, timeout: 5000 });
  assert.equal(w.closed, true, 'ferry closes the connection');
  assert.equal(w.responses.length, 0, 'no complete response');
  assert.ok(w.partial, `a response head was sent: ${w.text.slice(0, 300)}`);
  assert.equal(w.partial.status, 200);
  assert.equal(w.partial.chunked, true);
  assert.doesNotMatch(w.text, /\[DONE\]/);
  assert.doesNotMatch(w.text, /\r\n0\r\n\r\n$/);
});

test('upstream resets mid-body, or sends broken framing → truncation; reset before headers → 502', T, async () => {
  for (const h of [['x-mock-reset', 'mid-body'], ['x-mock-bad-framing', '1']]) {
    const body = JSON.stringify(chat({ stream: true }));
    const w = await rawExchange(ctx.ferry.port, req('POST', '/v1/chat/completions', [
      ['Host', 'x'], ['Content-Type', 'application/json'], ['Content-Length', body.length], h,
      ['x-mock-chunk-delay-ms', '20']], body), { count: 1, timeout: 5000 });
    assert.equal(w.timedOut, false, `${h[0]}: ferry neither hung nor left the client waiting: ${w.text.slice(0, 300)}`);
    assert.doesNotMatch(w.text, /\[DONE\]/);
    if (w.responses.length) {
      // The mock sends the head and the fault back to back: when the fault reaches curl before the head
      // was processed, it is an upstream failure before the head, i.e. a complete 502.
      assert.equal(w.responses[0].status, 502, `${h[0]}: a complete response can only be a 502: ${w.text.slice(0, 300)}`);
      assertErrorJson(w.responses[0].text, `${h[0]} 502`);
    } else {
      assert.equal(w.closed, true, `${h[0]}: ferry closes the connection`);
      assert.ok(w.partial, `${h[0]}: a response head was sent: ${w.text.slice(0, 300)}`);
      assert.equal(w.partial.chunked, true);
    }
  }
  const id = newId();
  const r = await rawHttp({ port: ctx.ferry.port, method: 'POST', path: '/v1/chat/completions',
    headers: { 'content-type': 'application/json', 'x-mock-reset': 'before-headers', 'x-test-id': id },
    body: JSON.stringify(chat()) });
  assert.equal(r.status, 502);
  assertErrorJson(r.text, 'reset before headers');
  assertCors(rawHeaderList(r.rawHeaders), 'reset before headers');
  // Not retried by ferry (the request was a POST that reached the upstream).
  await waitFor(async () => (await ctx.mock.entries(id)).length >= 1, { what: 'mock entry' });
  assert.equal((await ctx.mock.entries(id)).length, 1);
});

test('an upstream 404 passes through with its JSON and CORS headers', T, async () => {
  const r = await rawHttp({ port: ctx.ferry.port, method: 'GET', path: '/v1/nope' });
  assert.equal(r.status, 404);
  assertErrorJson(r.text, 'upstream 404');
  assertCors(rawHeaderList(r.rawHeaders), '404');
});
