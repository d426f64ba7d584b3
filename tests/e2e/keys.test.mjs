// Relay keys and usage from the command line: `ferry keys create|list|show|revoke` and `ferry usage`
// against a store that a running ferry (started with --store) shares. The new key is printed once,
// alone on stdout; nothing else (list, show, errors, the store's files) ever holds more of it than
// the display prefix. Errors: 1 for a failure (no such key, no store), 2 for a bad flag or value.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setup, rawHttp, assertNoSanitizerReports, FERRY_BIN, ASAN, T } from './lib.mjs';

const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-keys-'));
const STORE = path.join(dir, 'ferry.db');
const ctx = setup({ ferryArgs: ['--store', STORE] });
after(() => rmSync(dir, { recursive: true, force: true }));

const KEY_RE = /^sk-ferry-[A-Za-z0-9]{40}$/;

/** Run `ferry ARGS` to completion: { code, stdout, stderr }. --store defaults to the shared store. */
function ferry(args, { store = STORE, env = {} } = {}) {
  const e = { ...process.env, ...env };
  for (const k of Object.keys(e)) if (k.startsWith('FERRY_') && !(k in env) && k !== 'FERRY_BIN' && k !== 'FERRY_ASAN') delete e[k];
  if (ASAN) {
    e.ASAN_OPTIONS = e.ASAN_OPTIONS || 'detect_leaks=1:abort_on_error=0:halt_on_error=1';
    e.UBSAN_OPTIONS = e.UBSAN_OPTIONS || 'print_stacktrace=1:halt_on_error=1';
  }
  const a = store ? [args[0], '--store', store, ...args.slice(1)] : args;
  const r = spawnSync(FERRY_BIN, a, { env: e, encoding: 'utf8', timeout: 20000 });
  if (r.error) throw r.error;
  const out = { code: r.status, stdout: r.stdout, stderr: r.stderr, args: a };
  if (ASAN) assertNoSanitizerReports(out, `ferry ${args.join(' ')}`);
  return out;
}

function ok(r) {
  assert.equal(r.code, 0, `ferry ${r.args.join(' ')} exited ${r.code}; stderr: ${r.stderr}`);
  return r;
}

/** Create a key; asserts the output contract and returns { key, stderr }. */
function create(name, extra = [], opts) {
  const r = ok(ferry(['keys', 'create', '--name', name, ...extra], opts));
  const lines = r.stdout.split('\n');
  assert.equal(lines.length, 2, `one line on stdout, got ${JSON.stringify(r.stdout)}`);
  assert.equal(lines[1], '');
  assert.match(lines[0], KEY_RE);
  return { key: lines[0], stderr: r.stderr };
}

/** Fail if text holds any of the key past its displayed prefix (sk-ferry- + 4 characters). */
function assertNoSecret(text, key, what) {
  const secret = key.slice('sk-ferry-'.length);
  assert.ok(!text.includes(key), `${what} holds the full key`);
  for (let i = 4; i + 8 <= secret.length; i++) {
    assert.ok(!text.includes(secret.slice(i, i + 8)), `${what} holds part of the key (${i}..${i + 8})`);
  }
}

const created = {};

test('keys create prints the key alone on stdout, once; a note goes to stderr', T, () => {
  const a = create('alice', ['--models', 'gpt-4o*,o1', '--upstreams', 'default', '--expires', '30d']);
  created.alice = a.key;
  assert.match(a.stderr, /created key 1 'alice' \(sk-ferry-[A-Za-z0-9]{4}…\), expires \d{4}-/);
  assertNoSecret(a.stderr, a.key, 'create\'s stderr');
  assert.ok(a.stderr.includes(a.key.slice(0, 13)), 'the note names the display prefix');
  created.bob = create('bob').key;
  assert.notEqual(created.alice, created.bob);
  assert.ok(existsSync(STORE));
});

test('list --json and show --json: the rows, and no key material beyond the prefix', T, () => {
  const list = ok(ferry(['keys', 'list', '--json']));
  const rows = JSON.parse(list.stdout);
  assert.deepEqual(rows.map((r) => r.name), ['alice', 'bob']);
  const [a, b] = rows;
  assert.equal(a.id, 1);
  assert.equal(a.prefix, `${created.alice.slice(0, 13)}…`);
  assert.deepEqual(a.models, ['gpt-4o*', 'o1']);
  assert.deepEqual(a.upstreams, ['default']);
  assert.equal(a.status, 'active');
  assert.equal(a.revoked_at, null);
  const days = (Date.parse(a.expires_at) - Date.parse(a.created_at)) / 86400000;
  assert.ok(Math.abs(days - 30) < 0.01, `expires 30 days after creation, got ${days}`);
  assert.ok(Math.abs(Date.parse(a.created_at) - Date.now()) < 60000);
  assert.equal(b.models, null);
  assert.equal(b.upstreams, null);
  assert.equal(b.expires_at, null);
  assert.deepEqual(Object.keys(a).sort(),
    ['created_at', 'expires_at', 'id', 'models', 'name', 'prefix', 'revoked_at', 'status', 'upstreams']);

  const show = ok(ferry(['keys', 'show', 'alice', '--json']));
  assert.deepEqual(JSON.parse(show.stdout), a);
  assert.deepEqual(JSON.parse(ok(ferry(['keys', 'show', '2', '--json'])).stdout), b);

  const human = ok(ferry(['keys', 'list'])).stdout + ok(ferry(['keys', 'show', '1'])).stdout;
  assert.match(human, /alice/);
  for (const [name, key] of Object.entries(created)) {
    for (const [what, text] of [['list --json', list.stdout], ['show --json', show.stdout], ['list/show', human]]) {
      assertNoSecret(text, key, `${what} (${name})`);
    }
  }
});

test('the store keeps only hashes: no key in the database files', T, () => {
  for (const f of [STORE, `${STORE}-wal`]) {
    if (!existsSync(f)) continue;
    const text = readFileSync(f).toString('latin1');
    for (const [name, key] of Object.entries(created)) assertNoSecret(text, key, `${path.basename(f)} (${name})`);
  }
});

test('revoke by name or id: the key stays listed with its revocation time', T, () => {
  const r = ok(ferry(['keys', 'revoke', 'alice']));
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /revoked key 1 'alice'/);
  const shown = JSON.parse(ok(ferry(['keys', 'show', '1', '--json'])).stdout);
  assert.equal(shown.status, 'revoked');
  assert.ok(Math.abs(Date.parse(shown.revoked_at) - Date.now()) < 60000);
  // Again: nothing changes, and it says so.
  const again = ok(ferry(['keys', 'revoke', '1']));
  assert.match(again.stderr, /revoked already/);
  assert.equal(JSON.parse(ok(ferry(['keys', 'show', 'alice', '--json'])).stdout).revoked_at, shown.revoked_at);
  const rows = JSON.parse(ok(ferry(['keys', 'list', '--json'])).stdout);
  assert.deepEqual(rows.map((x) => [x.name, x.status]), [['alice', 'revoked'], ['bob', 'active']]);
  assert.match(ok(ferry(['keys', 'list'])).stdout, /revoked \d{4}-\d\d-\d\d \d\d:\d\d/);
});

test('errors: 1 for no such key or store, 2 for bad flags; nothing on stdout', T, () => {
  const cases = [
    [['keys', 'show', 'nobody'], 1, /no key with id or name 'nobody'/],
    [['keys', 'revoke', 'nobody'], 1, /no key with id or name 'nobody'/],
    [['keys', 'show', '99'], 1, /'99'/],
    [['keys', 'create', '--name', 'bob'], 1, /a key named 'bob' exists already \(id 2\)/],
    [['keys', 'create'], 2, /--name NAME is required/],
    [['keys', 'create', '--name', 'x', '--bogus'], 2, /unknown option '--bogus'/],
    [['keys', 'create', '--name'], 2, /--name needs a value/],
    [['keys', 'create', '--name', '123'], 2, /not only digits/],
    [['keys', 'create', '--name', 'has space'], 2, /--name must be/],
    [['keys', 'create', '--name', 'x', '--models', 'a,,b'], 2, /comma lists/],
    [['keys', 'create', '--name', 'x', '--expires', '2000-01-01'], 2, /in the past/],
    [['keys', 'create', '--name', 'x', '--expires', 'soon'], 2, /neither a span/],
    [['keys', 'create', '--name', 'x', '--upstreams', 'nope'], 2, /no upstream 'nope'.*default/],
    [['keys', 'list', '--bogus'], 2, /unknown option/],
    [['keys', 'list', 'extra'], 2, /unexpected argument 'extra'/],
    [['keys', 'show'], 2, /which key/],
    [['keys', 'frob'], 2, /unknown subcommand 'frob'/],
    [['keys'], 2, /usage: ferry keys/],
    [['usage', '--by', 'key,colour'], 2, /'colour' is not one of/],
    [['usage', '--by', 'key,key'], 2, /at most once/],
    [['usage', '--since', 'yesterday'], 2, /neither a span/],
    [['usage', '--json=yes'], 2, /takes no value/],
  ];
  for (const [args, code, re] of cases) {
    const r = ferry(args);
    assert.equal(r.code, code, `ferry ${args.join(' ')}: exit ${r.code}, want ${code}; stderr: ${r.stderr}`);
    assert.match(r.stderr, re, `ferry ${args.join(' ')}`);
    assert.equal(r.stdout, '', `ferry ${args.join(' ')} printed on stdout`);
  }
  // No store there: reading commands say so and create nothing.
  const missing = path.join(dir, 'missing.db');
  for (const args of [['keys', 'list'], ['keys', 'show', '1'], ['keys', 'revoke', '1'], ['usage']]) {
    const r = ferry(args, { store: missing });
    assert.equal(r.code, 1, `ferry ${args.join(' ')} on a missing store`);
    assert.ok(r.stderr.includes(`no store at ${missing}`), r.stderr);
    assert.equal(r.stdout, '');
  }
  assert.ok(!existsSync(missing));
  // --help is not an error.
  assert.match(ok(ferry(['keys', 'create', '--help'])).stdout, /usage: ferry keys create/);
  assert.match(ok(ferry(['usage', '--help'])).stdout, /usage: ferry usage/);
});

test('usage on an empty store: zero totals, as a table and as JSON', T, () => {
  const fresh = path.join(dir, 'fresh.db');
  create('only', [], { store: fresh }); // creates the store; no request recorded yet
  const table = ok(ferry(['usage'], { store: fresh })).stdout.split('\n');
  assert.match(table[0], /^usage, all recorded$/);
  assert.match(table[1], /^REQUESTS\s+PROMPT\s+COMPLETION\s+CACHED\s+REASONING\s+TOTAL\s+BYTES_IN\s+BYTES_OUT\s+PARTIAL$/);
  assert.deepEqual(table[2].trim().split(/\s+/), ['0', '0', '0', '0', '0', '0', '0', '0', '0']);

  const zero = { requests: 0, prompt_tokens: 0, completion_tokens: 0, cached_tokens: 0, reasoning_tokens: 0,
    total_tokens: 0, bytes_in: 0, bytes_out: 0, partial: 0 };
  const j = JSON.parse(ok(ferry(['usage', '--json'], { store: fresh })).stdout);
  assert.deepEqual(j, { since: null, by: [], groups: [], total: zero });
  const g = JSON.parse(ok(ferry(['usage', '--since', '24h', '--by', 'key,model,day,upstream,status', '--json'],
    { store: fresh })).stdout);
  assert.deepEqual(g.by, ['key', 'model', 'day', 'upstream', 'status']);
  assert.deepEqual(g.groups, []);
  assert.deepEqual(g.total, zero);
  assert.ok(Math.abs(Date.parse(g.since) - (Date.now() - 86400000)) < 60000);
  const since = JSON.parse(ok(ferry(['usage', '--since', '2024-01-31', '--json'], { store: fresh })).stdout);
  assert.equal(since.since, '2024-01-31T00:00:00.000Z');
  assert.match(ok(ferry(['usage', '--by', 'model'], { store: fresh })).stdout, /^MODEL\s+REQUESTS/m);
});

test('-c FILE finds the store and the upstreams; --store overrides it; order does not matter', T, () => {
  const fromFile = path.join(dir, 'from-file.db');
  const file = path.join(dir, 'gateway.yaml');
  writeFileSync(file, `store: ${fromFile}\nauth: keys\nupstreams:\n  a: { url: http://127.0.0.1:1 }\n  b: { url: http://127.0.0.1:2 }\n`);
  const r = ok(ferry(['keys', 'create', '-c', file, '--name', 'carol', '--upstreams', 'b,a'], { store: null }));
  assert.match(r.stdout.trim(), KEY_RE);
  assert.doesNotMatch(r.stderr, /note:/, 'no auth note when the file says auth: keys');
  assert.ok(existsSync(fromFile));
  const rows = JSON.parse(ok(ferry(['keys', '--config', file, 'list', '--json'], { store: null })).stdout);
  assert.deepEqual(rows.map((x) => [x.name, x.upstreams]), [['carol', ['b', 'a']]]);
  // Flags after the subcommand's own, and --store=PATH beating the file's store:
  const other = JSON.parse(ok(ferry(['keys', 'list', '--json', '-c', file, `--store=${STORE}`], { store: null })).stdout);
  assert.deepEqual(other.map((x) => x.name), ['alice', 'bob']);
  // FERRY_STORE works as for the server.
  const env = JSON.parse(ok(ferry(['keys', 'list', '--json'], { store: null, env: { FERRY_STORE: fromFile } })).stdout);
  assert.deepEqual(env.map((x) => x.name), ['carol']);
  // A value that looks like a settings flag stays the subcommand's.
  const odd = ferry(['keys', 'create', '--name', '--store', '-c', file], { store: null });
  assert.equal(odd.code, 2);
  assert.match(odd.stderr, /--name must be/);
});

test('the running ferry shares the store and is unaffected by the CLI', T, async () => {
  ok(ferry(['keys', 'create', '--name', 'while-running']));
  ok(ferry(['keys', 'revoke', 'while-running']));
  const r = await rawHttp({ port: ctx.ferry.port, method: 'GET', path: '/v1/models' });
  assert.ok(r.status > 0);
  assert.equal(ctx.ferry.proc.exit, null, 'ferry still runs');
});
