#!/usr/bin/env bash
# A three-node Apache Kafka 4.4.0 cluster on loopback for the fault tests
# (tests/cluster_kafka.rs): three JVMs, each a KRaft node in combined mode
# (broker and controller), run by kafka/node.sh from the same jars as the
# shared test broker. Node N (1..3) serves clients at 127.0.0.1:1909(1+N),
# its controller listener at 127.0.0.1:1919(1+N); the controller quorum has
# the three nodes as static voters. New topics and the internal ones get 3
# replicas, min.insync.replicas is 2: an acks=all write survives one node.
#
#   kafka-cluster.sh start         start the nodes not running; wait until
#                                  each answers Metadata naming 3 brokers
#                                  and the controller quorum has a leader.
#                                  Running already: no-op, says so.
#   kafka-cluster.sh stop          stop every node (SIGTERM, SIGKILL after
#                                  BINDERY_KAFKA_CLUSTER_STOP_TIMEOUT s) and
#                                  wipe the cluster's data
#   kafka-cluster.sh status        one line per node; exit 0 only when all
#                                  three answer
#   kafka-cluster.sh kill N        SIGKILL node N's JVM (a crash); its data stays
#   kafka-cluster.sh start-node N  start node N again (on its data) and wait
#                                  until it answers Metadata naming 3 brokers
#
# start, status and start-node print the bootstrap list on stdout, last:
#   127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094
#
# Data: /var/tmp/bindery-kafka-cluster/node-N (server.properties, data/,
# server.log, stdout.log, kafka.pid); kept across kill and start-node,
# removed by stop.
#
# Env:
#   BINDERY_KAFKA_CLUSTER_DIR           default /var/tmp/bindery-kafka-cluster
#   BINDERY_KAFKA_CLUSTER_HEAP          heap of each JVM (default 384m)
#   BINDERY_KAFKA_CLUSTER_TIMEOUT       seconds start/start-node wait (default 180)
#   BINDERY_KAFKA_CLUSTER_STOP_TIMEOUT  seconds before SIGKILL on stop (default 15)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
NODE_SH="$HERE/kafka/node.sh"
ROOT="${BINDERY_KAFKA_CLUSTER_DIR:-/var/tmp/bindery-kafka-cluster}"
HEAP="${BINDERY_KAFKA_CLUSTER_HEAP:-384m}"
TIMEOUT="${BINDERY_KAFKA_CLUSTER_TIMEOUT:-180}"
STOP_TIMEOUT="${BINDERY_KAFKA_CLUSTER_STOP_TIMEOUT:-15}"
# Fixed, so every node formats for the same cluster: base64url of the 16
# bytes "bindery-cluster3" (a Kafka Uuid).
CLUSTER_ID="YmluZGVyeS1jbHVzdGVyMw"
NODES=(1 2 3)
VOTERS="1@127.0.0.1:19192,2@127.0.0.1:19193,3@127.0.0.1:19194"
BOOTSTRAP="127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
ME="kafka-cluster"

die() { echo "$ME: ERROR: $*" >&2; exit 1; }
say() { echo "$ME: $*" >&2; }

port_of() { echo $((19091 + $1)); }
ctrl_of() { echo $((19191 + $1)); }
dir_of() { echo "$ROOT/node-$1"; }

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

check_node() {
    [[ "${1:-}" =~ ^[1-3]$ ]] || die "node must be 1, 2 or 3, not '${1:-}'"
}

# The pid of node N, if it runs: node.sh while it formats, then the JVM it
# execs in the same process. Only such a process counts (a stale pid file
# may name anything by now).
node_pid() {
    local dir pid cmdline
    dir=$(dir_of "$1")
    [ -s "$dir/kafka.pid" ] || return 1
    pid=$(cat "$dir/kafka.pid")
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    case "$cmdline" in
        *"kafka.Kafka $dir/server.properties"* | *"node.sh cluster-run $dir "*) echo "$pid" ;;
        *) return 1 ;;
    esac
}

# Starts node N detached (its own session, so it outlives this script and
# the caller), unless it runs already.
spawn_node() {
    local n="$1" dir port ctrl
    dir=$(dir_of "$n"); port=$(port_of "$n"); ctrl=$(ctrl_of "$n")
    if node_pid "$n" >/dev/null; then
        return 0
    fi
    for p in "$port" "$ctrl"; do
        port_open "$p" && die "127.0.0.1:$p (node $n) is taken by a process that is not this cluster's node $n; not starting over it"
    done
    mkdir -p "$dir"
    rm -f "$dir/kafka.pid"
    echo "=== $(date -Is) kafka-cluster.sh: node $n" >>"$dir/stdout.log"
    # The inner shell writes its pid and node.sh execs the JVM in that
    # process: the pid file names the JVM.
    # shellcheck disable=SC2016
    BINDERY_KAFKA_HEAP="$HEAP" setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$dir/kafka.pid" \
        "$NODE_SH" cluster-run "$dir" "$n" "$port" "$ctrl" "$VOTERS" "$CLUSTER_ID" \
        </dev/null >>"$dir/stdout.log" 2>&1 &
    disown || true
    for _ in $(seq 50); do [ -s "$dir/kafka.pid" ] && break; sleep 0.1; done
    say "node $n starting (pid $(cat "$dir/kafka.pid" 2>/dev/null || echo '?'), 127.0.0.1:$port, controller $ctrl, data $dir)"
}

fail_node() {
    local n="$1" dir
    dir=$(dir_of "$n")
    echo "$ME: ERROR: $2" >&2
    echo "--- $dir/stdout.log (last lines)" >&2
    tail -n 15 "$dir/stdout.log" >&2 2>/dev/null || true
    echo "--- $dir/server.log (last lines)" >&2
    tail -n 15 "$dir/server.log" >&2 2>/dev/null || true
    exit 1
}

# Waits until node N answers a Metadata request naming all three brokers
# (each registered with the active controller, so the quorum has a leader).
wait_node() {
    local n="$1" deadline="$2" port pid
    port=$(port_of "$n")
    until "$NODE_SH" ready "$port" 1 3 2>/dev/null; do
        pid=$(node_pid "$n") || fail_node "$n" "node $n exited before it answered at 127.0.0.1:$port"
        [ "$(date +%s)" -lt "$deadline" ] \
            || fail_node "$n" "node $n (pid $pid) does not answer Metadata naming 3 brokers at 127.0.0.1:$port after ${TIMEOUT}s"
    done
}

# Waits until a controller names the quorum leader; prints its id.
wait_quorum() {
    local deadline="$1" n leader
    while :; do
        for n in "${NODES[@]}"; do
            if leader=$("$NODE_SH" quorum "$(ctrl_of "$n")" 2>/dev/null); then
                echo "$leader"
                return 0
            fi
        done
        [ "$(date +%s)" -lt "$deadline" ] || die "no controller names a quorum leader after ${TIMEOUT}s"
        sleep 0.2
    done
}

status_line() {
    local n="$1" pid port state
    port=$(port_of "$n")
    if pid=$(node_pid "$n"); then
        if "$NODE_SH" ready "$port" 1 1 2>/dev/null; then state="answering"; else state="not answering"; fi
        echo "node $n: pid $pid, 127.0.0.1:$port $state (controller $(ctrl_of "$n"), data $(dir_of "$n"))"
        [ "$state" = answering ]
    else
        echo "node $n: not running (127.0.0.1:$port)"
        return 1
    fi
}

cmd_start() {
    local started n running=0 leader
    started=$(date +%s)
    mkdir -p "$ROOT"
    # Two callers at once must start one cluster.
    exec 8>"$ROOT/.start.lock"
    flock 8
    for n in "${NODES[@]}"; do
        node_pid "$n" >/dev/null && running=$((running + 1))
    done
    # Jars first, in the foreground, so a failed download is reported here.
    "$NODE_SH" libs >/dev/null
    # All three at once: a node's broker waits for a quorum of controllers.
    for n in "${NODES[@]}"; do
        spawn_node "$n" 8>&-
    done
    local deadline=$((started + TIMEOUT))
    for n in "${NODES[@]}"; do
        wait_node "$n" "$deadline"
    done
    leader=$(wait_quorum "$deadline")
    exec 8>&-
    if [ "$running" = 3 ]; then
        say "already running: 3 nodes answer, quorum leader node $leader"
    else
        say "started $((3 - running)) node(s); 3 answer Metadata, quorum leader node $leader, after $(( $(date +%s) - started ))s"
    fi
    for n in "${NODES[@]}"; do status_line "$n" >&2 || true; done
    echo "$BOOTSTRAP"
}

cmd_start_node() {
    local n="$1" started
    started=$(date +%s)
    if node_pid "$n" >/dev/null; then
        say "node $n already running (pid $(node_pid "$n"))"
    else
        [ -d "$(dir_of "$n")/data" ] || say "node $n has no data yet: it formats afresh"
        spawn_node "$n"
    fi
    wait_node "$n" $((started + TIMEOUT))
    say "node $n answers Metadata naming 3 brokers after $(( $(date +%s) - started ))s"
    echo "$BOOTSTRAP"
}

cmd_kill() {
    local n="$1" pid port
    port=$(port_of "$n")
    if ! pid=$(node_pid "$n"); then
        say "node $n is not running; nothing to kill"
        return 0
    fi
    kill -KILL "$pid"
    # Gone, and its ports closed, before returning: the caller's clock of
    # the failover starts now.
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$pid" 2>/dev/null && die "node $n (pid $pid) survived SIGKILL for 5 s"
    for _ in $(seq 100); do
        port_open "$port" || break
        sleep 0.05
    done
    say "killed node $n (SIGKILL, pid $pid); its data stays in $(dir_of "$n")"
}

cmd_stop() {
    local n pid pids=() started
    started=$(date +%s)
    for n in "${NODES[@]}"; do
        if pid=$(node_pid "$n"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    local deadline=$((started + STOP_TIMEOUT)) alive
    while :; do
        alive=()
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive+=("$pid")
        done
        [ "${#alive[@]}" -eq 0 ] && break
        if [ "$(date +%s)" -ge "$deadline" ]; then
            # The last nodes of a cluster wait for a controller quorum that
            # is gone; their data is wiped anyway.
            say "SIGKILL to pid(s) ${alive[*]}, still running ${STOP_TIMEOUT}s after SIGTERM"
            kill -KILL "${alive[@]}" 2>/dev/null || true
            deadline=$(( $(date +%s) + 5 ))
            sleep 0.2
            continue
        fi
        sleep 0.1
    done
    for n in "${NODES[@]}"; do
        port_open "$(port_of "$n")" && die "127.0.0.1:$(port_of "$n") still answers after stop (not this cluster's node?)"
    done
    rm -rf "$ROOT"
    say "stopped ${#pids[@]} node(s) after $(( $(date +%s) - started ))s; removed $ROOT"
}

case "${1:-}" in
    start)
        cmd_start
        ;;
    stop)
        cmd_stop
        ;;
    status)
        ok=0
        for n in "${NODES[@]}"; do status_line "$n" || ok=1; done
        if leader=$("$NODE_SH" quorum 19192 2>/dev/null || "$NODE_SH" quorum 19193 2>/dev/null || "$NODE_SH" quorum 19194 2>/dev/null); then
            echo "controller quorum leader: node $leader"
        else
            echo "controller quorum: no leader known"
            ok=1
        fi
        echo "$BOOTSTRAP"
        exit "$ok"
        ;;
    kill)
        check_node "${2:-}"
        cmd_kill "$2"
        ;;
    start-node)
        check_node "${2:-}"
        cmd_start_node "$2"
        ;;
    *)
        die "usage: kafka-cluster.sh start | stop | status | kill N | start-node N (N = 1, 2, 3)"
        ;;
esac
