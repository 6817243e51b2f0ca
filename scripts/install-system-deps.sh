#!/usr/bin/env bash
# Installs the real servers that the integration tests start: Debian and npm packages.
# Idempotent: anything already present is left alone. Each integration adds its own lines.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_UPDATED=0
# need_apt COMMAND PACKAGE...: install PACKAGE(s) with apt-get unless COMMAND already exists.
need_apt() {
  local probe=$1
  shift
  if [ -e "$probe" ] || command -v "$probe" >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "install-system-deps: need root to apt-get install $*" >&2
    return 1
  fi
  if [ "$APT_UPDATED" = 0 ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# need_npm PACKAGE@VERSION: install into .deps/npm (not global) unless already there.
need_npm() {
  local spec=$1 name=${1%@*}
  if [ -d ".deps/npm/node_modules/$name" ]; then
    return 0
  fi
  mkdir -p .deps/npm
  (cd .deps/npm && npm install --silent --no-audit --no-fund "$spec" >/dev/null)
}

# --- integrations: PostgreSQL for the SQLAlchemy tests (a private cluster per test run)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need_apt /usr/lib/postgresql/initdb-missing postgresql
fi

# --- bench: wrk, the HTTP load generator of benchmarks/bench_wsgi.py (loopback only)
need_apt wrk wrk

# statsd + Graphite carbon: the statsd backend's tests send to a real statsd daemon that flushes
# into carbon-cache, and read the whisper files it writes.
need_apt carbon-cache graphite-carbon
need_npm statsd@0.9.0

# Zipkin v1 ingest tests: zipkin-js, a real v1 JSON encoder (it posts v1 JSON by default)
need_npm zipkin@0.22.0
need_npm zipkin-transport-http@0.22.0

# fork tests: Debian's uWSGI 2.0.21 and its Python plugin, which run Python threads only with
# --enable-threads (the uWSGI that pip builds for the test extra always runs them)
need_apt /usr/lib/uwsgi/plugins/python3_plugin.so uwsgi-core uwsgi-plugin-python3

# Celery tests: redis as broker and result backend (a private server per test, on a free port)
need_apt redis-server redis-server

# collector web UI tests: a real headless browser (driven by Playwright, never its own download),
# and axe-core, the accessibility checker they run on every page
need_apt /usr/bin/chromium chromium
need_npm axe-core@4.10.3

# collector tests: a private network namespace (unshare, ip) stands for a LAN address without
# exposing anything
need_apt unshare util-linux
need_apt ip iproute2
