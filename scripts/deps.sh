#!/usr/bin/env bash
# Install what ferry needs, and nothing that is already there.
#   scripts/deps.sh build   Debian packages to build ferry
#   scripts/deps.sh test    build + what the unit, e2e and browser tests and the benchmark smoke
#                           run need (nginx, wrk), and `npm ci`
#   scripts/deps.sh bench   build + what `make bench` / `make bench-smoke` need (nginx, wrk, node and
#                           `npm ci` for workerd)
# Idempotent: uses apt-get only for missing packages (one `apt-get update`, only then), and sudo only when
# not root. Takes well under 2 s when everything is present.
set -euo pipefail

mode="${1:-}"
case "$mode" in
  build|test|bench) ;;
  *) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."

build_pkgs=(build-essential pkg-config libuv1-dev libcurl4-openssl-dev libssl-dev libfyaml-dev libsqlite3-dev node-llhttp ca-certificates)
test_pkgs=(libcmocka-dev clang libclang-rt-14-dev chromium openssl curl python3-h11 slowhttptest)

pkgs=("${build_pkgs[@]}")
if [ "$mode" = test ]; then
  pkgs+=("${test_pkgs[@]}")
  # Node >= 18 and npm already on PATH (nvm, nodesource, a CI image...) are good enough.
  node_ok=0
  if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
    if [ "${major:-0}" -ge 18 ] 2>/dev/null; then node_ok=1; fi
  fi
  [ "$node_ok" = 1 ] || pkgs+=(nodejs npm)
fi

if [ "$mode" = bench ] || [ "$mode" = test ]; then
  # taskset comes with util-linux (essential); the nginx package's postinst may start a system
  # nginx on :80, which the benchmark neither uses nor needs. (test: make test ends with the
  # benchmark's smoke run.)
  pkgs+=(nginx wrk openssl)
  [ "$mode" = bench ] && pkgs+=(valgrind) # bench/instructions.sh (callgrind)
  node_ok=0
  if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
    if [ "${major:-0}" -ge 18 ] 2>/dev/null; then node_ok=1; fi
  fi
  [ "$node_ok" = 1 ] || pkgs+=(nodejs npm)
fi

missing=()
for p in "${pkgs[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
  case "$status" in
    *"install ok installed"*) ;;
    *) missing+=("$p") ;;
  esac
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps.sh: installing missing Debian packages: ${missing[*]}" >&2
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
      echo "deps.sh: not root and no sudo; install these yourself: ${missing[*]}" >&2; exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ "$mode" = test ] || [ "$mode" = bench ]; then
  # npm ci when node_modules is missing or older than the lock file.
  if [ ! -d node_modules ] || [ ! -f node_modules/.package-lock.json ] \
     || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "deps.sh: npm ci" >&2
    # playwright-core downloads no browser, but say so anyway: we use Debian's /usr/bin/chromium.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
  fi
fi
