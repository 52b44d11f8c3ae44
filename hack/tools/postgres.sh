#!/usr/bin/env bash
# PostgreSQL 15 server binaries from Debian (used for load/concurrency/fault tests).
. "$(dirname "$0")/common.sh"
PG_BIN="${SENSORLOG_PG_BIN:-/usr/lib/postgresql/15/bin}"
if [ ! -x "$PG_BIN/postgres" ]; then
  log "installing postgresql-15 from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
fi
"$PG_BIN/postgres" --version >&2
