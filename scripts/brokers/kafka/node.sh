#!/usr/bin/env bash
# One Apache Kafka node in KRaft combined mode (broker + controller in one
# JVM), from jars fetched from Maven Central with the pom.xml beside this
# script. Used by ensure-kafka.sh for the shared test broker and by the
# fault tests (tests/support/kafka.rs) for private brokers they kill and
# restart.
#
#   node.sh libs                      fetch the jars once; print their folder
#   node.sh run DIR PORT CTRL_PORT    configure DIR, format it on first use,
#                                     then exec the broker in the foreground
#                                     (the caller's pid becomes the JVM's)
#   node.sh ready PORT [SECONDS] [BROKERS]
#                                     wait until a Metadata request to
#                                     127.0.0.1:PORT names a broker (at
#                                     least BROKERS of them, default 1)
#   node.sh cluster-run DIR NODE_ID PORT CTRL_PORT VOTERS CLUSTER_ID
#                                     as run, for node NODE_ID of a cluster
#                                     whose controller quorum is VOTERS
#                                     (id@host:port,...; static voters),
#                                     formatted with CLUSTER_ID, internal
#                                     topics and new topics replicated 3
#                                     times with min.insync.replicas 2
#                                     (scripts/brokers/kafka-cluster.sh)
#   node.sh quorum CTRL_PORT          print the node id of the KRaft quorum
#                                     leader as 127.0.0.1:CTRL_PORT knows it
#                                     (DescribeQuorum); fail when there is none
#
# DIR holds server.properties, log4j2.properties, data/ (the log dirs) and
# server.log. A formatted DIR is reused as is, so a restart keeps topics,
# offsets and groups as a real restart does.
#
# Env:
#   BINDERY_KAFKA_HOME   jar cache (default /opt/bindery-kafka/4.4.0; its
#                        libs/ is reused when present)
#   BINDERY_KAFKA_HEAP   JVM heap, -Xmx (default 512m)
#   JAVA                 java binary (default: java on the PATH, Java 17+)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
KAFKA_VERSION=4.4.0
HOME_DIR="${BINDERY_KAFKA_HOME:-/opt/bindery-kafka/$KAFKA_VERSION}"
LIBS="$HOME_DIR/libs"
HEAP="${BINDERY_KAFKA_HEAP:-512m}"
ME="kafka-node"

die() { echo "$ME: ERROR: $*" >&2; exit 1; }

# Progress goes to stderr: `node.sh libs` prints only the folder on stdout.
say() { echo "$ME: $*" >&2; }

need_root_for() {
    [ "$(id -u)" -eq 0 ] || die "$1 is missing; install it (needs root): apt-get install -y $2"
}

ensure_java() {
    JAVA="${JAVA:-$(command -v java || true)}"
    if [ -z "$JAVA" ]; then
        need_root_for java openjdk-17-jre-headless
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null
        JAVA=$(command -v java) || die "openjdk-17-jre-headless installed but no java on the PATH"
        say "installed openjdk-17-jre-headless"
    fi
}

ensure_libs() {
    # The jar of the broker itself is the last one copied into place (the
    # folder is renamed into place whole), so its presence means complete.
    [ -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ] && return 0
    mkdir -p "$HOME_DIR"
    # Two callers at once (the test script and a fault test) must not both
    # download into the same folder.
    exec 9>"$HOME_DIR/.fetch.lock"
    flock 9
    if [ ! -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]; then
        if ! command -v mvn >/dev/null 2>&1; then
            need_root_for mvn maven
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq && apt-get install -y -qq --no-install-recommends maven >/dev/null
            say "installed maven"
        fi
        local started tmp
        started=$(date +%s)
        tmp="$HOME_DIR/libs.partial"
        rm -rf "$tmp"
        # runtime scope: what kafka.Kafka and StorageTool load, no test jars.
        # Maven's output only when it fails: it is long, and colour codes
        # leak into it even in batch mode.
        mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" dependency:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$tmp" >"$HOME_DIR/mvn.log" 2>&1 \
            || { cat "$HOME_DIR/mvn.log" >&2; die "mvn dependency:copy-dependencies of $HERE/pom.xml failed (is Maven Central reachable?)"; }
        [ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ] || die "mvn ran but $tmp has no kafka_2.13-$KAFKA_VERSION.jar"
        rm -rf "$LIBS"
        mv "$tmp" "$LIBS"
        say "fetched Apache Kafka $KAFKA_VERSION ($(find "$LIBS" -name '*.jar' | wc -l) jars) into $LIBS in $(( $(date +%s) - started ))s"
    fi
    exec 9>&-
}

# The replication lines of server.properties: one node (1 1) keeps every
# internal topic on one replica; a cluster (3 2) replicates internal and
# new topics 3 times and needs 2 in-sync replicas for an acks=all write.
replication_config() {
    local replicas="$1" min_isr="$2"
    if [ "$replicas" = 1 ]; then
        echo "# One node: every internal topic has one replica."
    else
        echo "# A cluster: internal and new topics on $replicas replicas; an acks=all"
        echo "# write needs $min_isr of them in sync."
        echo "default.replication.factor=$replicas"
    fi
    cat <<EOF
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$min_isr
min.insync.replicas=$min_isr
EOF
}

write_config() {
    local dir="$1" port="$2" ctrl="$3"
    # Cluster nodes (cluster-run) set these first; a single node keeps the
    # defaults.
    local node_id="${NODE_ID:-1}"
    local quorum="${QUORUM_LINE:-controller.quorum.bootstrap.servers=127.0.0.1:$ctrl}"
    local replicas="${REPLICAS:-1}" min_isr="${MIN_ISR:-1}"
    mkdir -p "$dir/data"
    # Written every time: the file is derived from the arguments, and an
    # older run's settings must not linger.
    cat >"$dir/server.properties" <<EOF
# Generated by scripts/brokers/kafka/node.sh: edit the script, not this file.
process.roles=broker,controller
node.id=$node_id
$quorum
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctrl
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
# Tests send to topics nobody declared (output bindings, dead letters).
auto.create.topics.enable=true
num.partitions=1
$(replication_config "$replicas" "$min_isr")
# Tests start groups all the time: the first join must not wait 3 s for
# more members.
group.initial.rebalance.delay.ms=0
# A test box: small segments, and nothing kept long.
log.segment.bytes=16777216
log.retention.hours=2
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
    cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/server.log
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

format_once() {
    local dir="$1"
    [ -f "$dir/data/meta.properties" ] && return 0
    local started cluster
    started=$(date +%s)
    # A Kafka Uuid is 16 random bytes in URL-safe base64 without padding
    # (what `StorageTool random-uuid` prints; one JVM start less). Kafka
    # refuses ids that start with '-'.
    cluster=-
    while [ "${cluster#-}" != "$cluster" ]; do
        cluster=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    "$JAVA" -Xmx256m -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$LIBS/*" \
        kafka.tools.StorageTool format --standalone --cluster-id "$cluster" \
        --config "$dir/server.properties" >"$dir/format.log" 2>&1 \
        || { cat "$dir/format.log" >&2; die "StorageTool format of $dir failed"; }
    say "formatted $dir/data (cluster $cluster, standalone controller) in $(( $(date +%s) - started ))s"
}

# A cluster node: formatted once with the cluster's fixed id, for the static
# quorum of controller.quorum.voters (no --standalone, no
# --initial-controllers: every node knows the voters from its config).
format_cluster_once() {
    local dir="$1" cluster="$2"
    [ -f "$dir/data/meta.properties" ] && return 0
    local started
    started=$(date +%s)
    "$JAVA" -Xmx256m -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$LIBS/*" \
        kafka.tools.StorageTool format --cluster-id "$cluster" \
        --config "$dir/server.properties" >"$dir/format.log" 2>&1 \
        || { cat "$dir/format.log" >&2; die "StorageTool format of $dir failed"; }
    say "formatted $dir/data (cluster $cluster, static controller quorum) in $(( $(date +%s) - started ))s"
}

# A Metadata request (API 3, v4: still served by Kafka 4, which dropped
# v0-v3) needs no client library. It proves more than an open port: the
# broker answers requests and knows itself as a live broker.
metadata_ok() {
    python3 - "$1" "${2:-1}" <<'EOF' 2>/dev/null
import socket, struct, sys
port = int(sys.argv[1])
least = int(sys.argv[2])
client = b"bindery-ready"
body = struct.pack(">i", 0) + b"\x00"  # no topics; allow_auto_topic_creation=false
header = struct.pack(">hhih", 3, 4, 1, len(client)) + client
request = header + body
with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
    s.sendall(struct.pack(">i", len(request)) + request)
    def read(n):
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data
    size = struct.unpack(">i", read(4))[0]
    response = read(size)
# correlation id, throttle time, then the brokers array.
_, _, brokers = struct.unpack(">iii", response[:12])
sys.exit(0 if brokers >= least else 1)
EOF
}

# DescribeQuorum (API 55, v0; flexible: compact strings and arrays, tagged
# fields) of the metadata log __cluster_metadata-0, sent to a controller
# listener. Prints the leader's node id; fails when the quorum has none
# (leader -1) or the controller does not answer.
quorum_leader() {
    python3 - "$1" <<'EOF' 2>/dev/null
import socket, struct, sys
port = int(sys.argv[1])
client = b"bindery-quorum"
topic = b"__cluster_metadata"
# Request header v2: api key, version, correlation id, client id (a
# nullable non-compact string), no tagged fields.
header = struct.pack(">hhih", 55, 0, 1, len(client)) + client + b"\x00"
# One topic (compact array of 1: length + 1), one partition 0, no tags.
body = b"\x02" + bytes([len(topic) + 1]) + topic + b"\x02" + struct.pack(">i", 0) + b"\x00" + b"\x00" + b"\x00"
request = header + body
with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
    s.settimeout(3)
    s.sendall(struct.pack(">i", len(request)) + request)
    def read(n):
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data
    size = struct.unpack(">i", read(4))[0]
    r = read(size)
def uvarint(at):
    value = shift = 0
    while True:
        b = r[at]; at += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, at
        shift += 7
# Response header v1: correlation id, tagged fields.
at = 4
_, at = uvarint(at)
error, = struct.unpack(">h", r[at:at + 2]); at += 2
if error:
    sys.exit(1)
topics, at = uvarint(at)
if topics < 2:
    sys.exit(1)
name_len, at = uvarint(at)
at += name_len - 1
partitions, at = uvarint(at)
if partitions < 2:
    sys.exit(1)
_, perror, leader = struct.unpack(">ihi", r[at:at + 10])
if perror or leader < 0:
    sys.exit(1)
print(leader)
EOF
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_ready() {
    local port="$1" timeout="${2:-60}" least="${3:-1}" deadline
    deadline=$(( $(date +%s) + timeout ))
    local have_python=1
    command -v python3 >/dev/null 2>&1 || have_python=0
    while :; do
        if [ "$have_python" = 1 ]; then
            metadata_ok "$port" "$least" && return 0
        else
            port_open "$port" && return 0
        fi
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# Execs the broker of DIR in the foreground: the caller's pid becomes the
# JVM's.
launch() {
    local dir="$1" port="$2" ctrl="$3"
    echo "=== $(date -Is) starting Apache Kafka $KAFKA_VERSION on 127.0.0.1:$port (controller $ctrl)" >>"$dir/server.log"
    # Startup flags: a test broker is started often and serves little,
    # so the JVM should be up fast and small; SerialGC and C1-only
    # compilation save seconds of CPU on a loaded 2-core machine.
    exec "$JAVA" -Xms64m -Xmx"$HEAP" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" \
        -cp "$LIBS/*" kafka.Kafka "$dir/server.properties"
}

cmd="${1:-}"
case "$cmd" in
    libs)
        ensure_libs
        echo "$LIBS"
        ;;
    run)
        [ $# -eq 4 ] || die "usage: node.sh run DIR PORT CONTROLLER_PORT"
        dir="$2"; port="$3"; ctrl="$4"
        ensure_java
        ensure_libs
        write_config "$dir" "$port" "$ctrl"
        format_once "$dir"
        launch "$dir" "$port" "$ctrl"
        ;;
    cluster-run)
        [ $# -eq 7 ] || die "usage: node.sh cluster-run DIR NODE_ID PORT CONTROLLER_PORT VOTERS CLUSTER_ID"
        dir="$2"; port="$4"; ctrl="$5"; voters="$6"; cluster="$7"
        [[ "$3" =~ ^[0-9]+$ ]] || die "cluster-run: NODE_ID must be a number, not '$3'"
        ensure_java
        ensure_libs
        NODE_ID="$3" QUORUM_LINE="controller.quorum.voters=$voters" REPLICAS=3 MIN_ISR=2 \
            write_config "$dir" "$port" "$ctrl"
        format_cluster_once "$dir" "$cluster"
        launch "$dir" "$port" "$ctrl"
        ;;
    quorum)
        [ $# -eq 2 ] || die "usage: node.sh quorum CONTROLLER_PORT"
        command -v python3 >/dev/null 2>&1 || die "node.sh quorum needs python3"
        quorum_leader "$2" || die "the controller at 127.0.0.1:$2 names no quorum leader"
        ;;
    ready)
        [ $# -ge 2 ] || die "usage: node.sh ready PORT [SECONDS] [BROKERS]"
        wait_ready "$2" "${3:-60}" "${4:-1}" || die "no Kafka broker answered a Metadata request naming ${4:-1} broker(s) at 127.0.0.1:$2 within ${3:-60}s"
        ;;
    *)
        die "usage: node.sh libs | run DIR PORT CONTROLLER_PORT | cluster-run DIR NODE_ID PORT CONTROLLER_PORT VOTERS CLUSTER_ID | ready PORT [SECONDS] [BROKERS] | quorum CONTROLLER_PORT"
        ;;
esac
