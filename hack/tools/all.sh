#!/usr/bin/env bash
# Install every tool the project needs into .tools/ (idempotent, pinned).
# Usage: hack/tools/all.sh [component...]   (default: all)
. "$(dirname "$0")/common.sh"
components=("$@")
[ ${#components[@]} -gt 0 ] || components=(python postgres kafka pglite envtest helm consul)
for c in "${components[@]}"; do
  if [ -f "$ROOT/hack/tools/$c.sh" ]; then
    bash "$ROOT/hack/tools/$c.sh"
  else
    log "unknown component '$c'"; exit 2
  fi
done
