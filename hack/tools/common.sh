# Sourced by hack/tools/*.sh: paths, pinned versions, small helpers.
set -eEuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="${SENSORLOG_TOOLS_DIR:-$ROOT/.tools}"
# shellcheck source=versions.env
. "$ROOT/hack/tools/versions.env"
mkdir -p "$TOOLS/bin"
log() { printf '[tools] %s\n' "$*" >&2; }
# stamp NAME VERSION: true when NAME was already installed at VERSION.
have_stamp() { [ -f "$TOOLS/.stamp-$1" ] && [ "$(cat "$TOOLS/.stamp-$1")" = "$2" ]; }
write_stamp() { printf '%s' "$2" > "$TOOLS/.stamp-$1"; }
