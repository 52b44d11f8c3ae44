#!/usr/bin/env bash
# uv (pinned, in its own venv) and the workspace's locked environment in .venv.
. "$(dirname "$0")/common.sh"
if ! have_stamp uv "$UV_VERSION"; then
  log "installing uv $UV_VERSION"
  python3.11 -m venv "$TOOLS/uvenv"
  "$TOOLS/uvenv/bin/pip" install -q "uv==$UV_VERSION"
  ln -sf "$TOOLS/uvenv/bin/uv" "$TOOLS/bin/uv"
  write_stamp uv "$UV_VERSION"
fi
cd "$ROOT"
"$TOOLS/bin/uv" sync --frozen --all-packages --quiet
