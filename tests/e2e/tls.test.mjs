// HTTPS upstream: a test CA made with the openssl CLI at test time. With the right --ca-file ferry relays
// (by IP and by name); with an unrelated CA, or the system store, certificate verification fails → 502 JSON.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  setup, makeCerts, sdk, newId, header, rawHttp, rawHeaderList, assertErrorJson, assertCors, sleep, T,
} from './lib.mjs';

const certs = makeCerts();
after(() => certs.cleanup());
const ctx = setup({ mockOpts: { cert: certs.cert, key: certs.key }, withFerry: false });

test('the mock serves HTTPS (sanity)', T, () => {
  assert.ok(ctx.mock.tlsPort > 0, 'mock https port');
});

for (const host of ['127.0.0.1', 'localhost']) {
  test(`https://${host}:PORT upstream with the right --ca-file: chat and stream relayed`, T, async () => {
    const f = await ctx.startFerry({ upstream: `https://${host}:${ctx.mock.tlsPort}`, args: ['--ca-file', certs.ca] });
    const client = await sdk(f);
    const id = newId();
    const c = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'tls' }] },
      { headers: { 'x-test-id': id } });
    assert.equal(c.choices[0].message.content, 'tok0 tok1 tok2 tok3 tok4 ');
    const [e] = await ctx.mock.entries(id);
    assert.equal(e.tls, true, 'the mock got it over TLS');
    assert.equal(header(e.headers, 'host'), `${host}:${ctx.mock.tlsPort}`);
    let text = '';
    for await (const ch of await client.chat.completions.create({ model: 'm', messages: [], stream: true })) {
      text += ch.choices[0]?.delta?.content || '';
    }
    assert.equal(text, 'tok0 tok1 tok2 tok3 tok4 ');
  });
}

for (const [label, args] of [['an unrelated --ca-file', () => ['--ca-file', certs.otherCa]], ['the system CA store', () => []]]) {
  test(`https upstream whose certificate does not verify against ${label} → 502 JSON`, T, async () => {
    const f = await ctx.startFerry({ upstream: `https://127.0.0.1:${ctx.mock.tlsPort}`, args: args() });
    const id = newId();
    const mark = f.mark();
    const r = await rawHttp({ port: f.port, method: 'POST', path: '/v1/chat/completions',
      headers: { 'content-type': 'application/json', authorization: 'Bearer sk-must-not-leak', 'x-test-id': id },
      body: JSON.stringify({ model: 'm', messages: [] }) });
    assert.equal(r.status, 502, r.text.slice(0, 300));
    assertErrorJson(r.text, 'TLS failure');
    assertCors(rawHeaderList(r.rawHeaders), 'TLS failure');
    const { fields } = await f.waitLog(mark, () => true);
    assert.equal(fields.end, 'upstream_error');
    await sleep(100);
    assert.equal((await ctx.mock.entries(id)).length, 0, 'no request (and no key) went over the unverified connection');
  });
}
