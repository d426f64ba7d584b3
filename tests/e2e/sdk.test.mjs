// The official openai SDK through ferry, as a user would point it (baseURL = ferry/v1): chat (plain and
// streamed, token by token), legacy completions, embeddings, models, responses stream, speech bytes,
// small multipart uploads; plus what ferry must add to every response (CORS, X-Accel-Buffering on streams).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import {
  setup, sdk, newId, sha256, speechBytes, header, assertCors, rawHeaderList, T,
} from './lib.mjs';

const ctx = setup();
const MODEL = 'gpt-4o-mini';

function headerList(h) {
  // A fetch Headers object → [[name, value]] (fetch joins duplicates with ", ").
  return [...h.entries()];
}

test('chat completion (non-stream): body, usage, headers, and what the mock received', T, async () => {
  const client = await sdk(ctx.ferry);
  const id = newId();
  const params = { model: MODEL, messages: [{ role: 'user', content: 'Say hi' }] };
  const { data, response } = await client.chat.completions
    .create(params, { headers: { 'x-test-id': id, 'x-mock-chunks': '3' } })
    .withResponse();
  assert.equal(response.status, 200);
  assert.equal(data.object, 'chat.completion');
  assert.equal(data.model, MODEL);
  assert.equal(data.choices[0].message.role, 'assistant');
  assert.equal(data.choices[0].message.content, 'tok0 tok1 tok2 ');
  assert.equal(data.usage.prompt_tokens, 10);
  assert.equal(data.usage.completion_tokens, 3);
  assert.match(response.headers.get('x-request-id'), /^req_mock_\d+$/);
  assert.equal(response.headers.get('openai-processing-ms'), '1');
  assert.match(response.headers.get('content-type'), /application\/json/);
  assertCors(headerList(response.headers), 'chat response');

  const [e] = await ctx.mock.entries(id);
  assert.ok(e, 'the mock saw the request');
  assert.equal(e.method, 'POST');
  assert.equal(e.target, '/v1/chat/completions');
  assert.equal(header(e.headers, 'authorization'), 'Bearer sk-test-1234567890abcdef');
  assert.equal(header(e.headers, 'host'), `127.0.0.1:${ctx.mock.port}`);
  assert.equal(header(e.headers, 'x-mock-chunks'), '3');
  assert.ok(header(e.headers, 'x-stainless-lang'), 'x-stainless-* headers reach the upstream');
  assert.equal(e.body_sha256, sha256(JSON.stringify(params)), 'request body arrives byte for byte');
  assert.equal(e.completed, true);
  assert.equal(e.client_aborted, false);
});

test('chat completion stream: tokens arrive one by one, spread in time', T, async () => {
  const client = await sdk(ctx.ferry);
  const id = newId();
  const t0 = performance.now();
  const { data: stream, response } = await client.chat.completions.create(
    { model: MODEL, messages: [{ role: 'user', content: 'count' }], stream: true },
    { headers: { 'x-test-id': id, 'x-mock-chunks': '5', 'x-mock-chunk-delay-ms': '100' } },
  ).withResponse();
  assert.match(response.headers.get('content-type'), /text\/event-stream/);
  assert.equal(response.headers.get('x-accel-buffering'), 'no', 'streamed responses carry X-Accel-Buffering: no');
  assertCors(headerList(response.headers), 'stream response');
  const tokens = [];
  let finish = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    const c = chunk.choices[0];
    if (c?.delta?.content) tokens.push({ text: c.delta.content, at: performance.now() - t0 });
    if (c?.finish_reason) finish = c.finish_reason;
  }
  assert.deepEqual(tokens.map((t) => t.text), ['tok0 ', 'tok1 ', 'tok2 ', 'tok3 ', 'tok4 ']);
  assert.equal(finish, 'stop');
  const spread = tokens[4].at - tokens[0].at;
  assert.ok(spread >= 300, `tokens must not arrive in a burst: first→last ${spread.toFixed(0)} ms (expected ≥ 300)`);
  for (let i = 1; i < tokens.length; i++) {
    const gap = tokens[i].at - tokens[i - 1].at;
    assert.ok(gap >= 60, `token ${i} arrived ${gap.toFixed(0)} ms after token ${i - 1} (expected ≥ 60: no coalescing); ` +
      `times ${tokens.map((t) => t.at.toFixed(0)).join(',')}`);
  }
  const e = await ctx.mock.waitEntry(id, (x) => x.completed);
  assert.equal(e.client_aborted, false);
});

test('chat stream with include_usage: the usage chunk passes through untouched', T, async () => {
  const client = await sdk(ctx.ferry);
  const stream = await client.chat.completions.create(
    { model: MODEL, messages: [{ role: 'user', content: 'x' }], stream: true, stream_options: { include_usage: true } },
    { headers: { 'x-mock-chunks': '4' } },
  );
  let usage = null;
  let text = '';
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    text += chunk.choices[0]?.delta?.content || '';
  }
  assert.equal(text, 'tok0 tok1 tok2 tok3 ');
  assert.ok(usage, 'usage chunk received');
  assert.equal(usage.completion_tokens, 4);
});

test('legacy completions, non-stream and stream', T, async () => {
  const client = await sdk(ctx.ferry);
  const c = await client.completions.create({ model: 'gpt-3.5-turbo-instruct', prompt: 'Say hi' },
    { headers: { 'x-mock-chunks': '3' } });
  assert.equal(c.object, 'text_completion');
  assert.equal(c.choices[0].text, 'tok0 tok1 tok2 ');
  const s = await client.completions.create({ model: 'gpt-3.5-turbo-instruct', prompt: 'Say hi', stream: true },
    { headers: { 'x-mock-chunks': '3' } });
  let text = '';
  for await (const chunk of s) text += chunk.choices[0]?.text || '';
  assert.equal(text, 'tok0 tok1 tok2 ');
});

test('embeddings: float and the SDK default (base64), single and array input', T, async () => {
  const client = await sdk(ctx.ferry);
  const f = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'hello', encoding_format: 'float' });
  assert.equal(f.object, 'list');
  assert.equal(f.data.length, 1);
  assert.equal(f.data[0].embedding.length, 8);
  assert.ok(f.data[0].embedding.every(Number.isFinite));
  assert.equal(f.usage.prompt_tokens, 5);
  const b = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b', 'c'] });
  assert.equal(b.data.length, 3);
  for (const d of b.data) {
    assert.equal(d.embedding.length, 8, 'base64 embedding decodes to 8 floats');
    assert.ok(d.embedding.every(Number.isFinite));
  }
});

test('models list', T, async () => {
  const client = await sdk(ctx.ferry);
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes('gpt-4o-mini'), `models: ${ids.join(',')}`);
});

test('responses stream: every event type, deltas in order, response.completed with usage', T, async () => {
  const client = await sdk(ctx.ferry);
  const id = newId();
  const stream = await client.responses.create({ model: MODEL, input: 'hello', stream: true },
    { headers: { 'x-test-id': id, 'x-mock-chunks': '4', 'x-mock-chunk-delay-ms': '20' } });
  const types = [];
  let text = '';
  let completed = null;
  let lastSeq = -1;
  for await (const ev of stream) {
    types.push(ev.type);
    assert.ok(ev.sequence_number > lastSeq, 'sequence numbers increase');
    lastSeq = ev.sequence_number;
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    if (ev.type === 'response.completed') completed = ev.response;
  }
  for (const t of ['response.created', 'response.in_progress', 'response.output_item.added',
    'response.content_part.added', 'response.output_text.done', 'response.content_part.done',
    'response.output_item.done', 'response.completed']) {
    assert.ok(types.includes(t), `event ${t} received (got ${types.join(',')})`);
  }
  assert.equal(types.filter((t) => t === 'response.output_text.delta').length, 4);
  assert.equal(types.at(-1), 'response.completed');
  assert.equal(text, 'tok0 tok1 tok2 tok3 ');
  assert.ok(completed?.usage?.output_tokens >= 0, 'response.completed carries usage');
  const e = await ctx.mock.waitEntry(id, (x) => x.completed);
  assert.equal(e.target, '/v1/responses');
});

test('speech: the bytes the SDK returns are identical to the upstream\'s (sha256)', T, async () => {
  const client = await sdk(ctx.ferry);
  for (const n of [100000, 3 * 1024 * 1024 + 17]) {
    const res = await client.audio.speech.create({ model: 'tts-1', voice: 'alloy', input: 'hello' },
      { headers: { 'x-mock-bytes': String(n) } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /audio\/mpeg/);
    assertCors(headerList(res.headers), 'speech response');
    const buf = Buffer.from(await res.arrayBuffer());
    assert.equal(buf.length, n);
    assert.equal(sha256(buf), sha256(speechBytes(n)));
  }
});

test('files.create and audio.transcriptions (multipart) arrive intact', T, async () => {
  const client = await sdk(ctx.ferry);
  const { toFile } = await import('openai');
  const content = Buffer.alloc(1024 * 1024 + 3, 'ferry-');
  const id = newId();
  const f = await client.files.create({ file: await toFile(content, 'data.jsonl'), purpose: 'assistants' },
    { headers: { 'x-test-id': id } });
  assert.equal(f.object, 'file');
  const [e] = await ctx.mock.entries(id);
  assert.ok(e, 'mock saw the upload');
  assert.equal(f.bytes, e.body_bytes, 'the mock counted what it logged');
  assert.ok(f.bytes > content.length, 'the multipart body holds the whole file');
  assert.match(header(e.headers, 'content-type'), /^multipart\/form-data; boundary=/);
  const t = await client.audio.transcriptions.create({ file: await toFile(Buffer.alloc(5000, 1), 'a.mp3'), model: 'whisper-1' });
  assert.match(t.text, /^received \d+ bytes$/);
});

test('a raw streamed response keeps ferry\'s additions and the mock\'s own headers', T, async () => {
  // Same as above but without the SDK: the exact header list ferry writes.
  const { rawHttp } = await import('./lib.mjs');
  const r = await rawHttp({
    port: ctx.ferry.port, method: 'POST', path: '/v1/chat/completions',
    headers: { 'content-type': 'application/json', authorization: 'Bearer sk-x' },
    body: JSON.stringify({ model: MODEL, stream: true, messages: [] }),
  });
  const list = rawHeaderList(r.rawHeaders);
  assert.equal(r.status, 200);
  assertCors(list, 'raw stream response');
  assert.deepEqual(header(list, 'x-accel-buffering', true), ['no']);
  assert.equal(header(list, 'openai-processing-ms'), '1');
  assert.match(r.text, /data: \[DONE\]\n\n$/);
});
