#!/usr/bin/env bash
# A real Consul agent for the registration and KV-config tests (.tools/bin/consul).
# No release binary can be downloaded on the build machines, so it is built with Go
# from the throwaway module hack/consul (its go.mod says why v1.15.4 and the patch).
# Cold (empty Go caches, 2 shared cores): ~10 min; with warm caches ~1 min. Stamped.
. "$(dirname "$0")/common.sh"
MOD="$ROOT/hack/consul"
export GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false"
command -v go >/dev/null || { log "go not found: install Go >= 1.26 first"; exit 1; }

grep -q "github.com/hashicorp/consul $CONSUL_VERSION " "$MOD/go.mod" \
  || { log "hack/consul/go.mod does not require consul $CONSUL_VERSION"; exit 1; }
stamp="$CONSUL_VERSION $(cat "$MOD/go.mod" "$MOD/go.sum" "$0" | sha256sum | cut -c1-16)"
if have_stamp consul "$stamp" && [ -x "$TOOLS/bin/consul" ]; then
  exit 0
fi

t0=$SECONDS
work="$TOOLS/build/consul"
rm -rf "$work" && mkdir -p "$work"
cp "$MOD/go.mod" "$MOD/go.sum" "$work/"
src="$(cd "$work" && go mod download -json "github.com/hashicorp/consul@$CONSUL_VERSION" \
  | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
cp -r "$src" "$work/src" && chmod -R u+w "$work/src"
# api v1.22.0 has no RaftServer.LastIndex; only `consul operator raft list-peers` prints it.
listpeers="$work/src/command/operator/raft/listpeers/operator_raft_list.go"
sed -i 's/= raftServer\.LastIndex$/= 0 \/\/ sensorlog: field missing from api v1.22.0/' "$listpeers"
grep -q "sensorlog: field missing" "$listpeers" || { log "consul source patch did not apply"; exit 1; }
(cd "$work" && go mod edit -replace "github.com/hashicorp/consul=./src" \
  && log "building consul $CONSUL_VERSION (first build takes many minutes on 2 cores)" \
  && go build -trimpath -ldflags="-s -w" -o "$TOOLS/bin/consul.part" github.com/hashicorp/consul)
mv "$TOOLS/bin/consul.part" "$TOOLS/bin/consul"
rm -rf "$work"
write_stamp consul "$stamp"
log "built consul $CONSUL_VERSION in $((SECONDS - t0))s: $("$TOOLS/bin/consul" version | head -1)"
