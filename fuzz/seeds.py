#!/usr/bin/env python3
"""Writes the hand-made seed inputs of fuzz/corpus/<target>/ (named seed-*). Inputs the fuzzer found
and `make fuzz-merge` kept sit beside them under libFuzzer's hash names; regression inputs for bugs
are named crash-*. Run from the repository root: python3 fuzz/seeds.py"""
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus')


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode('latin-1')
    with open(os.path.join(d, 'seed-' + name), 'wb') as f:
        f.write(data)


def chunked(s, ext=''):
    return '%x%s\r\n%s\r\n0\r\n\r\n' % (len(s), ext, s)


BODY = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
L = len(BODY)


def P(extra, body='', line='POST /v1/chat/completions HTTP/1.1'):
    return '%s\r\nHost: x\r\nContent-Type: application/json\r\n%s\r\n%s' % (line, extra, body)


def G(extra='', line='GET /v1/models HTTP/1.1'):
    return '%s\r\n%s\r\n' % (line, extra)


GET = G('Host: x\r\n')
heads = {
    # accepted
    'get': GET,
    'get-http10-no-host': 'GET /v1/models HTTP/1.0\r\n\r\n',
    'post-cl': P('Content-Length: %d\r\n' % L, BODY),
    'post-cl0': P('Content-Length: 0\r\n'),
    'post-chunked': P('Transfer-Encoding: chunked\r\n', chunked(BODY)),
    'post-chunked-ext-trailer': P('Transfer-Encoding: chunked\r\n',
                                  '%x;name=value;q="x y"\r\n%s\r\n0\r\nX-Trailer: 1\r\n\r\n' % (L, BODY)),
    'post-chunked-many': P('Transfer-Encoding: chunked\r\n', '1\r\na\r\n2\r\nbb\r\n00A\r\n0123456789\r\n0000\r\n\r\n'),
    'expect-100': P('Content-Length: %d\r\nExpect: 100-continue\r\n' % L, BODY),
    'expect-other': P('Content-Length: %d\r\nExpect: 200-ok\r\n' % L, BODY),
    'leading-crlf': '\r\n\r\n' + GET,
    'leading-crlf-too-many': '\r\n' * 6 + GET,
    'preflight': 'OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\n'
                 'Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n\r\n',
    'options-star': 'OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n',
    'get-star': 'GET * HTTP/1.1\r\nHost: x\r\n\r\n',
    'absolute-form': G('Host: x\r\n', 'GET http://other.example/v1/models HTTP/1.1'),
    'absolute-form-query': G('Host: x\r\n', 'GET https://other.example?x=1 HTTP/1.1'),
    'absolute-form-bare': G('Host: x\r\n', 'GET http://other.example HTTP/1.1'),
    'dot-segments': G('Host: x\r\n', 'GET /v1/%2e%2e/%2E%2E/etc/passwd HTTP/1.1'),
    'pipeline-3': GET + G('Host: x\r\n', 'GET /a HTTP/1.1') + G('Host: x\r\nConnection: close\r\n', 'GET /b HTTP/1.1'),
    'pipeline-post-get': P('Content-Length: %d\r\n' % L, BODY) + GET,
    'pipeline-chunked-get': P('Transfer-Encoding: chunked\r\n', chunked(BODY)) + GET,
    'connection-close': G('Host: x\r\nConnection: close\r\n'),
    'connection-named': G('Host: x\r\nConnection: keep-alive, X-Secret, authorization\r\nX-Secret: 1\r\nAuthorization: Bearer sk-1\r\n'),
    'hop-by-hop': G('Host: x\r\nKeep-Alive: 5\r\nTE: trailers\r\nTrailer: X\r\nProxy-Authorization: a\r\nProxy-Connection: keep-alive\r\n'),
    'drop-list': G('Host: x\r\nCookie: a=b\r\nX-Forwarded-For: 1.2.3.4\r\nX-Real-IP: 1.2.3.4\r\nForwarded: for=x\r\nVia: 1.1 p\r\ncf-ray: 1\r\nCF-Connecting-IP: 1\r\n'),
    'upgrade': G('Host: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n'),
    'upgrade-with-body': P('Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 5\r\n', 'hello'),
    'empty-value': G('Host: x\r\nX-Empty:\r\nX-After: 1\r\n'),
    'empty-value-ows': G('Host: x\r\nX-Empty: \t \r\nX-After: 1\r\n'),
    'high-bytes-in-value': G('Host: x\r\nX-Latin: caf\xe9 \xa0\xff\r\n'),
    'sdk-headers': P('Content-Length: %d\r\nAuthorization: Bearer sk-test\r\nUser-Agent: OpenAI/JS 4.0\r\nX-Stainless-Lang: js\r\n'
                     'Accept: application/json\r\nOpenAI-Organization: org-1\r\n' % L, BODY),
    # refused: framing
    'cl-te': P('Content-Length: %d\r\nTransfer-Encoding: chunked\r\n' % L, chunked(BODY)),
    'te-cl': P('Transfer-Encoding: chunked\r\nContent-Length: %d\r\n' % L, chunked(BODY)),
    'cl-dup-same': P('Content-Length: %d\r\nContent-Length: %d\r\n' % (L, L), BODY),
    'cl-dup-diff': P('Content-Length: %d\r\nContent-Length: 5\r\n' % L, BODY),
    'cl-list': P('Content-Length: %d, %d\r\n' % (L, L), BODY),
    'cl-plus': P('Content-Length: +%d\r\n' % L, BODY),
    'cl-minus': P('Content-Length: -1\r\n', BODY),
    'cl-hex': P('Content-Length: 0x%x\r\n' % L, BODY),
    'cl-empty': P('Content-Length: \r\n', BODY),
    'cl-inner-space': P('Content-Length: 1 0\r\n', BODY),
    'cl-overflow': P('Content-Length: 99999999999999999999999\r\n', BODY),
    'cl-19-digits': P('Content-Length: 1844674407370955161\r\n', BODY),
    'cl-too-big': P('Content-Length: 70000\r\n', BODY),
    'te-gzip': P('Transfer-Encoding: gzip\r\n', BODY),
    'te-chunked-gzip': P('Transfer-Encoding: chunked, gzip\r\n', chunked(BODY)),
    'te-gzip-chunked': P('Transfer-Encoding: gzip, chunked\r\n', chunked(BODY)),
    'te-xchunked': P('Transfer-Encoding: xchunked\r\n', chunked(BODY)),
    'te-identity': P('Transfer-Encoding: identity\r\n', BODY),
    'te-chunked-chunked': P('Transfer-Encoding: chunked, chunked\r\n', chunked(BODY)),
    'te-twice': P('Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n', chunked(BODY)),
    'te-quoted': P('Transfer-Encoding: "chunked"\r\n', chunked(BODY)),
    'te-upper': P('Transfer-Encoding: CHUNKED\r\n', chunked(BODY)),
    'te-http10': P('Transfer-Encoding: chunked\r\n', chunked(BODY), 'POST /v1/chat/completions HTTP/1.0'),
    'te-space-before-colon': P('Transfer-Encoding : chunked\r\n', chunked(BODY)),
    'te-vtab-value': P('Transfer-Encoding:\x0bchunked\r\n', chunked(BODY)),
    'te-vtab-end': P('Transfer-Encoding: chunked\x0b\r\n', chunked(BODY)),
    'te-tab-end': P('Transfer-Encoding: chunked\t\r\n', chunked(BODY)),
    'te-nbsp-end': P('Transfer-Encoding: chunked\xa0\r\n', chunked(BODY)),
    'te-leading-space': P(' Transfer-Encoding: chunked\r\n', chunked(BODY)),
    'te-underscore': P('Transfer_Encoding: chunked\r\n', chunked(BODY)),
    'te-folded': P('Transfer-Encoding:\r\n chunked\r\n', chunked(BODY)),
    'te-cl-smuggle-get': P('Content-Length: 4\r\nTransfer-Encoding: chunked\r\n', '5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n'),
    # refused: syntax
    'obs-fold': P('Content-Length: %d\r\nX-Folded: a\r\n b\r\n' % L, BODY),
    'obs-fold-host': G('Host: x\r\n\tother\r\n'),
    'space-first-header': G(' Host: x\r\n'),
    'bare-cr-value': G('Host: x\r\nX-A: a\rb\r\n'),
    'bare-cr-line': G('Host: x\rX-A: b\r\n'),
    'bare-cr-request-line': 'GET /v1/models HTTP/1.1\rHost: x\r\n\r\n',
    'bare-lf-all': 'GET /v1/models HTTP/1.1\nHost: x\n\n',
    'bare-lf-end': 'GET /v1/models HTTP/1.1\r\nHost: x\r\n\n',
    'nul-value': G('Host: x\r\nX-A: b\x00c\r\n'),
    'nul-name': G('Host: x\r\nX-\x00A: b\r\n'),
    'high-byte-name': G('Host: x\r\nX-\xe9: b\r\n'),
    'ctl-name': G('Host: x\r\nX-A\x01b: c\r\n'),
    'del-value': G('Host: x\r\nX-A: b\x7fc\r\n'),
    'esc-value': G('Host: x\r\nX-A: \x1b[31mred\r\n'),
    'space-in-name': G('Host: x\r\nX A: b\r\n'),
    'empty-name': G('Host: x\r\n: b\r\n'),
    'no-colon': G('Host: x\r\nX-A b\r\n'),
    'missing-host': G(''),
    'dup-host': G('Host: x\r\nHost: y\r\n'),
    'connect': 'CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n',
    'http12': G('Host: x\r\n', 'GET /v1/models HTTP/1.2'),
    'http20': G('Host: x\r\n', 'GET /v1/models HTTP/2.0'),
    'http-lower': G('Host: x\r\n', 'GET /v1/models http/1.1'),
    'request-line-double-space': G('Host: x\r\n', 'GET  /v1/models HTTP/1.1'),
    'request-line-tab': G('Host: x\r\n', 'GET\t/v1/models HTTP/1.1'),
    'request-line-trailing-space': G('Host: x\r\n', 'GET /v1/models HTTP/1.1 '),
    'target-no-slash': G('Host: x\r\n', 'GET v1/models HTTP/1.1'),
    'target-at': G('Host: x\r\n', 'GET @other/v1/models HTTP/1.1'),
    'target-high-byte': G('Host: x\r\n', 'GET /v1/\xff HTTP/1.1'),
    'method-lower': G('Host: x\r\n', 'get /v1/models HTTP/1.1'),
    'method-odd': G('Host: x\r\n', 'PROPFIND /v1/models HTTP/1.1'),
    'long-request-line': G('Host: x\r\n', 'GET /' + 'a' * 300 + ' HTTP/1.1'),
    'long-header': G('Host: x\r\nX-Long: ' + 'b' * 1100 + '\r\n'),
    'many-headers': G('Host: x\r\n' + ''.join('X-%d: v\r\n' % i for i in range(20))),
    # refused: chunked body
    'chunk-bare-cr-size': 'POST /v1/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\r;a\r\n02\r\n41\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n',
    'chunk-not-hex': P('Transfer-Encoding: chunked\r\n', 'zz\r\n%s\r\n0\r\n\r\n' % BODY),
    'chunk-0x': P('Transfer-Encoding: chunked\r\n', '0x%x\r\n%s\r\n0\r\n\r\n' % (L, BODY)),
    'chunk-negative': P('Transfer-Encoding: chunked\r\n', '-%x\r\n%s\r\n0\r\n\r\n' % (L, BODY)),
    'chunk-overflow': P('Transfer-Encoding: chunked\r\n', '1ffffffffffffffff1\r\n%s\r\n0\r\n\r\n' % BODY),
    'chunk-bare-lf': P('Transfer-Encoding: chunked\r\n', '%x\n%s\r\n0\r\n\r\n' % (L, BODY)),
    'chunk-no-crlf-after-data': P('Transfer-Encoding: chunked\r\n', '%x\r\n%sXX0\r\n\r\n' % (L, BODY)),
    'chunk-size-space': P('Transfer-Encoding: chunked\r\n', '%x \r\n%s\r\n0\r\n\r\n' % (L, BODY)),
    'chunk-ext-bare-cr': P('Transfer-Encoding: chunked\r\n', '%x;a\rb\r\n%s\r\n0\r\n\r\n' % (L, BODY)),
    'chunk-ext-long': P('Transfer-Encoding: chunked\r\n', '%x;%s\r\n%s\r\n0\r\n\r\n' % (L, 'e' * 100, BODY)),
    'chunk-ext-space': P('Transfer-Encoding: chunked\r\n', '%x ; a = b\r\n%s\r\n0\r\n\r\n' % (L, BODY)),
    'chunk-too-big': P('Transfer-Encoding: chunked\r\n', '20000\r\n' + 'a' * 16 + '\r\n0\r\n\r\n'),
    'trailer-cl': P('Transfer-Encoding: chunked\r\n', '%x\r\n%s\r\n0\r\nContent-Length: 5\r\n\r\n' % (L, BODY)),
    'trailer-auth': P('Transfer-Encoding: chunked\r\n', '%x\r\n%s\r\n0\r\nAuthorization: Bearer sk-smuggled\r\n\r\n' % (L, BODY)),
    'trailer-te': P('Transfer-Encoding: chunked\r\n', '%x\r\n%s\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n' % (L, BODY)),
    'trailer-fold': P('Transfer-Encoding: chunked\r\n', '%x\r\n%s\r\n0\r\nX: a\r\n b\r\n\r\n' % (L, BODY)),
    'trailer-bare-lf': P('Transfer-Encoding: chunked\r\n', '%x\r\n%s\r\n0\r\nX: a\n\r\n' % (L, BODY)),
    'chunk-last-bare-lf': P('Transfer-Encoding: chunked\r\n', '%x\r\n%s\r\n0\r\n\n' % (L, BODY)),
    'chunk-then-smuggle': P('Transfer-Encoding: chunked\r\n', '0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n'),
}
for name, data in heads.items():
    write('request', name, data)
    head_end = data.find('\r\n\r\n')
    write('guard_head', name, data if head_end < 0 else data[:head_end + 4])
# guard_head also sees partial heads and heads that end nowhere
for name, data in {'partial': 'GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow', 'cr-only': '\r',
                   'crlf-x5': '\r\n' * 5, 'long-line-partial': 'GET /' + 'a' * 80}.items():
    write('guard_head', name, data)

bodies = {
    'simple': '5\r\nhello\r\n0\r\n\r\n',
    'empty': '0\r\n\r\n',
    'many': '1\r\na\r\n2\r\nbb\r\n00A\r\n0123456789\r\n0000\r\n\r\n',
    'upper-hex': 'A\r\n0123456789\r\n0\r\n\r\n',
    'leading-zeros': '0000000000000005\r\nhello\r\n0\r\n\r\n',
    'ext': '5;a=b\r\nhello\r\n0;last\r\n\r\n',
    'ext-quoted': '5;a="x y"\r\nhello\r\n0\r\n\r\n',
    'trailers': '5\r\nhello\r\n0\r\nX-A: 1\r\nX-B: \t2\r\n\r\n',
    'trailer-cl': '5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n',
    'trailer-auth': '5\r\nhello\r\n0\r\nAuthorization: Bearer sk-x\r\n\r\n',
    'next-request': '5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n',
    'not-hex': 'zz\r\nhello\r\n0\r\n\r\n',
    '0x': '0x5\r\nhello\r\n0\r\n\r\n',
    'negative': '-5\r\nhello\r\n0\r\n\r\n',
    '17-digits': '00000000000000005\r\nhello\r\n0\r\n\r\n',
    'overflow': 'ffffffffffffffff\r\nhello\r\n0\r\n\r\n',
    'bare-lf-size': '5\nhello\r\n0\r\n\r\n',
    'bare-cr-size': '5\rhello\r\n0\r\n\r\n',
    'size-space': '5 \r\nhello\r\n0\r\n\r\n',
    'size-tab-ext': '5\t;a\r\nhello\r\n0\r\n\r\n',
    'no-crlf-after-data': '5\r\nhelloXX0\r\n\r\n',
    'lf-after-data': '5\r\nhello\n0\r\n\r\n',
    'ext-long': '5;' + 'e' * 40 + '\r\nhello\r\n0\r\n\r\n',
    'ext-ctl': '5;a\x01b\r\nhello\r\n0\r\n\r\n',
    'ext-bare-cr': '5;a\rb\r\nhello\r\n0\r\n\r\n',
    'trailer-fold': '0\r\nX: a\r\n b\r\n\r\n',
    'trailer-bare-cr': '0\r\nX: a\rb\r\n\r\n',
    'trailer-no-colon': '0\r\nX a\r\n\r\n',
    'trailer-space-name': '0\r\n X: a\r\n\r\n',
    'trailer-nul': '0\r\nX: a\x00\r\n\r\n',
    'trailer-long': '0\r\nX: ' + 'v' * 200 + '\r\n\r\n',
    'final-bare-lf': '0\r\n\n',
    'too-big': '2000\r\n' + 'a' * 8 + '\r\n0\r\n\r\n',
    'too-big-total': '800\r\n' + 'a' * 2048 + '\r\n800\r\n' + 'b' * 2048 + '\r\n1\r\nc\r\n0\r\n\r\n',
    'smuggle-cr': '2\r\r;a\r\n02\r\n41\r\n0\r\n\r\n',
}
for name, data in bodies.items():
    write('guard_chunk', name, data)

configs = {
    'none': '',
    'listen': '--listen\x00127.0.0.1:8080',
    'listen-v6': '--listen\x00[::1]:0',
    'listen-eq': '--listen=0.0.0.0:65535',
    'listen-bad-port': '--listen\x00h:99999',
    'listen-no-host': '--listen\x00:80',
    'listen-no-colon': '-l\x00localhost',
    'upstream-path': '--upstream\x00https://api.deepseek.com/v1//',
    'upstream-eq': '--upstream=http://127.0.0.1:9/openai',
    'upstream-upper': '-u\x00HTTPS://API.EXAMPLE',
    'upstream-query': '--upstream\x00https://h/?x=1',
    'upstream-ftp': '--upstream\x00ftp://h',
    'upstream-empty-host': '--upstream\x00http:///x',
    'upstream-slashes': '--upstream\x00https:////',
    'timeouts': '--head-timeout\x001.5m\x00--body-timeout\x00500ms\x00--idle-timeout\x002h\x00--connect-timeout\x00.5s',
    'timeout-bare': '--first-byte-timeout\x00600',
    'timeout-exp': '--write-timeout\x001e3',
    'timeout-hex': '--write-timeout\x000x10',
    'timeout-inf': '--drain-timeout\x00inf',
    'timeout-neg': '--drain-timeout\x00-1',
    'timeout-huge': '--keepalive-timeout\x0099999999999999999999h',
    'timeout-dots': '--keepalive-timeout\x001.2.3s',
    'sizes': '--max-body\x001g\x00--max-header-bytes\x0016k\x00--max-request-line\x001kb\x00--buffer-size\x0064K',
    'size-max': '--max-body\x0018446744073709551615',
    'size-overflow': '--max-body\x0018446744073709551616',
    'size-overflow-k': '--max-body\x0018014398509481984k',
    'size-small-buffer': '--buffer-size\x001k',
    'size-small-headers': '--max-headers\x003',
    'threads': '-t\x004\x00--threads\x000',
    'threads-many': '--threads\x001025',
    'redirects': '--max-redirects\x0021',
    'quiet': '-q\x00--quiet',
    'help': '--help',
    'version': '-V',
    'unknown': '--nope\x00x',
    'missing-value': '--listen',
    'drop-headers': '--drop-headers\x00\x00--ca-file\x00/etc/ssl/certs/ca-certificates.crt',
    'env': 'FERRY_MAX_BODY=1m\x00FERRY_QUIET=0\x00FERRY_LISTEN=[::1]:0\x00--listen\x00127.0.0.1:1',
    'env-bad': 'FERRY_HEAD_TIMEOUT=soon',
    'env-upstream': 'FERRY_UPSTREAM=http://a.example/b/',
    'yaml-gateway': '-c\x00ferry.yaml\x00YAML:listen: 127.0.0.1:9000\nhead-timeout: 2s\nmax_body: 1m\nquiet: true\n'
                    'upstreams:\n  openai:\n    url: https://api.openai.com/\n    keys: [sk-a, "${HOME}"]\n'
                    '    key-header: authorization\n  deepseek:\n    url: https://api.deepseek.com\n    proxy: socks5://127.0.0.1:1080\n'
                    '    key_header: api-key\n    keys:\n      - k1\n      - k2\nroutes:\n  - path: /v1\n    models: [deepseek-*]\n'
                    '    upstream: deepseek\n  - path: /\n    upstream: openai\n',
    'yaml-flag-overrides': '--config=x\x00--head-timeout\x001s\x00YAML:head-timeout: 5s\nthreads: 2\n',
    'yaml-env': 'FERRY_CONFIG=x\x00YAML:upstream: http://127.0.0.1:1\n',
    'yaml-errors': '-c\x00x\x00YAML:nope: 1\nthreads: many\nupstreams: [a]\nroutes:\n  - path: /\n    upstream: missing\nconfig: other.yaml\n',
    'yaml-not-mapping': '-c\x00x\x00YAML:- a\n- b\n',
    'yaml-bad-syntax': '-c\x00x\x00YAML:a: [\n  b: {\n',
    'yaml-anchors': '-c\x00x\x00YAML:base: &b\n  url: http://h\nupstreams:\n  a: *b\n  b: {url: "http://h2", keys: []}\n',
}
for name, data in configs.items():
    write('config', name, data)

# h1resp: 4 control bytes (see fuzz/h1resp.c: flags, on_data/on_read pause pattern, piece sizes,
# faults), then the upstream's response; "~next~" starts the second request's response.
SECOND, HEADREQ, CLOSE, EARLY, IDLE, LATE = 0x01, 0x02, 0x10, 0x20, 0x40, 0x80
MEM, STREAM_CL, STREAM_CHUNKED = 0x04, 0x08, 0x0c
WHOLE, P1, P2, P5, P16, P100, P700 = 7, 0, 1, 2, 3, 4, 5
JSON = '{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":' \
       '{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],' \
       '"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}'


def R(status='200 OK', fields='', body='', version='HTTP/1.1'):
    return '%s %s\r\n%s\r\n%s' % (version, status, fields, body)


def CL(body, status='200 OK', extra='', version='HTTP/1.1'):
    return R(status, 'Content-Type: application/json\r\n%sContent-Length: %d\r\n' % (extra, len(body)),
             body, version)


def CH(chunks, status='200 OK', extra='', trailer=''):
    return R(status, 'Content-Type: text/event-stream\r\n%sTransfer-Encoding: chunked\r\n' % extra,
             ''.join('%x\r\n%s\r\n' % (len(c), c) for c in chunks) + '0\r\n%s\r\n' % trailer)


def H1(flags, pause, pieces, faults, resp):
    return bytes([flags, pause, pieces, faults]).decode('latin-1') + resp


SSE = ['data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n',
       'data: {"choices":[{"delta":{"content":"lo"}}]}\n\n',
       'data: {"usage":{"prompt_tokens":9,"completion_tokens":2}}\n\ndata: [DONE]\n\n']
BIG = ('x' * 63 + '\n') * 48
h1 = {
    'cl': H1(0, 0, WHOLE, 0, CL(JSON)),
    'cl-pieces-5': H1(0, 0, P5 | 0x28, 0, CL(JSON)),
    'cl-bytewise-pause-odd': H1(0, 0x55, P1, 0, CL('{"ok":true}')),
    'cl-reuse': H1(SECOND, 0, P100, 0, CL(JSON)),
    'cl-then-chunked-reuse': H1(SECOND, 0x02, P16, 0, CL(JSON) + '~next~' + CH(SSE)),
    'cl-big-pause-all': H1(0, 0xff, P700 | 0x40, 0, CL(BIG)),
    'cl-big-pause-some': H1(SECOND, 0x29, P100 | 0x18, 0, CL(BIG)),
    'cl-zero': H1(SECOND, 0, WHOLE, 0, CL('')),
    'chunked-sse': H1(0, 0x11, P16, 0, CH(SSE)),
    'chunked-ext': H1(0, 0, P5, 0, R('200 OK', 'Transfer-Encoding: chunked\r\n',
                                      '5;a=b\r\nhello\r\n6;name="q v"\r\n world\r\n0;last\r\n\r\n')),
    'chunked-trailers': H1(SECOND, 0x04, P2, 0, CH(SSE, trailer='X-Usage: 11\r\nServer-Timing: a;dur=1\r\n')),
    'chunked-upper-hex-zeros': H1(0, 0, P16, 0, R('200 OK', 'Transfer-Encoding: chunked\r\n',
                                                  '000A\r\n0123456789\r\n00\r\n\r\n')),
    'close-delimited': H1(CLOSE, 0, P100, 0, R('200 OK', 'Content-Type: application/json\r\n', JSON)),
    'close-delimited-forced': H1(SECOND, 0x80, P700, 0, R('200 OK', '', BIG)),
    'continue-then-200': H1(SECOND | MEM, 0, P5, 0, R('100 Continue') + CL(JSON)),
    'early-hints-then-200': H1(0, 0, P16, 0, R('103 Early Hints', 'Link: </a>; rel=preload\r\n') + CH(SSE)),
    'head-cl': H1(SECOND | HEADREQ, 0, WHOLE, 0, R('200 OK', 'Content-Length: 1234\r\n')),
    'head-chunked': H1(SECOND | HEADREQ, 0, P2, 0, R('200 OK', 'Transfer-Encoding: chunked\r\n')),
    '204-reuse': H1(SECOND, 0, WHOLE, 0, R('204 No Content', 'Date: x\r\n')),
    '304': H1(0, 0, WHOLE, 0, R('304 Not Modified', 'ETag: "a"\r\n')),
    'no-reason': H1(SECOND, 0, P5, 0, 'HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nhi'),
    'http10': H1(SECOND, 0, P16, 0, CL(JSON, version='HTTP/1.0')),
    'http10-keepalive': H1(SECOND, 0, P16, 0, CL(JSON, extra='Connection: keep-alive\r\n', version='HTTP/1.0')),
    'connection-close': H1(SECOND, 0, P100, 0, CL(JSON, extra='Connection: close\r\n')),
    'bytes-after-answer': H1(SECOND, 0, WHOLE, 0, CL('hi') + 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil'),
    'answer-split-from-extra': H1(SECOND, 0, P2 | 0x08, 0, CL('hi') + 'HTTP/1.1 200 OK\r\n\r\n'),
    'server-closes-pooled': H1(SECOND | CLOSE, 0, WHOLE, 0, CL(JSON)),
    'server-closes-pooled-late': H1(SECOND | CLOSE | LATE, 0, WHOLE, 0, CL(JSON)),
    'idle-expires': H1(SECOND | IDLE | LATE, 0, WHOLE, 0, CL(JSON)),
    'idle-zero-reused': H1(SECOND | IDLE, 0, WHOLE, 0, CL(JSON)),
    'upload-memory': H1(SECOND | MEM, 0, P100, 0, CL(JSON)),
    'upload-stream-cl': H1(SECOND | STREAM_CL, 0x81, P100, 0, CL(JSON)),
    'upload-stream-chunked': H1(STREAM_CHUNKED, 0x42, P16, 0, CH(SSE)),
    'early-answer-upload': H1(EARLY | STREAM_CHUNKED, 0xc3, P5, 0, CL('{"error":"too large"}', '413 Payload Too Large')),
    'early-answer-close': H1(EARLY | CLOSE | STREAM_CL, 0x01, WHOLE, 0, CL('{"error":"no"}', '400 Bad Request')),
    'refuse-header': H1(0, 0, WHOLE, 0x03, CL(JSON)),
    'refuse-data': H1(0, 0x01, P16, 0x09, CH(SSE)),
    'stop-mid-body': H1(0, 0x00, P5, 0x30, CL(BIG)),
    'stop-while-paused': H1(SECOND, 0xff, P16, 0x20, CH(SSE)),
    'refused-port': H1(0, 0, WHOLE, 0xf0, ''),
    'upload-abort': H1(STREAM_CL, 0, WHOLE, 0x0f, CL(JSON)),
    'upstream-reset-mid-body': H1(0, 0, P16, 0x90, CL(BIG)),
    'upstream-reset-mid-upload': H1(EARLY | STREAM_CHUNKED, 0x88, P100, 0xa0, R('200 OK', 'Content-Length: 500\r\n', 'partial')),
    'upstream-reset-on-reuse': H1(SECOND | LATE, 0, WHOLE, 0x80, CL(JSON)),
    'nothing': H1(0, 0, WHOLE, 0, ''),
    'nothing-on-reuse': H1(SECOND, 0, WHOLE, 0, CL(JSON) + '~next~'),
    'truncated-cl': H1(0, 0, P16, 0, R('200 OK', 'Content-Length: 100\r\n', 'short')),
    'truncated-chunked': H1(0, 0, P5, 0, R('200 OK', 'Transfer-Encoding: chunked\r\n', '10\r\nabc')),
    'truncated-head': H1(0, 0, P5, 0, 'HTTP/1.1 200 OK\r\nContent-Le'),
    'switching-protocols': H1(0, 0, WHOLE, 0, R('101 Switching Protocols', 'Upgrade: websocket\r\nConnection: upgrade\r\n')),
    'bad-status': H1(0, 0, WHOLE, 0, 'HTTP/1.1 2OO OK\r\n\r\n'),
    'not-http': H1(0, 0, WHOLE, 0, 'SSH-2.0-OpenSSH_9.2\r\n'),
    'cl-and-te': H1(0, 0, P16, 0, R('200 OK', 'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n', '5\r\nhello\r\n0\r\n\r\n')),
    'cl-twice': H1(0, 0, P16, 0, R('200 OK', 'Content-Length: 2\r\nContent-Length: 2\r\n', 'hi')),
    'cl-bad': H1(0, 0, P16, 0, R('200 OK', 'Content-Length: 2x\r\n', 'hi')),
    'chunk-size-bad': H1(0, 0, P16, 0, R('200 OK', 'Transfer-Encoding: chunked\r\n', 'zz\r\nhello\r\n0\r\n\r\n')),
    'te-gzip-chunked': H1(0, 0, P16, 0, R('200 OK', 'Transfer-Encoding: gzip, chunked\r\n', '2\r\nhi\r\n0\r\n\r\n')),
    'bare-lf-head': H1(SECOND, 0, P5, 0, 'HTTP/1.1 200 OK\nContent-Length: 2\n\nhi'),
    'obs-fold': H1(0, 0, P16, 0, R('200 OK', 'X-A: one\r\n two\r\nContent-Length: 2\r\n', 'hi')),
    'nul-in-value': H1(0, 0, P16, 0, R('200 OK', 'X-A: a\x00b\r\nContent-Length: 2\r\n', 'hi')),
    'long-header': H1(0, 0, P700, 0, R('200 OK', 'X-Long: ' + 'v' * 2100 + '\r\nContent-Length: 2\r\n', 'hi')),
    'many-headers': H1(SECOND, 0, P100, 0, CL('{}', extra=''.join('X-H%d: %d\r\n' % (i, i) for i in range(60)))),
    'rate-limited': H1(SECOND, 0, P16, 0, CL('{"error":{"type":"rate_limit"}}', '429 Too Many Requests', 'Retry-After: 1\r\n')),
}
for name, data in h1.items():
    write('h1resp', name, data)
