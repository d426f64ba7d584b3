// Usage accounting on the request path: token counts read from every response that carries them
// (chat and legacy completions, embeddings, the Responses API, Anthropic's Messages API, streamed
// or not) as bytes pass, without keeping the text; for a streamed chat completion that did not
// ask for usage, ferry adds stream_options.include_usage upstream and removes the extra usage
// chunk (and "usage":null members) so the client sees exactly what it would have seen without
// ferry. Reported in the access log (the store records the same figures when configured).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, newId, rawHttp, sdk, peakRss, ASAN, T } from './lib.mjs';

const ctx = setup({ ferryArgs: ['--threads', '1'] });

/** The stream as the client got it, with the per-response id and timestamp blanked. */
const normalise = (text) => text.replace(/"id":"[^"]*"/g, '"id":X').replace(/"created":\d+/g, '"created":X')
  .replace(/"created_at":\d+/g, '"created_at":X');

async function post(port, path, body, headers = {}) {
  const id = newId();
  const r = await rawHttp({ port, method: 'POST', path, body: JSON.stringify(body),
    headers: { 'content-type': 'application/json', 'x-test-id': id, ...headers } });
  return { ...r, id };
}

/** The access-log line of the request for `model` (each test uses its own model name, so that a
 * late line from another test cannot be taken for it). */
async function logFor(model, mark) {
  return (await ctx.ferry.waitLog(mark, (f) => f.model === model)).fields;
}
const unique = (base) => `${base}-${newId().slice(0, 8)}`;

test('a streamed chat completion that did not ask for usage: counted, and byte-identical for the client', T, async () => {
  const model = unique('gpt-4o-mini');
  const body = { model, stream: true, messages: [{ role: 'user', content: 'hi' }] };
  const mark = ctx.ferry.mark();
  const via = await post(ctx.ferry.port, '/v1/chat/completions', body);
  const direct = await post(ctx.mock.port, '/v1/chat/completions', body);
  assert.equal(via.status, 200);
  assert.equal(normalise(via.text), normalise(direct.text), 'the client sees what it would see without ferry');
  assert.ok(!via.text.includes('"usage"'));
  const [up] = await ctx.mock.entries(via.id);
  assert.ok(up.body_bytes > JSON.stringify(body).length, 'the upstream got the edited request');
  const f = await logFor(model, mark);
  assert.deepEqual([f.prompt_tokens, f.completion_tokens, f.total_tokens, f.usage], ['10', '5', '15', 'complete']);
});

test('a stream that asked for usage itself is left alone and counted', T, async () => {
  const model = unique('gpt-4o-mini');
  const body = { model, stream: true, stream_options: { include_usage: true }, messages: [] };
  const mark = ctx.ferry.mark();
  const via = await post(ctx.ferry.port, '/v1/chat/completions', body, { 'x-mock-chunks': '7' });
  const direct = await post(ctx.mock.port, '/v1/chat/completions', body, { 'x-mock-chunks': '7' });
  assert.equal(normalise(via.text), normalise(direct.text));
  const [up] = await ctx.mock.entries(via.id);
  assert.equal(up.body_bytes, JSON.stringify(body).length, 'the request went unchanged');
  const f = await logFor(model, mark);
  assert.deepEqual([f.completion_tokens, f.total_tokens, f.usage], ['7', '17', 'complete']);
});

test('the SDK\'s stream: no usage chunk it did not ask for; with include_usage it gets one', T, async () => {
  const client = await sdk(ctx.ferry);
  const plain = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [], stream: true });
  const chunks = [];
  for await (const c of plain) chunks.push(c);
  assert.ok(chunks.every((c) => c.usage === undefined), 'no usage field at all, as without ferry');
  assert.ok(chunks.every((c) => c.choices.length > 0));
  const asked = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [], stream: true,
    stream_options: { include_usage: true } });
  const got = [];
  for await (const c of asked) got.push(c);
  assert.equal(got.at(-1).usage.total_tokens, 15);
});

test('non-stream chat, embeddings, responses stream: counts from the upstream\'s usage', T, async () => {
  const [m1, m2, m3] = [unique('gpt-4o'), unique('text-embedding-3-small'), unique('gpt-4o')];
  const mark = ctx.ferry.mark();
  await post(ctx.ferry.port, '/v1/chat/completions', { model: m1, messages: [] }, { 'x-mock-chunks': '3' });
  let f = await logFor(m1, mark);
  assert.deepEqual([f.prompt_tokens, f.completion_tokens, f.usage], ['10', '3', 'complete']);
  await post(ctx.ferry.port, '/v1/embeddings', { model: m2, input: ['a', 'b'] });
  f = await logFor(m2, mark);
  assert.equal(f.prompt_tokens, '5');
  const r = await post(ctx.ferry.port, '/v1/responses', { model: m3, input: 'x', stream: true }, { 'x-mock-chunks': '4' });
  assert.match(r.text, /response\.completed/);
  f = await logFor(m3, mark);
  assert.deepEqual([f.prompt_tokens, f.completion_tokens, f.usage], ['10', '4', 'complete']);
});

test('Anthropic Messages (/v1/messages): input, cache reads and cache writes are prompt tokens; streamed, byte-identical', T, async () => {
  // the mock answers input_tokens 5, cache_read_input_tokens 3, cache_creation_input_tokens 2
  const [m1, m2] = [unique('claude-sonnet'), unique('claude-sonnet')];
  const mark = ctx.ferry.mark();
  const plain = await post(ctx.ferry.port, '/v1/messages', { model: m1, max_tokens: 64, messages: [] },
    { 'x-mock-chunks': '6' });
  assert.equal(plain.status, 200);
  assert.equal(JSON.parse(plain.text).usage.output_tokens, 6);
  let f = await logFor(m1, mark);
  assert.deepEqual([f.prompt_tokens, f.completion_tokens, f.cached_tokens, f.total_tokens, f.usage],
    ['10', '6', '3', '16', 'complete']);
  const body = { model: m2, max_tokens: 64, stream: true, messages: [] };
  const via = await post(ctx.ferry.port, '/v1/messages', body, { 'x-mock-chunks': '9' });
  const direct = await post(ctx.mock.port, '/v1/messages', body, { 'x-mock-chunks': '9' });
  assert.match(via.text, /event: message_stop/);
  assert.equal(normalise(via.text), normalise(direct.text), 'the client sees what it would see without ferry');
  f = await logFor(m2, mark);
  // output_tokens: 1 in message_start, then 9 in message_delta (the last word)
  assert.deepEqual([f.prompt_tokens, f.completion_tokens, f.cached_tokens, f.total_tokens, f.usage],
    ['10', '9', '3', '19', 'complete']);
});

test('a broken stream is recorded as partial, with what was seen', T, async () => {
  const model = unique('gpt-4o-mini');
  const mark = ctx.ferry.mark();
  await post(ctx.ferry.port, '/v1/chat/completions', { model, stream: true }, { 'x-mock-close-after': '3' })
    .catch(() => {});
  const f = await logFor(model, mark);
  assert.equal(f.usage, 'partial');
  assert.equal(f.end, 'upstream_error');
});

test('a 200k-token stream: counted exactly, memory independent of its length', { timeout: 120000 }, async () => {
  const N = 200000;
  const before = peakRss(ctx.ferry.pid);
  const model = unique('gpt-4o-mini');
  const mark = ctx.ferry.mark();
  const r = await post(ctx.ferry.port, '/v1/chat/completions', { model, stream: true }, { 'x-mock-chunks': String(N) });
  assert.equal(r.status, 200);
  assert.ok(r.text.endsWith('data: [DONE]\n\n'));
  const f = await logFor(model, mark);
  assert.deepEqual([f.completion_tokens, f.usage], [String(N), 'complete']);
  const after = peakRss(ctx.ferry.pid);
  console.log(`200k-token stream: ${(r.body.length / 1e6).toFixed(1)} MB relayed; ferry peak RSS ${(before / 1048576).toFixed(1)} -> ${(after / 1048576).toFixed(1)} MiB`);
  if (!ASAN) assert.ok(after - before < 8 * 1048576, `peak RSS grew by ${((after - before) / 1048576).toFixed(1)} MiB`);
});
