#!/usr/bin/env bash
# Apache Kafka broker jars from Maven Central into .tools/kafka/libs/ (the
# published broker, run with `java -cp 'libs/*' kafka.Kafka`; no tarball download,
# since only package registries are reachable), plus a class-data-sharing archive
# that takes seconds off every broker start.
. "$(dirname "$0")/common.sh"
KAFKA_HOME="$TOOLS/kafka"
POM="$ROOT/hack/kafka/pom.xml"
# The pom and the JVM flags are part of the stamp: a new log4j binding or flag
# must refetch/re-warm even when KAFKA_VERSION stays the same.
STAMP="$KAFKA_VERSION-$(cat "$POM" "$ROOT/hack/kafka/jvm.options" | sha256sum | cut -c1-12)"
if have_stamp kafka "$STAMP" && [ -f "$KAFKA_HOME/libs/kafka_2.13-$KAFKA_VERSION.jar" ]; then
  exit 0
fi

command -v java >/dev/null || { log "java (17+) not found: apt-get install openjdk-17-jre-headless"; exit 1; }
command -v mvn >/dev/null || { log "mvn not found: apt-get install maven"; exit 1; }

log "fetching Apache Kafka $KAFKA_VERSION from Maven Central"
mkdir -p "$KAFKA_HOME"
# Copy into a fresh directory and swap it in, so a concurrent or interrupted run
# never leaves a half-filled libs/ (or jars of two versions) on the class path.
staging="$(mktemp -d "$KAFKA_HOME/libs.new.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
chmod 755 "$staging"
# Maven's output (colour codes even with -q) is only shown when it fails.
if ! mvn -q -B -f "$POM" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$staging" \
    >"$staging.log" 2>&1; then
  cat "$staging.log" >&2; rm -f "$staging.log"
  log "mvn could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION (see above)"; exit 1
fi
rm -f "$staging.log"
for jar in "kafka_2.13-$KAFKA_VERSION" "kafka-server-$KAFKA_VERSION" "kafka-storage-$KAFKA_VERSION" \
           "kafka-raft-$KAFKA_VERSION" "kafka-clients-$KAFKA_VERSION" log4j-core log4j-slf4j-impl; do
  compgen -G "$staging/$jar*.jar" >/dev/null || { log "missing $jar in the resolved jars"; exit 1; }
done
rm -rf "$KAFKA_HOME/libs.old"
[ ! -d "$KAFKA_HOME/libs" ] || mv "$KAFKA_HOME/libs" "$KAFKA_HOME/libs.old"
mv "$staging" "$KAFKA_HOME/libs"
rm -rf "$KAFKA_HOME/libs.old" "$KAFKA_HOME/kafka.jsa"

# Warm-up: start one throw-away broker and let the JVM dump every class it loaded
# into a CDS archive at exit. kafka.py passes it with -XX:SharedArchiveFile when it
# exists; without it (or if the JDK changes and the JVM rejects it) the broker
# just starts slower, so a failed warm-up is a warning, not an error.
warm="$(mktemp -d)"
trap 'rm -rf "$staging" "$warm"; [ -z "${pid:-}" ] || kill -9 "$pid" 2>/dev/null || true' EXIT
read -r port cport < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))')
cat > "$warm/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
controller.listener.names=CONTROLLER
log.dirs=$warm/data
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
PROPS
mapfile -t jvm < <(grep -v '^\s*\(#\|$\)' "$ROOT/hack/kafka/jvm.options")
log4j="-Dlog4j2.configurationFile=$ROOT/hack/kafka/log4j2.properties"
cp="$KAFKA_HOME/libs/*"
# A fixed cluster id (base64 of "sensorlog-warmup"): the cluster is thrown away.
java "${jvm[@]}" "$log4j" -cp "$cp" kafka.tools.StorageTool format \
  -t c2Vuc29ybG9nLXdhcm11cA \
  -c "$warm/server.properties" >"$warm/format.log" 2>&1 || { cat "$warm/format.log" >&2; exit 1; }
java "${jvm[@]}" "$log4j" -XX:ArchiveClassesAtExit="$KAFKA_HOME/kafka.jsa.tmp" \
  -cp "$cp" kafka.Kafka "$warm/server.properties" >"$warm/kafka.log" 2>&1 &
pid=$!
for _ in $(seq 1 1200); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  kill -TERM "$pid"; wait "$pid" || true
  if [ -s "$KAFKA_HOME/kafka.jsa.tmp" ]; then mv "$KAFKA_HOME/kafka.jsa.tmp" "$KAFKA_HOME/kafka.jsa"; fi
else
  log "warning: warm-up broker did not start, no CDS archive (starts will be slower):"
  tail -20 "$warm/kafka.log" >&2
  kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
fi
pid=
rm -f "$KAFKA_HOME/kafka.jsa.tmp"

write_stamp kafka "$STAMP"
log "Apache Kafka $KAFKA_VERSION ready in $KAFKA_HOME ($(ls "$KAFKA_HOME/libs" | wc -l) jars)"
