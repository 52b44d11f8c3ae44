#!/usr/bin/env bash
# kube-apiserver and etcd for envtest-style tests (.tools/bin/{kube-apiserver,etcd}).
# No release binaries can be downloaded on the build machines, so both are built
# with Go from the throwaway module hack/envtest (see its go.mod for why it exists).
# Cold (empty Go caches, fresh clone, 2 cores): ~8-10 min alone, 14 min when the
# cores are shared. Go's build and module caches stay in their default places so
# a rebuild on the same machine mostly links (~40 s). Stamped: a second run with
# nothing changed returns at once.
#   hack/tools/envtest.sh            build if the pins or go.sum changed
#   hack/tools/envtest.sh --update   regenerate hack/envtest/go.mod for KUBE_VERSION
. "$(dirname "$0")/common.sh"
MOD="$ROOT/hack/envtest"
export GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false"

command -v go >/dev/null || { log "go not found: install Go >= 1.26 first"; exit 1; }

if [ "${1:-}" = "--update" ]; then
  # Every staging module that k8s.io/kubernetes replaces with ./staging/... is
  # published as k8s.io/NAME v0.MINOR.PATCH; sample-* modules are not and are unused.
  export GOFLAGS="-buildvcs=false"
  staging_version="v0.${KUBE_VERSION#v1.}"
  gomod="$(cd "$MOD" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    sed -n '1,/^module /p' "$MOD/go.mod"
    printf '\ngo 1.26.0\n\nrequire (\n\tgo.etcd.io/etcd/server/v3 %s\n\tk8s.io/kubernetes %s\n)\n\nreplace (\n' \
      "$ETCD_VERSION" "$KUBE_VERSION"
    awk '$2 == "=>" && $3 ~ /^\.\/staging\// && $1 !~ /sample-/ {print $1}' "$gomod" \
      | while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$staging_version"; done
    printf ')\n'
  } > "$MOD/go.mod.new"
  mv "$MOD/go.mod.new" "$MOD/go.mod"
  (cd "$MOD" && go mod tidy)
  log "hack/envtest/go.mod now builds kube-apiserver $KUBE_VERSION with etcd $ETCD_VERSION"
  exit 0
fi

grep -q "k8s.io/kubernetes $KUBE_VERSION\$" "$MOD/go.mod" \
  || { log "hack/envtest/go.mod does not require k8s.io/kubernetes $KUBE_VERSION: run $0 --update"; exit 1; }
grep -q "go.etcd.io/etcd/server/v3 $ETCD_VERSION\$" "$MOD/go.mod" \
  || { log "hack/envtest/go.mod does not require etcd $ETCD_VERSION: run $0 --update"; exit 1; }

stamp="$KUBE_VERSION $ETCD_VERSION $(cat "$MOD/go.mod" "$MOD/go.sum" | sha256sum | cut -c1-16)"
if have_stamp envtest "$stamp" && [ -x "$TOOLS/bin/kube-apiserver" ] && [ -x "$TOOLS/bin/etcd" ]; then
  exit 0
fi

# build NAME PACKAGE [extra ldflags]: stripped, with reproducible paths.
build() {
  local name="$1" pkg="$2" extra="${3:-}" t0=$SECONDS
  log "building $name from $pkg (first build takes many minutes on 2 cores)"
  (cd "$MOD" && go build -trimpath -ldflags="-s -w $extra" -o "$TOOLS/bin/$name.part" "$pkg")
  mv "$TOOLS/bin/$name.part" "$TOOLS/bin/$name"
  log "built $name in $((SECONDS - t0))s"
}

# Without these the server reports v0.0.0, and helm refuses charts whose
# kubeVersion constraint it then cannot meet.
kv="k8s.io/component-base/version"
minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
build etcd go.etcd.io/etcd/server/v3
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver \
  "-X $kv.gitVersion=$KUBE_VERSION -X $kv.gitMajor=1 -X $kv.gitMinor=$minor -X $kv.gitTreeState=clean"
"$TOOLS/bin/etcd" --version >&2
"$TOOLS/bin/kube-apiserver" --version >&2
write_stamp envtest "$stamp"
