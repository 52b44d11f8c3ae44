#!/usr/bin/env bash
# Build the sensorlog images (query, writer, operator) from the repository root with
# podman or docker, optionally load them into the kind cluster.
#
#   hack/images.sh                      # all three, tag = git short sha (+ -dirty)
#   hack/images.sh query writer         # some of them
#   TAG=dev KIND_CLUSTER=sensorlog hack/images.sh   # and `kind load` them
#   hack/images.sh --base               # no registry? make the FROM image with debootstrap
#
# Knobs: ENGINE (podman|docker; default: whichever answers), TAG, REPO_PREFIX
# (default sensorlog/), BASE_IMAGE (the Dockerfiles' FROM), CA_BUNDLE (a CA file
# handed to the build as secret "ca_bundle", for TLS-intercepting proxies; default
# the system bundle when present), KIND_CLUSTER (load into that kind cluster).
# Builds and containers use host networking: no container bridge is needed.
set -eEuo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
REPO_PREFIX="${REPO_PREFIX:-sensorlog/}"
BASE_IMAGE="${BASE_IMAGE:-docker.io/library/python:3.11-slim-bookworm}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
KIND_CLUSTER="${KIND_CLUSTER:-}"
declare -A DOCKERFILE=(
  [query]=images/query/Dockerfile
  [writer]=images/writer/Dockerfile
  [operator]=operator/Dockerfile
)

log() { printf 'images: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

pick_engine() {
  if [ -n "${ENGINE:-}" ]; then echo "$ENGINE"; return; fi
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then echo docker; return; fi
  if command -v podman >/dev/null; then echo podman; return; fi
  die "neither a running docker nor podman found (apt-get install --no-install-recommends podman runc iptables)"
}
ENGINE="$(pick_engine)"

# Podman on the build machines needs runc (crun fails) and explicit ulimits.
engine_args=()
if [ "$ENGINE" = podman ]; then
  engine_args=(--runtime "${PODMAN_RUNTIME:-runc}")
fi
build_args=(--network host)
if [ "$ENGINE" = podman ]; then
  # --format docker keeps HEALTHCHECK (the OCI image format has no such field).
  build_args+=(--format docker --ulimit nofile=10000:10000 --ulimit nproc=32768:32768)
fi

make_base() {
  # A CPython 3.11 Debian base for machines that can pull no image.
  command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
  # A global and an EXIT trap: a RETURN trap is not function-local in bash, it fired
  # again when main returned, with the local gone (set -u: "dir: unbound variable").
  BASE_TMP="$(mktemp -d)"
  trap 'rm -rf "$BASE_TMP"' EXIT
  local dir="$BASE_TMP"
  log "debootstrap bookworm into $dir (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$dir/rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
  rm -rf "$dir"/rootfs/var/cache/apt/archives/*.deb "$dir"/rootfs/var/lib/apt/lists/*
  tar -C "$dir/rootfs" -c . | "$ENGINE" "${engine_args[@]}" import - "$BASE_IMAGE" >/dev/null
  log "tagged $BASE_IMAGE"
}

tag() {
  if [ -n "${TAG:-}" ]; then echo "$TAG"; return; fi
  local t
  t="$(git rev-parse --short HEAD 2>/dev/null || echo dev)"
  if [ -n "$(git status --porcelain -- core protos images operator uv.lock 2>/dev/null)" ]; then
    t="$t-dirty"
  fi
  echo "$t"
}

build_one() {
  local name="$1" image="$2" secret=()
  if [ -s "$CA_BUNDLE" ]; then secret=(--secret "id=ca_bundle,src=$CA_BUNDLE"); fi
  log "building $image ($ENGINE)"
  local started=$SECONDS
  DOCKER_BUILDKIT=1 "$ENGINE" "${engine_args[@]}" build "${build_args[@]}" "${secret[@]}" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" -f "${DOCKERFILE[$name]}" -t "$image" .
  log "built $image in $((SECONDS - started)) s"
}

kind_load() {
  local image="$1" archive
  command -v kind >/dev/null || die "kind not installed (go install sigs.k8s.io/kind@v0.33.0)"
  if [ "$ENGINE" = docker ]; then
    kind load docker-image --name "$KIND_CLUSTER" "$image"
  else
    archive="$(mktemp --suffix=.tar)"
    "$ENGINE" save -o "$archive" "$image"
    kind load image-archive --name "$KIND_CLUSTER" "$archive"
    rm -f "$archive"
  fi
}

main() {
  if [ "${1:-}" = --base ]; then make_base; return; fi
  local names=("$@") tag_ image
  [ ${#names[@]} -gt 0 ] || names=(query writer operator)
  for n in "${names[@]}"; do
    [ -n "${DOCKERFILE[$n]:-}" ] || die "unknown image $n (query, writer, operator)"
  done
  "$ENGINE" "${engine_args[@]}" image inspect "$BASE_IMAGE" >/dev/null 2>&1 \
    || "$ENGINE" "${engine_args[@]}" pull "$BASE_IMAGE" >/dev/null 2>&1 \
    || die "base image $BASE_IMAGE not available: run hack/images.sh --base (needs debootstrap) or set BASE_IMAGE"
  tag_="$(tag)"
  for n in "${names[@]}"; do
    image="${REPO_PREFIX}${n}:${tag_}"
    build_one "$n" "$image"
    if [ -n "$KIND_CLUSTER" ]; then kind_load "$image"; fi
  done
  "$ENGINE" "${engine_args[@]}" images --filter "reference=${REPO_PREFIX}*:${tag_}" >&2
}

main "$@"
