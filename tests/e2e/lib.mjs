// Helpers for ferry's end-to-end tests: start the mock upstream and ferry as real processes on port 0, talk to
// them over raw sockets or the official openai SDK, read the mock's log, and tear everything down in after().
// Every wait here has a timeout: a test may fail, it must never hang.

import { spawn, execFileSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';
import assert from 'node:assert/strict';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FERRY_BIN = path.resolve(ROOT, process.env.FERRY_BIN || './ferry');
export const MOCK_BIN = path.resolve(ROOT, process.env.MOCK_BIN || 'tests/mock/mock');
export const ASAN = process.env.FERRY_ASAN === '1';
/** Start-up can be slow under ASan on a busy two-core machine. */
export const START_TIMEOUT = ASAN ? 20000 : 10000;
/** Default per-test timeout (node:test `{ timeout }`). */
export const T = { timeout: 30000 };
/** Peak RSS bound for the normal build, in bytes (asserted after the 100 MB transfers). */
export const RSS_BOUND = 64 * 1024 * 1024;

const SANITIZER_PATTERNS = ['ERROR: AddressSanitizer', 'runtime error:', 'ERROR: LeakSanitizer'];

// The SDK's multipart uploads need a global File (Node >= 20 has one; Debian 12's Node 18 does not).
if (typeof globalThis.File === 'undefined') {
  const { File } = await import('node:buffer');
  if (File) globalThis.File = File;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const newId = () => randomUUID();
export const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

/** Poll `fn` until it returns a truthy value; returns it. Throws with `what` after `timeout` ms. */
export async function waitFor(fn, { timeout = 5000, interval = 25, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}` +
        (last instanceof Error ? `: ${last.message}` : ''));
    }
    await sleep(interval);
  }
}

/** Race a promise against a timeout. */
export function withTimeout(p, ms, what = 'operation') {
  let t;
  return Promise.race([
    p,
    new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(t));
}

// ---------------------------------------------------------------------------------------------------------
// Processes

/**
 * A child process whose stdout and stderr are collected (text, and stdout split in lines).
 * `exited` resolves with { code, signal } once it is gone.
 */
export class Proc {
  constructor(cmd, args, opts = {}) {
    this.cmd = cmd;
    this.args = args;
    this.stdout = '';
    this.stderr = '';
    this.lines = [];          // complete stdout lines
    this.errLines = [];       // complete stderr lines
    this._outPart = '';
    this._errPart = '';
    this._waiters = new Set();
    this.exit = null;
    this.child = spawn(cmd, args, {
      cwd: ROOT,
      env: opts.env || process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.pid = this.child.pid;
    this.child.stdout.setEncoding('utf8');
    this.child.stderr.setEncoding('utf8');
    this.child.stdout.on('data', (d) => {
      this.stdout += d;
      const parts = (this._outPart + d).split('\n');
      this._outPart = parts.pop();
      this.lines.push(...parts);
      this._notify();
    });
    this.child.stderr.on('data', (d) => {
      this.stderr += d;
      const parts = (this._errPart + d).split('\n');
      this._errPart = parts.pop();
      this.errLines.push(...parts);
      if (process.env.E2E_VERBOSE) process.stderr.write(`[${path.basename(cmd)}] ${d}`);
      this._notify();
    });
    this.exited = new Promise((resolve) => {
      this.child.on('error', (err) => {
        this.stderr += `\nspawn error: ${err.message}\n`;
        this.exit = { code: null, signal: null, error: err };
        this._notify();
        resolve(this.exit);
      });
      this.child.on('exit', (code, signal) => {
        // Let the pipes drain before announcing the exit.
        setImmediate(() => {
          this.exit = { code, signal };
          this._notify();
          resolve(this.exit);
        });
      });
    });
  }

  _notify() { for (const w of this._waiters) w(); }

  /** Wait for a condition on this process's output; fails early if the process exits. */
  waitUntil(pred, { timeout = 5000, what = 'output' } = {}) {
    return new Promise((resolve, reject) => {
      const check = () => {
        let v;
        try { v = pred(this); } catch (e) { v = undefined; }
        if (v) { done(); resolve(v); return; }
        if (this.exit) {
          done();
          reject(new Error(`${path.basename(this.cmd)} exited (${JSON.stringify(this.exit)}) before ${what}; ` +
            `stderr:\n${this.stderr.slice(-4000)}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeout} ms waiting for ${what} from ${path.basename(this.cmd)}; ` +
          `stderr:\n${this.stderr.slice(-4000)}`));
      }, timeout);
      const done = () => { clearTimeout(timer); this._waiters.delete(check); };
      this._waiters.add(check);
      check();
    });
  }

  kill(signal = 'SIGTERM') {
    if (this.exit) return false;
    try { return this.child.kill(signal); } catch { return false; }
  }

  /** SIGTERM, then SIGKILL after `grace` ms. Resolves with { code, signal, killed }. */
  async stop(grace = 3000) {
    if (this.exit) return { ...this.exit, killed: false };
    this.kill('SIGTERM');
    let t;
    const timedOut = await Promise.race([
      this.exited.then(() => false),
      new Promise((r) => { t = setTimeout(() => r(true), grace); }),
    ]);
    clearTimeout(t);
    if (timedOut) {
      this.kill('SIGKILL');
      await withTimeout(this.exited, 5000, `${this.cmd} to die after SIGKILL`).catch(() => {});
      return { ...(this.exit || {}), killed: true };
    }
    return { ...this.exit, killed: false };
  }
}

/** Fail if a sanitizer reported anything on this process's stderr (only meaningful on the ASan build). */
export function assertNoSanitizerReports(proc, label = 'ferry') {
  const hit = SANITIZER_PATTERNS.find((p) => proc.stderr.includes(p));
  if (hit) {
    const at = proc.stderr.indexOf(hit);
    assert.fail(`${label} reported "${hit}":\n${proc.stderr.slice(Math.max(0, at - 200), at + 6000)}`);
  }
}

/** Peak resident set size (VmHWM) of a live process, in bytes; null if unavailable. */
export function peakRss(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmHWM:\s+(\d+)\s+kB/.exec(s);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------------------
// The mock upstream

export class Mock {
  constructor(proc, port, tlsPort) {
    this.proc = proc;
    this.port = port;
    this.tlsPort = tlsPort;
    this.url = `http://127.0.0.1:${port}`;
    this.tlsUrl = tlsPort ? `https://127.0.0.1:${tlsPort}` : null;
  }

  async log() {
    const r = await rawHttp({ port: this.port, method: 'GET', path: '/__mock/log' });
    assert.equal(r.status, 200, `GET /__mock/log: ${r.status} ${r.text}`);
    return JSON.parse(r.text);
  }

  async reset() {
    const r = await rawHttp({ port: this.port, method: 'POST', path: '/__mock/reset', body: '' });
    assert.ok(r.status >= 200 && r.status < 300, `POST /__mock/reset: ${r.status}`);
  }

  /** Log entries whose x-test-id header is `id`. */
  async entries(id) {
    return (await this.log()).filter((e) => header(e.headers, 'x-test-id') === id);
  }

  /** Wait for an entry with x-test-id `id` that satisfies `pred` (default: any). */
  async waitEntry(id, pred = () => true, { timeout = 5000, what } = {}) {
    return waitFor(async () => (await this.entries(id)).find(pred),
      { timeout, what: what || `mock log entry for ${id}` });
  }

  stop() { return this.proc.stop(); }
}

export async function startMock({ cert, key } = {}) {
  const args = ['--port', '0', '--host', '127.0.0.1'];
  if (cert) args.push('--tls-port', '0', '--cert', cert, '--key', key);
  if (!existsSync(MOCK_BIN)) throw new Error(`mock binary ${MOCK_BIN} missing: run \`make tests/mock/mock\``);
  const proc = new Proc(MOCK_BIN, args);
  const m = await proc.waitUntil((p) => /mock listening http=(\d+) https=(\d+)/.exec(p.stdout),
    { timeout: START_TIMEOUT, what: 'the mock to listen' });
  return new Mock(proc, Number(m[1]), Number(m[2]));
}

/** Header value from a [[name, value], ...] list (case-insensitive name); all values with `all`. */
export function header(list, name, all = false) {
  const n = name.toLowerCase();
  const vals = (list || []).filter(([k]) => k.toLowerCase() === n).map(([, v]) => v);
  return all ? vals : vals[0];
}

// ---------------------------------------------------------------------------------------------------------
// ferry

export class Ferry {
  constructor(proc, host, port, upstream) {
    this.proc = proc;
    this.host = host;
    this.port = port;
    this.upstream = upstream;
    this.url = `http://127.0.0.1:${port}`;
    this.baseURL = `${this.url}/v1`;
  }

  get pid() { return this.proc.pid; }
  get logLines() { return this.proc.lines.filter((l) => l.startsWith('ts=')); }

  /** Parse one access-log line into an object of key=value fields. */
  static parseLog(line) {
    const o = {};
    for (const m of line.matchAll(/(\w+)=("(?:[^"\\]|\\.)*"|\S*)/g)) o[m[1]] = m[2];
    return o;
  }

  /** Index to pass to `waitLog` so that only lines written after now are considered. */
  mark() { return this.proc.lines.length; }

  /** Wait for an access-log line written after `mark` matching `pred` (on the parsed fields). */
  waitLog(mark, pred = () => true, { timeout = 5000 } = {}) {
    return this.proc.waitUntil((p) => {
      for (const l of p.lines.slice(mark)) {
        if (!l.startsWith('ts=')) continue;
        const f = Ferry.parseLog(l);
        if (pred(f)) return { line: l, fields: f };
      }
      return null;
    }, { timeout, what: 'an access-log line' }).catch((e) => {
      throw new Error(`${e.message.split('\n')[0]}\naccess-log lines since the mark:\n` +
        `${this.proc.lines.slice(mark).join('\n') || '(none)'}`);
    });
  }

  /** Stop (SIGTERM, SIGKILL after 3 s) and, on the ASan build, fail on any sanitizer report. */
  async stop() {
    const r = await this.proc.stop();
    if (ASAN) assertNoSanitizerReports(this.proc);
    return r;
  }
}

/**
 * Start ferry on 127.0.0.1:0 relaying to `upstream` (default none: pass it in args or env).
 * Resolves once the banner `ferry VERSION listening on http://HOST:PORT -> UPSTREAM (N threads)` is on stderr.
 */
export async function startFerry({ upstream, args = [], env = {}, threads = 2, listen = '127.0.0.1:0' } = {}) {
  if (!existsSync(FERRY_BIN)) throw new Error(`ferry binary ${FERRY_BIN} missing: run \`make ferry\``);
  const a = [];
  if (listen) a.push('--listen', listen);
  if (upstream) a.push('--upstream', upstream);
  if (threads) a.push('--threads', String(threads));
  a.push(...args);
  const e = { ...process.env, ...env };
  if (ASAN) {
    e.ASAN_OPTIONS = e.ASAN_OPTIONS || 'detect_leaks=1:abort_on_error=0:halt_on_error=1';
    e.UBSAN_OPTIONS = e.UBSAN_OPTIONS || 'print_stacktrace=1:halt_on_error=1';
  }
  const proc = new Proc(FERRY_BIN, a, { env: e });
  const m = await proc.waitUntil(
    (p) => /ferry \S+ listening on http:\/\/(\S+):(\d+) -> (\S+) \((\d+) threads?\)/.exec(p.stderr),
    { timeout: START_TIMEOUT, what: 'ferry to listen' });
  const f = new Ferry(proc, m[1], Number(m[2]), m[3]);
  f.banner = m[0];
  f.threads = Number(m[4]);
  return f;
}

/**
 * Per-file setup: a mock and a ferry in front of it, started in before() and stopped in after().
 * Returns a holder whose fields (mock, ferry, client) are set once before() ran.
 * `ferryArgs` are extra flags; `mockOpts` go to startMock; `upstream(mock)` picks the upstream URL.
 */
export function setup({ ferryArgs = [], ferryEnv = {}, mockOpts = {}, upstream, withFerry = true } = {}) {
  const ctx = { mock: null, ferry: null, extra: [] };
  before(async () => {
    ctx.mock = await startMock(mockOpts);
    if (withFerry) {
      ctx.ferry = await startFerry({
        upstream: upstream ? upstream(ctx.mock) : ctx.mock.url, args: ferryArgs, env: ferryEnv,
      });
    }
  }, { timeout: START_TIMEOUT * 2 + 5000 });
  after(async () => {
    const errors = [];
    for (const f of [ctx.ferry, ...ctx.extra]) {
      if (!f) continue;
      try { await f.stop(); } catch (e) { errors.push(e); }
    }
    if (ctx.mock) await ctx.mock.stop();
    if (errors.length) throw errors[0];
  }, { timeout: 20000 });
  /** Start another ferry that after() will stop (and check) too. */
  ctx.startFerry = async (opts) => {
    const f = await startFerry(opts);
    ctx.extra.push(f);
    return f;
  };
  return ctx;
}

/** The official SDK pointed at ferry, no retries (a retry would hide what ferry did). */
export async function sdk(ferry, opts = {}) {
  const { default: OpenAI } = await import('openai');
  return new OpenAI({ baseURL: ferry.baseURL, apiKey: 'sk-test-1234567890abcdef', maxRetries: 0, timeout: 20000, ...opts });
}

export async function OpenAIClass() {
  return (await import('openai')).default;
}

// ---------------------------------------------------------------------------------------------------------
// Raw HTTP/1.1 over a socket

/**
 * Parse as many complete HTTP/1.x responses as `buf` holds.
 * `methods` (optional) lists the request methods in order, to know which responses have no body (HEAD).
 * Returns { responses, rest, partial } where each response is
 * { status, reason, version, headers: [[name,value]], head, body: Buffer, chunked, complete, trailers }.
 * `partial` is the last, incomplete response (head parsed, body cut short) if any.
 */
export function parseResponses(buf, { methods = [], eof = false } = {}) {
  const responses = [];
  let off = 0;
  let partial = null;
  while (off < buf.length) {
    const headEnd = buf.indexOf('\r\n\r\n', off);
    if (headEnd < 0) break;
    const head = buf.subarray(off, headEnd).toString('latin1');
    const [statusLine, ...hl] = head.split('\r\n');
    const sm = /^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/.exec(statusLine);
    if (!sm) throw new Error(`bad status line: ${JSON.stringify(statusLine)}`);
    const headers = hl.map((l) => {
      const i = l.indexOf(':');
      return [l.slice(0, i), l.slice(i + 1).trim()];
    });
    const status = Number(sm[2]);
    const r = { version: sm[1], status, reason: sm[3] || '', headers, head, body: Buffer.alloc(0),
      chunked: false, complete: false, trailers: [] };
    let p = headEnd + 4;
    const method = methods[responses.length];
    const te = header(headers, 'transfer-encoding');
    const cl = header(headers, 'content-length');
    if (status < 200 && status !== 101) { // interim response: skip it
      off = p;
      continue;
    }
    if (method === 'HEAD' || status === 204 || status === 304) {
      r.complete = true;
    } else if (te && /chunked/i.test(te)) {
      r.chunked = true;
      const parts = [];
      for (;;) {
        const le = buf.indexOf('\r\n', p);
        if (le < 0) break;
        const size = parseInt(buf.subarray(p, le).toString('latin1').split(';')[0], 16);
        if (Number.isNaN(size)) throw new Error('bad chunk size line in response');
        if (size === 0) {
          // trailers until an empty line
          let q = le + 2;
          let ok = false;
          for (;;) {
            const te2 = buf.indexOf('\r\n', q);
            if (te2 < 0) break;
            if (te2 === q) { ok = true; q += 2; break; }
            r.trailers.push(buf.subarray(q, te2).toString('latin1'));
            q = te2 + 2;
          }
          if (ok) { p = q; r.complete = true; }
          break;
        }
        if (le + 2 + size + 2 > buf.length) break;
        parts.push(buf.subarray(le + 2, le + 2 + size));
        p = le + 2 + size + 2;
      }
      r.body = Buffer.concat(parts);
    } else if (cl !== undefined) {
      const n = Number(cl);
      r.body = buf.subarray(p, Math.min(buf.length, p + n));
      if (p + n <= buf.length) { r.complete = true; p += n; }
    } else {
      // read until close
      r.body = buf.subarray(p);
      r.complete = eof;
      p = buf.length;
    }
    r.text = r.body.toString('utf8');
    r.get = (n) => header(r.headers, n);
    r.getAll = (n) => header(r.headers, n, true);
    if (!r.complete) { partial = r; break; }
    r.end = p;
    responses.push(r);
    off = p;
  }
  return { responses, rest: buf.subarray(off), partial };
}

/**
 * Send `data` (string in latin1, Buffer, or array of them written with `gap` ms between) on a fresh
 * connection and collect what comes back until the peer closes, `count` complete responses arrived (and
 * `waitClose` is false), or `timeout` ms. Never rejects on timeout: the result says what happened.
 * Result: { buf, responses, partial, closed, reset, timedOut, error }.
 */
export function rawExchange(port, data, { timeout = 5000, count = Infinity, waitClose = false, methods = [],
  gap = 0, host = '127.0.0.1', endAfterWrite = false } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host });
    const chunks = [];
    let finished = false;
    let closed = false;
    let reset = false;
    let error = null;
    const finish = (timedOut = false) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      const buf = Buffer.concat(chunks);
      let parsed = { responses: [], partial: null };
      try { parsed = parseResponses(buf, { methods, eof: closed }); } catch (e) { error = error || e; }
      sock.destroy();
      resolve({ buf, text: buf.toString('latin1'), responses: parsed.responses, partial: parsed.partial,
        closed, reset, timedOut, error });
    };
    const timer = setTimeout(() => finish(true), timeout);
    sock.setNoDelay(true);
    sock.on('connect', async () => {
      const parts = Array.isArray(data) ? data : [data];
      for (let i = 0; i < parts.length; i++) {
        if (finished) return;
        const d = typeof parts[i] === 'string' ? Buffer.from(parts[i], 'latin1') : parts[i];
        sock.write(d);
        if (gap && i < parts.length - 1) await sleep(gap);
      }
      if (endAfterWrite) sock.end();
    });
    sock.on('data', (d) => {
      chunks.push(d);
      if (!waitClose && count !== Infinity) {
        try {
          const { responses } = parseResponses(Buffer.concat(chunks), { methods });
          if (responses.length >= count) finish();
        } catch { /* keep reading */ }
      }
    });
    sock.on('end', () => { closed = true; finish(); });
    sock.on('close', () => { closed = true; finish(); });
    sock.on('error', (e) => {
      error = e;
      if (e.code === 'ECONNRESET') reset = true;
      closed = true;
      finish();
    });
  });
}

/**
 * A persistent raw connection: write requests, read responses one at a time.
 */
export class RawConn {
  constructor(port, host = '127.0.0.1') {
    this.sock = net.connect({ port, host });
    this.sock.setNoDelay(true);
    this.buf = Buffer.alloc(0);
    this.closed = false;
    this.error = null;
    this._waiters = new Set();
    this.connected = new Promise((res, rej) => {
      this.sock.once('connect', res);
      this.sock.once('error', rej);
    });
    this.sock.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this._notify(); });
    this.sock.on('end', () => { this.closed = true; this._notify(); });
    this.sock.on('close', () => { this.closed = true; this._notify(); });
    this.sock.on('error', (e) => { this.error = e; this.closed = true; this._notify(); });
  }
  _notify() { for (const w of this._waiters) w(); }
  write(s) { this.sock.write(typeof s === 'string' ? Buffer.from(s, 'latin1') : s); }
  /** Read the next complete response (consumes it from the buffer). */
  next({ timeout = 5000, method } = {}) {
    return new Promise((resolve, reject) => {
      const check = () => {
        let parsed;
        try { parsed = parseResponses(this.buf, { methods: [method], eof: this.closed }); } catch (e) {
          done(); reject(e); return;
        }
        if (parsed.responses.length) {
          const r = parsed.responses[0];
          this.buf = this.buf.subarray(r.end);
          done(); resolve(r); return;
        }
        if (this.closed) {
          done();
          reject(new Error(`connection closed before a complete response; got ${JSON.stringify(this.buf.toString('latin1').slice(0, 500))}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeout} ms waiting for a response; got ${JSON.stringify(this.buf.toString('latin1').slice(0, 500))}`));
      }, timeout);
      const done = () => { clearTimeout(timer); this._waiters.delete(check); };
      this._waiters.add(check);
      check();
    });
  }
  /** Resolves true once the peer closed, false after `timeout` ms. */
  waitClosed(timeout = 3000) {
    return new Promise((resolve) => {
      const check = () => { if (this.closed) { done(); resolve(true); } };
      const timer = setTimeout(() => { done(); resolve(false); }, timeout);
      const done = () => { clearTimeout(timer); this._waiters.delete(check); };
      this._waiters.add(check);
      check();
    });
  }
  close() { this.sock.destroy(); }
}

/**
 * One request with node's http client (no agent pooling). `body` may be a string/Buffer or an async
 * iterable of Buffers (streamed, chunked unless a content-length header is given).
 * Resolves { status, headers (node's lower-cased object), rawHeaders, body: Buffer, text }.
 */
export function rawHttp({ port, host = '127.0.0.1', method = 'GET', path: p = '/', headers = {}, body,
  timeout = 20000, onResponse } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path: p, headers, agent: false, timeout }, (res) => {
      if (onResponse) onResponse(res);
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => {
        const b = Buffer.concat(parts);
        resolve({ status: res.statusCode, headers: res.headers, rawHeaders: res.rawHeaders, body: b,
          text: b.toString('utf8'), trailers: res.trailers });
      });
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('response aborted')));
    });
    req.on('timeout', () => req.destroy(new Error(`request timed out after ${timeout} ms`)));
    req.on('error', reject);
    if (body === undefined || body === null) { req.end(); return; }
    if (typeof body === 'string' || Buffer.isBuffer(body)) { req.end(body); return; }
    (async () => {
      for await (const chunk of body) {
        if (!req.write(chunk)) await new Promise((r) => req.once('drain', r));
      }
      req.end();
    })().catch((e) => req.destroy(e));
  });
}

/** Raw header list [[name, value]] from node's rawHeaders. */
export function rawHeaderList(rawHeaders) {
  const out = [];
  for (let i = 0; i < rawHeaders.length; i += 2) out.push([rawHeaders[i], rawHeaders[i + 1]]);
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Checks shared by several files

export const EXPOSED = ['x-request-id', 'retry-after', 'retry-after-ms', 'openai-processing-ms',
  'x-ratelimit-limit-requests', 'x-ratelimit-remaining-requests', 'x-ratelimit-reset-requests',
  'x-ratelimit-limit-tokens', 'x-ratelimit-remaining-tokens', 'x-ratelimit-reset-tokens'];

/**
 * Assert the CORS response headers ferry adds: exactly one `Access-Control-Allow-Origin: *` and an
 * `Access-Control-Expose-Headers` a browser would honour for every header OpenAI clients read
 * (a literal `x-ratelimit-*` is NOT a wildcard for browsers: the names must be listed, or `*`).
 * `list` is [[name, value]].
 */
export function assertCors(list, what = 'response') {
  const acao = header(list, 'access-control-allow-origin', true);
  assert.deepEqual(acao, ['*'], `${what}: Access-Control-Allow-Origin must be "*" exactly once, got ${JSON.stringify(acao)}`);
  const exp = header(list, 'access-control-expose-headers', true).join(',').split(',')
    .map((s) => s.trim().toLowerCase()).filter(Boolean);
  const missing = exp.includes('*') ? [] : EXPOSED.filter((n) => !exp.includes(n));
  assert.deepEqual(missing, [], `${what}: Access-Control-Expose-Headers ${JSON.stringify(exp)} misses ${missing.join(', ')}`);
}

/** Assert an OpenAI-shaped error body: {"error":{"message","type","param","code"}}. */
export function assertErrorJson(text, what = 'error body') {
  let j;
  try { j = JSON.parse(text); } catch { assert.fail(`${what} is not JSON: ${JSON.stringify(text.slice(0, 300))}`); }
  assert.equal(typeof j.error, 'object', `${what}: no "error" object: ${text}`);
  assert.ok(j.error !== null, `${what}: error is null`);
  for (const k of ['message', 'type', 'param', 'code']) {
    assert.ok(Object.hasOwn(j.error, k), `${what}: error.${k} missing: ${text}`);
  }
  assert.equal(typeof j.error.message, 'string');
  assert.ok(j.error.message.length > 0, `${what}: empty error.message`);
  assert.equal(typeof j.error.type, 'string');
  return j;
}

/** The mock's speech bytes: byte i = (i * 7 + 3) & 0xff. */
export function speechBytes(n) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + 3) & 0xff;
  return b;
}

/** A port nothing listens on (bound then released). */
export async function deadPort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** Generate `total` pseudo-random bytes in `chunk`-sized Buffers, hashing them as they go. */
export function generatedBody(total, chunk = 256 * 1024) {
  const hash = createHash('sha256');
  const res = { sha256: null, sent: 0 };
  res.iter = (async function* gen() {
    const block = Buffer.alloc(chunk);
    let x = 0x9e3779b9;
    while (res.sent < total) {
      const n = Math.min(chunk, total - res.sent);
      // Cheap xorshift so the bytes are not a repeating block (a compressing path would show).
      for (let i = 0; i < n; i += 4) {
        x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
        block.writeUInt32LE(x >>> 0, i);
      }
      const out = Buffer.from(block.subarray(0, n));
      hash.update(out);
      res.sent += n;
      yield out;
    }
    res.sha256 = hash.digest('hex');
  })();
  return res;
}

// ---------------------------------------------------------------------------------------------------------
// TLS material for the HTTPS upstream tests

/**
 * Make a throw-away CA and a server certificate it signs (SAN IP:127.0.0.1, DNS:localhost), plus a second,
 * unrelated CA. Returns { dir, ca, otherCa, cert, key, cleanup }.
 */
export function makeCerts() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-tls-'));
  const run = (args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const mkCa = (name, cn) => run(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`,
    '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=${cn}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  mkCa('ca', 'ferry e2e test CA');
  mkCa('other-ca', 'unrelated test CA');
  run(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost']);
  writeFileSync(path.join(dir, 'ext.cnf'),
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n');
  run(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'server.pem', '-days', '2', '-extfile', 'ext.cnf']);
  return {
    dir,
    ca: path.join(dir, 'ca.pem'),
    otherCa: path.join(dir, 'other-ca.pem'),
    cert: path.join(dir, 'server.pem'),
    key: path.join(dir, 'server.key'),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Raw request text. `headers` is a list of [name, value] or a string block (each line without CRLF). */
export function req(method, target, headers = [], body = '', version = '1.1') {
  const h = headers.map(([k, v]) => `${k}: ${v}\r\n`).join('');
  return `${method} ${target} HTTP/${version}\r\n${h}\r\n${body}`;
}

// ---------------------------------------------------------------------------------------------------------
// Descriptor accounting (robustness tests)

const { readdirSync, readlinkSync } = await import('node:fs');

/** Number of open file descriptors of a live process (entries of /proc/PID/fd); -1 if unavailable. */
export function fdCount(pid) {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return -1;
  }
}

/** What each descriptor of a live process is (`socket:[N]`, `anon_inode:[eventfd]`, a path...), sorted. */
export function fdTargets(pid) {
  try {
    return readdirSync(`/proc/${pid}/fd`).map((fd) => {
      try { return readlinkSync(`/proc/${pid}/fd/${fd}`).replace(/\[\d+\]$/, ''); } catch { return '?'; }
    }).sort();
  } catch {
    return [];
  }
}

/**
 * ferry's descriptor count once it is quiet. `warm` plain requests on fresh connections go first, so
 * that every worker's libcurl connection cache holds its upstream connection (as after any traffic);
 * then the count is read until two readings `settle` ms apart agree.
 */
export async function quietFdCount(ferry, { warm = 8, path: p = '/v1/models', settle = 200, timeout = 5000 } = {}) {
  for (let i = 0; i < warm; i++) {
    const r = await rawHttp({ port: ferry.port, path: p, timeout: 5000 });
    if (r.status >= 500) throw new Error(`warm-up request ${p}: ${r.status}`);
  }
  const deadline = Date.now() + timeout;
  let last = fdCount(ferry.pid);
  for (;;) {
    await sleep(settle);
    const now = fdCount(ferry.pid);
    if (now === last || Date.now() > deadline) return now;
    last = now;
  }
}
