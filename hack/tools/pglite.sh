#!/usr/bin/env bash
# TimescaleDB for tests and dev mode: PGlite's WASM build from npm, installed
# from hack/pglite/package-lock.json (integrity-pinned) into hack/pglite/node_modules.
. "$(dirname "$0")/common.sh"
PGLITE_DIR="$ROOT/hack/pglite"
command -v node >/dev/null || { log "node not found: Node 20+ is needed for hack/pglite"; exit 1; }
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt "20" ]; then
  log "node $major found; hack/pglite needs Node 20+"; exit 1
fi
# The stamp is the lock file's hash: a changed lock reinstalls, an unchanged one is a no-op.
lock_hash="$(sha256sum "$PGLITE_DIR/package-lock.json" | cut -c1-16)"
if ! have_stamp pglite "$lock_hash" || [ ! -d "$PGLITE_DIR/node_modules/@electric-sql/pglite" ]; then
  log "installing PGlite + TimescaleDB ($PGLITE_VERSION) with npm ci"
  (cd "$PGLITE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  write_stamp pglite "$lock_hash"
fi
