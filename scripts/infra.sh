#!/usr/bin/env bash
# Local infrastructure for roster: system packages, Postgres, and the tansu
# Kafka-compatible broker on 127.0.0.1:9092. Every step runs only when needed.
#
#   scripts/infra.sh up            # everything below
#   scripts/infra.sh broker-start  # start tansu if nothing listens on :9092
#   scripts/infra.sh broker-stop   # stop the tansu started for :9092
#
# Can also be sourced (`. scripts/infra.sh`) to call the infra_* functions.

BROKER_HOST=127.0.0.1
BROKER_PORT=9092
TANSU_LOG="${TMPDIR:-/tmp}/roster-tansu.log"
TANSU_PID="${TMPDIR:-/tmp}/roster-tansu.pid"

log() { printf 'infra: %s\n' "$*" >&2; }

# Run as root: directly, via sudo when available, else try anyway.
as_root() {
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    "$@"
  fi
}

# cmake + curl headers (rdkafka's cmake-build) and pg_trgm (postgresql-contrib).
infra_packages() {
  local missing=0
  command -v cmake >/dev/null 2>&1 || missing=1
  [ -e /usr/include/x86_64-linux-gnu/curl/curl.h ] \
    || dpkg -s libcurl4-openssl-dev >/dev/null 2>&1 || missing=1
  compgen -G '/usr/share/postgresql/*/extension/pg_trgm.control' >/dev/null || missing=1
  if [ "$missing" -eq 1 ]; then
    log "installing cmake libcurl4-openssl-dev postgresql-contrib"
    as_root apt-get update && as_root env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y cmake libcurl4-openssl-dev postgresql-contrib
  fi
}

# Postgres on 127.0.0.1:5432 (trust auth, user postgres).
infra_postgres() {
  pg_isready -q -h 127.0.0.1 -p 5432 && return 0
  local version
  version="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort | head -1)"
  [ -n "$version" ] || { log "no cluster under /etc/postgresql; install postgresql"; return 1; }
  log "starting postgres $version/main"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || return
  local _
  for _ in $(seq 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && return 0
    sleep 1
  done
  log "postgres not ready after 30 s"
  return 1
}

# Make tansu findable even when ~/.cargo/bin is not on PATH.
tansu_on_path() {
  command -v tansu >/dev/null 2>&1 && return 0
  if [ -x "$HOME/.cargo/bin/tansu" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
    export PATH
    return 0
  fi
  return 1
}

infra_tansu_install() {
  tansu_on_path && return 0
  log "installing tansu (cargo install, takes 10-20 minutes; once per machine)"
  cargo install tansu --locked --features dynostore && tansu_on_path
}

broker_listening() {
  timeout 1 bash -c "exec 3<>/dev/tcp/$BROKER_HOST/$BROKER_PORT" 2>/dev/null
}

# Start tansu with in-memory storage (forgets everything on restart).
infra_broker_start() {
  broker_listening && return 0
  tansu_on_path || { log "tansu not installed; run: $0 up"; return 1; }
  log "starting tansu on $BROKER_HOST:$BROKER_PORT (log: $TANSU_LOG)"
  # setsid: the broker outlives the shell (and process group) that started it.
  setsid nohup tansu broker \
    --listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
    --advertised-listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
    --storage-engine memory://tansu/ </dev/null >"$TANSU_LOG" 2>&1 &
  echo "$!" >"$TANSU_PID"
  local _
  for _ in $(seq 30); do
    broker_listening && return 0
    sleep 1
  done
  log "tansu not listening after 30 s; see $TANSU_LOG"
  return 1
}

# Stop the broker recorded in the pid file, else the tansu serving our port.
infra_broker_stop() {
  local pids="" pid=""
  [ -s "$TANSU_PID" ] && pid="$(cat "$TANSU_PID")"
  # Trust the pid file only if that pid is still a tansu broker (not reused).
  if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q '^tansu broker'; then
    pids="$pid"
  else
    pids="$(pgrep -f "tansu broker --listener-url tcp://$BROKER_HOST:$BROKER_PORT" || true)"
  fi
  rm -f "$TANSU_PID"
  if [ -z "$pids" ]; then
    log "no tansu broker running for port $BROKER_PORT"
    return 0
  fi
  log "stopping tansu (pid $pids)"
  # shellcheck disable=SC2086 # one pid per word
  kill $pids
  local _
  for _ in $(seq 30); do
    broker_listening || return 0
    sleep 1
  done
  log "port $BROKER_PORT still busy after 30 s"
  return 1
}

# Chained so a failed step also stops the sequence when sourced without set -e.
# schemathesis (PyPI) fuzzes the API from its OpenAPI document in the tests.
infra_schemathesis() {
  python3 -c 'import schemathesis' >/dev/null 2>&1 && return 0
  log "installing schemathesis"
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==4.32.5"
}

# The console's browser tests: Debian's chromium (Playwright's own browser
# downloads do not work here) and playwright-core, pinned by
# tests/browser/package-lock.json.
infra_browser() {
  if [ ! -x /usr/bin/chromium ]; then
    log "installing chromium"
    as_root apt-get update && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium || return
  fi
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/browser"
  if [ ! -d "$dir/node_modules/playwright-core" ]; then
    log "installing playwright-core (npm ci in tests/browser)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || return
  fi
}

# Redocly CLI lints the OpenAPI document in the tests, pinned by
# tests/openapi/package-lock.json.
infra_openapi_lint() {
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/openapi"
  if [ ! -f "$dir/node_modules/@redocly/cli/bin/cli.js" ]; then
    log "installing @redocly/cli (npm ci in tests/openapi)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || return
  fi
}

# The Standard Webhooks reference verifier checks every delivery the
# webhook tests receive, pinned by tests/webhooks/package-lock.json.
infra_webhooks_verifier() {
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/webhooks"
  if [ ! -d "$dir/node_modules/standardwebhooks" ]; then
    log "installing standardwebhooks (npm ci in tests/webhooks)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || return
  fi
}

# Mastercard's own client libraries (PyPI) sign and encrypt requests in the
# tests, pinned with hashes by tests/mastercard/requirements.txt, in a venv
# of their own.
infra_mastercard() {
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/mastercard"
  "$dir/.venv/bin/python" -c 'import oauth1, client_encryption' >/dev/null 2>&1 && return 0
  log "installing mastercard-oauth1-signer and mastercard-client-encryption (tests/mastercard/.venv)"
  python3 -m venv "$dir/.venv" \
    && "$dir/.venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r "$dir/requirements.txt"
}

infra_up() {
  infra_packages && infra_postgres && infra_tansu_install && infra_broker_start && infra_schemathesis \
    && infra_browser && infra_openapi_lint && infra_webhooks_verifier && infra_mastercard || return
  log "ready: postgres 127.0.0.1:5432, kafka $BROKER_HOST:$BROKER_PORT"
}

# Executed (not sourced): dispatch the subcommand.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-up}" in
    up) infra_up ;;
    broker-start) infra_broker_start ;;
    broker-stop) infra_broker_stop ;;
    *) echo "usage: $0 [up|broker-start|broker-stop]" >&2; exit 2 ;;
  esac
fi
