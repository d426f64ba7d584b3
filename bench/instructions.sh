#!/usr/bin/env bash
# bench/instructions.sh — user-space instructions per small non-streaming request, counted by
# callgrind in the relay's process (ferry with --threads 1, and nginx with one worker) under
# `wrk -t1 -c64`: steady on a noisy machine where time is not (docs/performance.md, step 9).
# Usage: bench/instructions.sh [ferry|nginx]...   (default: both). Needs valgrind, wrk, nginx,
# `make ferry bench-tools`. Ports 19301-19303; everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=("$@")
[ ${#PEERS[@]} -gt 0 ] || PEERS=(ferry nginx)
for t in valgrind callgrind_control callgrind_annotate wrk; do
  command -v "$t" >/dev/null || { echo "instructions.sh: $t is missing (apt-get install valgrind wrk)" >&2; exit 1; }
done
[ -x build/bench/upstream ] && [ -x ferry ] || { echo "instructions.sh: run make ferry bench-tools first" >&2; exit 1; }

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

UP=19301 PORT=19302
taskset -c 1 build/bench/upstream --port $UP >/dev/null 2>&1 &
PIDS+=($!)

nginx_conf() {
  mkdir -p "$TMP/ng"/{client_body,proxy,fastcgi,uwsgi,scgi}
  cat >"$TMP/ng/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $TMP/ng/nginx.pid;
error_log $TMP/ng/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/ng/client_body;
    proxy_temp_path $TMP/ng/proxy;
    fastcgi_temp_path $TMP/ng/fastcgi;
    uwsgi_temp_path $TMP/ng/uwsgi;
    scgi_temp_path $TMP/ng/scgi;
    keepalive_requests 100000;
    upstream openai { server 127.0.0.1:$UP; keepalive 1024; keepalive_requests 100000; }
    server {
        listen 127.0.0.1:$PORT;
        location / {
            proxy_pass http://openai;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            add_header Access-Control-Allow-Origin * always;
        }
    }
}
EOF
}

wrk_run() { # seconds → requests completed
  taskset -c 1 wrk -t1 -c64 -d"$1"s -s bench/chat.lua "http://127.0.0.1:$PORT/v1/chat/completions" |
    awk '/requests in/{print $1}'
}

for peer in "${PEERS[@]}"; do
  out="$TMP/cg.$peer"
  case "$peer" in
  ferry) cmd=(./ferry --threads 1 --listen "127.0.0.1:$PORT" --upstream "http://127.0.0.1:$UP" --quiet) ;;
  nginx) nginx_conf; cmd=(/usr/sbin/nginx -p "$TMP/ng" -c "$TMP/ng/nginx.conf" -e "$TMP/ng/error.log") ;;
  *) echo "instructions.sh: unknown peer $peer" >&2; exit 2 ;;
  esac
  taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" "${cmd[@]}" \
    >/dev/null 2>"$TMP/$peer.err" &
  pid=$!
  PIDS+=($pid)
  for _ in $(seq 100); do # up to 20 s for the relay to listen under valgrind
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
    sleep 0.2
  done
  wrk_run 2 >/dev/null # warm-up: connections, pools, caches
  callgrind_control -i on "$pid" >/dev/null 2>&1
  n=$(wrk_run 6)
  callgrind_control -i off "$pid" >/dev/null 2>&1
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  ir=$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",","",$1); print $1; done = 1}')
  if [ -z "$ir" ] || [ -z "$n" ] || [ "$n" -eq 0 ]; then
    echo "instructions.sh: $peer gave no count (see $TMP/$peer.err)" >&2
    exit 1
  fi
  printf '%s: %d requests, %d instructions per request\n' "$peer" "$n" $((ir / n))
done
