#!/usr/bin/python3
"""The reference verdict for the abuse table: reads raw request bytes on stdin and says what h11
(python3-h11 from Debian, a strict, well-tested HTTP/1.1 parser) makes of them, as one JSON line:

  {"verdict": "accept" | "reject", "error": "...", "requests": [{"method", "target", "body_len",
   "body_sha256", "headers": [[name, value], ...], "complete"}], "trailing": N}

"reject" means h11 raised RemoteProtocolError somewhere in the bytes; "accept" means every
request in them parsed (the last one may be incomplete: "complete": false). Between pipelined
requests the script answers each with an empty 200, as a server would, so h11 moves on to the
next; after a request that ends the connection (Connection: close, HTTP/1.0, CONNECT/Upgrade)
the rest is "trailing" bytes, never parsed. h11 enforces no size limits of ferry's kind.

Run with Debian's interpreter: /usr/bin/python3 tests/abuse/h11_verdict.py < request.bin"""
import hashlib
import json
import sys

import h11


def latin1(b):
    return b.decode('latin-1')


def verdict(data):
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
    conn.receive_data(data)
    reqs = []
    cur = None
    body = hashlib.sha256()
    out = {'verdict': 'accept', 'error': None, 'requests': reqs, 'trailing': 0}
    while True:
        try:
            ev = conn.next_event()
        except h11.RemoteProtocolError as e:
            out['verdict'] = 'reject'
            out['error'] = str(e)
            if cur is not None:
                reqs.append(cur)
            return out
        if ev is h11.NEED_DATA:
            if cur is not None:
                reqs.append(cur)
            return out
        if ev is h11.PAUSED:
            # CONNECT or Upgrade: h11 waits for the server's decision; the rest is not HTTP.
            if cur is not None:
                reqs.append(cur)
            out['trailing'] = len(conn.trailing_data[0])
            return out
        if isinstance(ev, h11.Request):
            cur = {'method': latin1(ev.method), 'target': latin1(ev.target),
                   'http_version': latin1(ev.http_version),
                   'headers': [[latin1(k), latin1(v)] for k, v in ev.headers.raw_items()],
                   'body_len': 0, 'body_sha256': None, 'complete': False}
            body = hashlib.sha256()
        elif isinstance(ev, h11.Data):
            cur['body_len'] += len(ev.data)
            body.update(ev.data)
        elif isinstance(ev, h11.EndOfMessage):
            cur['complete'] = True
            cur['body_sha256'] = body.hexdigest()
            cur['trailers'] = [[latin1(k), latin1(v)] for k, v in ev.headers.raw_items()]
            reqs.append(cur)
            cur = None
            if conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:
                # CONNECT or Upgrade: the rest depends on the server's answer; not HTTP to parse.
                out['trailing'] = len(conn.trailing_data[0])
                return out
            conn.send(h11.Response(status_code=200, headers=[('Content-Length', '0')]))
            conn.send(h11.EndOfMessage())
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                out['trailing'] = len(conn.trailing_data[0])
                return out
            conn.start_next_cycle()
        elif isinstance(ev, h11.ConnectionClosed):
            return out


if __name__ == '__main__':
    print(json.dumps(verdict(sys.stdin.buffer.read())))
