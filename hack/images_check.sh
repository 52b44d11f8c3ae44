#!/usr/bin/env bash
# Prove the images on this machine (issue 6, "Proved here"): each image builds with
# podman from a locally made base tagged as the Dockerfiles' FROM, runs as a non-root
# numeric UID with a read-only root filesystem, and answers its health check on
# 127.0.0.1 with host networking, against real local servers.
#
#   hack/images_check.sh                 # everything; about 3-5 minutes warm, +1 min for a base
#   SKIP_BUILD=1 hack/images_check.sh    # reuse images already built with $TAG
#
# Steps: (1) apt-get install podman runc debootstrap when missing (root only);
# (2) hack/images.sh --base when the FROM image is not in local storage;
# (3) hack/images.sh builds query, writer, operator as ${REPO_PREFIX}NAME:$TAG;
# (4) hack/images_check.py starts PostgreSQL, Kafka and etcd + kube-apiserver on
#     127.0.0.1 (the project's launchers) and runs each image against them;
# (5) image sizes and one PASS/FAIL line per check; exit 1 on any failure.
# Every container started carries the label sensorlog.images-check=$RUN_ID and is
# removed on exit (also on Ctrl-C); the servers are stopped by the driver.
#
# Knobs: TAG (default images-check), REPO_PREFIX (sensorlog/), BASE_IMAGE,
# PODMAN_RUNTIME (runc), BUILD_TIMEOUT (1500 s), CHECK_TIMEOUT (600 s), READY_TIMEOUT
# (90 s per readiness wait), KEEP=1 keeps the servers' work directory (logs).
# Needs `make tools` (Kafka, etcd, kube-apiserver, kubectl) and PostgreSQL 15, and
# the repository's .venv (`make install`). Not part of `make test`.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export ENGINE=podman
export PODMAN_RUNTIME="${PODMAN_RUNTIME:-runc}"
export TAG="${TAG:-images-check}"
export REPO_PREFIX="${REPO_PREFIX:-sensorlog/}"
export BASE_IMAGE="${BASE_IMAGE:-docker.io/library/python:3.11-slim-bookworm}"
BUILD_TIMEOUT="${BUILD_TIMEOUT:-1500}"
CHECK_TIMEOUT="${CHECK_TIMEOUT:-600}"
READY_TIMEOUT="${READY_TIMEOUT:-90}"
RUN_ID="${RUN_ID:-$$}"
PY="$ROOT/.venv/bin/python"
IMAGES=(query writer operator)
LOGDIR="$(mktemp -d -t sensorlog-images-check-logs.XXXXXX)"

results=()
failed=0
pass() { results+=("PASS  $1"); printf 'PASS  %s\n' "$1"; }
fail() { results+=("FAIL  $1"); printf 'FAIL  %s\n' "$1"; failed=1; }
log() { printf 'images-check: %s\n' "$*" >&2; }
podman_() { podman --runtime "$PODMAN_RUNTIME" "$@"; }

# Long steps run under `timeout` in the background and are waited for, so a signal
# reaches the traps at once. `timeout` leads its own process group and passes a
# SIGTERM on to it (images.sh and podman build; the driver, whose finally-block then
# removes its containers and stops its servers).
bg_pid=""
tail_pid=""
bounded() { # SECONDS LOG COMMAND...: run COMMAND with a deadline, output to LOG; its status
  local secs="$1" out="$2" rc=0
  shift 2
  timeout --signal=TERM --kill-after=60 "$secs" "$@" >"$out" 2>&1 &
  bg_pid=$!
  wait "$bg_pid" || rc=$?
  bg_pid=""
  return "$rc"
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$bg_pid" ] && kill -0 "$bg_pid" 2>/dev/null; then
    log "stopping the running step (pid $bg_pid)"
    kill -TERM "$bg_pid" 2>/dev/null || true
    for _ in $(seq 1 90); do kill -0 "$bg_pid" 2>/dev/null || break; sleep 1; done
  fi
  [ -z "$tail_pid" ] || kill "$tail_pid" 2>/dev/null || true
  if command -v podman >/dev/null; then
    local ids
    ids="$(podman_ ps -aq --filter "label=sensorlog.images-check=$RUN_ID" 2>/dev/null || true)"
    if [ -n "$ids" ]; then
      log "removing leftover containers: $ids"
      # shellcheck disable=SC2086
      podman_ rm --force --time 5 $ids >/dev/null 2>&1 || true
    fi
  fi
  rm -rf "$LOGDIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# (1) podman, runc, debootstrap -----------------------------------------------------
need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    fail "tools: missing ${need[*]} (run as root or apt-get install --no-install-recommends ${need[*]} iptables)"
    exit 1
  fi
  log "apt-get install ${need[*]}"
  install=(apt-get install -y -q --no-install-recommends "${need[@]}" iptables)
  if bounded 600 "$LOGDIR/apt.log" "${install[@]}" \
    || { bounded 300 "$LOGDIR/apt-update.log" apt-get update -q \
      && bounded 600 "$LOGDIR/apt.log" "${install[@]}"; }; then
    pass "tools: installed ${need[*]}"
  else
    tail -20 "$LOGDIR/apt.log" >&2
    fail "tools: apt-get install ${need[*]} failed"
    exit 1
  fi
else
  pass "tools: podman $(podman --version | awk '{print $3}'), runc, debootstrap present"
fi
[ -x "$PY" ] || { fail "driver: $PY missing (make install)"; exit 1; }

# (2) the base image the Dockerfiles build FROM ------------------------------------
base_origin() { # "imported from tarball" = made here (hack/images.sh --base), not pulled
  podman_ history --format '{{.Comment}}' "$BASE_IMAGE" 2>/dev/null | grep -q 'imported from tarball' \
    && echo "made locally, imported from a debootstrap tarball" || echo "pulled"
}
if podman_ image exists "$BASE_IMAGE"; then
  pass "base: $BASE_IMAGE in local storage ($(base_origin))"
else
  log "no $BASE_IMAGE: hack/images.sh --base (debootstrap, about a minute)"
  if bounded 900 "$LOGDIR/base.log" hack/images.sh --base && podman_ image exists "$BASE_IMAGE"; then
    pass "base: $BASE_IMAGE made with debootstrap ($(base_origin))"
  else
    tail -20 "$LOGDIR/base.log" >&2
    fail "base: hack/images.sh --base failed"
    exit 1
  fi
fi

# (3) build the three images ----------------------------------------------------------
if [ -n "${SKIP_BUILD:-}" ]; then
  log "SKIP_BUILD set: using existing ${REPO_PREFIX}*:$TAG"
else
  for n in "${IMAGES[@]}"; do
    started=$SECONDS
    if bounded "$BUILD_TIMEOUT" "$LOGDIR/build-$n.log" hack/images.sh "$n"; then
      pass "build: ${REPO_PREFIX}$n:$TAG in $((SECONDS - started)) s"
    else
      tail -25 "$LOGDIR/build-$n.log" >&2
      fail "build: ${REPO_PREFIX}$n:$TAG (hack/images.sh $n failed)"
    fi
  done
fi
for n in "${IMAGES[@]}"; do
  podman_ image exists "${REPO_PREFIX}$n:$TAG" || { fail "image: ${REPO_PREFIX}$n:$TAG missing"; exit 1; }
done

# (4) run every image against real servers on 127.0.0.1 ---------------------------------
keep=()
[ -n "${KEEP:-}" ] && keep=(--keep)
: >"$LOGDIR/driver.log"
# Show the driver's lines as they come (stops by itself when this shell exits).
tail -n +1 -s 0.2 -f "$LOGDIR/driver.log" > >(grep --line-buffered -E '^(PASS|FAIL|images-check:)') &
tail_pid=$!
driver_rc=0
bounded "$CHECK_TIMEOUT" "$LOGDIR/driver.log" \
  "$PY" hack/images_check.py --engine podman --runtime "$PODMAN_RUNTIME" \
  --repo-prefix "$REPO_PREFIX" --tag "$TAG" --run-id "$RUN_ID" --timeout "$READY_TIMEOUT" \
  "${keep[@]}" || driver_rc=$?
sleep 1 # let tail show the last lines
kill "$tail_pid" 2>/dev/null || true
tail_pid=""
while IFS= read -r line; do results+=("$line"); done < <(grep -E '^(PASS|FAIL)' "$LOGDIR/driver.log")
if [ "$driver_rc" -ne 0 ]; then
  failed=1
  log "driver exited $driver_rc; its log:"
  grep -vE '^(PASS|FAIL)' "$LOGDIR/driver.log" | tail -40 >&2
fi

# (5) sizes and summary -------------------------------------------------------------------
echo
echo "Image sizes:"
size() { # IMAGE NOTE
  podman_ image inspect --format '{{.Size}}' "$1" \
    | awk -v i="$1" -v n="$2" '{printf "  %-48s %4.0f MB%s\n", i, $1 / 1e6, n}'
}
for n in "${IMAGES[@]}"; do size "${REPO_PREFIX}$n:$TAG" ""; done
size "$BASE_IMAGE" "  (base, the Dockerfiles' FROM)"
echo
echo "Summary:"
printf '  %s\n' "${results[@]}"
if [ "$failed" -ne 0 ]; then
  echo "images-check: FAIL"
  exit 1
fi
echo "images-check: PASS"
