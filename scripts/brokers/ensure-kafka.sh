#!/usr/bin/env bash
# Make sure a Kafka broker answers at 127.0.0.1:9092 for the tests: Apache
# Kafka 4.4.0, one KRaft node (broker and controller in one JVM, controller
# on 127.0.0.1:9093), from jars fetched from Maven Central (kafka/pom.xml,
# cached in /opt/bindery-kafka/4.4.0/libs). It runs detached from the caller
# and keeps its data in /opt/bindery-kafka/run/9092 across restarts.
# Idempotent: when something already answers there it returns at once.
#
# Env:
#   BINDERY_TEST_KAFKA          "apache" (default) or "tansu": Tansu instead
#                               (tansu/ensure-tansu.sh; opt-in, see
#                               TANSU-NOTES.md).
#   BINDERY_TEST_KAFKA_BROKERS  bootstrap list; if its first entry is not
#                               127.0.0.1/localhost:9092, only check it answers.
#   BINDERY_KAFKA_DIR           node folder (default /opt/bindery-kafka/run/9092).
#   BINDERY_KAFKA_CONTROLLER_PORT  controller listener (default 9093).
#   BINDERY_KAFKA_HEAP          JVM heap (default 512m).
#   BINDERY_KAFKA_TIMEOUT       seconds to wait for the broker (default 90).
#   BINDERY_KAFKA_FRESH         1: start with empty storage (when it starts a
#                               broker). It also does so by itself once the
#                               storage holds more than 5000 partitions: every
#                               test makes new topics, none reads old ones,
#                               and each partition slows the start.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
HOST=127.0.0.1
PORT=9092
CTRL_PORT="${BINDERY_KAFKA_CONTROLLER_PORT:-9093}"
DIR="${BINDERY_KAFKA_DIR:-/opt/bindery-kafka/run/$PORT}"
TIMEOUT="${BINDERY_KAFKA_TIMEOUT:-90}"
PID_FILE="$DIR/kafka.pid"
OUT="$DIR/stdout.log"
ME="ensure-kafka"

die() { echo "$ME: ERROR: $*" >&2; exit 1; }

# TCP connect test without needing nc (bash's /dev/tcp).
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

case "${BINDERY_TEST_KAFKA:-apache}" in
    apache | kafka | "") ;;
    tansu) exec "$HERE/tansu/ensure-tansu.sh" ;;
    *) die "BINDERY_TEST_KAFKA=$BINDERY_TEST_KAFKA: use apache (the default) or tansu" ;;
esac

# --- An externally provided broker: only check it, never start anything. ---
if [ -n "${BINDERY_TEST_KAFKA_BROKERS:-}" ]; then
    first="${BINDERY_TEST_KAFKA_BROKERS%%,*}"
    first="${first#*://}"                       # PLAINTEXT://host:port -> host:port
    bhost="${first%:*}"; bport="${first##*:}"
    [ "$bhost" != "$first" ] || bport=9092      # no port given
    bhost="${bhost#[}"; bhost="${bhost%]}"      # [::1] -> ::1
    if ! { [ "$bhost" = 127.0.0.1 ] || [ "$bhost" = localhost ]; } || [ "$bport" != "$PORT" ]; then
        port_open "$bhost" "$bport" || die "BINDERY_TEST_KAFKA_BROKERS=$BINDERY_TEST_KAFKA_BROKERS: nothing answers at $bhost:$bport"
        echo "$ME: external broker $bhost:$bport answers (BINDERY_TEST_KAFKA_BROKERS); nothing to do"
        exit 0
    fi
fi

# --- Fast path: something (our Kafka, a Tansu, any Kafka) already answers. ---
if port_open "$HOST" "$PORT"; then
    echo "$ME: already answering at $HOST:$PORT"
    exit 0
fi

mkdir -p "$DIR"
# Two callers at once (agents, parallel CI steps) must start one broker.
exec 8>"$DIR/.ensure.lock"
flock 8
if port_open "$HOST" "$PORT"; then
    echo "$ME: already answering at $HOST:$PORT (started by a concurrent call)"
    exit 0
fi

start_ts=$(date +%s.%N)
elapsed() { awk -v s="$start_ts" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }

# The pid file names the JVM (node.sh execs it). Only a live java running
# this folder's server.properties counts as ours.
our_pid() {
    local pid
    [ -s "$PID_FILE" ] || return 1
    pid=$(cat "$PID_FILE")
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $DIR/server.properties" || return 1
    echo "$pid"
}

action="started"
if pid=$(our_pid); then
    # Ours, but not answering: a start still under way (JVM startup takes
    # seconds), or a shutdown. Wait for the first; a shutdown ends the
    # process and we start a new one below.
    action="waited for"
else
    # Jars first, in the foreground, so a failed download is reported here
    # and not in the broker's log.
    "$HERE/kafka/node.sh" libs >/dev/null
    partitions=0
    if [ -d "$DIR/data" ]; then
        partitions=$(find "$DIR/data" -mindepth 1 -maxdepth 1 -type d | wc -l)
    fi
    if [ "${BINDERY_KAFKA_FRESH:-0}" = 1 ] || [ "$partitions" -gt 5000 ]; then
        # node.sh formats an empty folder again.
        rm -rf "$DIR/data"
        echo "$ME: emptied $DIR/data ($partitions partitions; BINDERY_KAFKA_FRESH=${BINDERY_KAFKA_FRESH:-0})"
    fi
    rm -f "$PID_FILE"
    echo "=== $(date -Is) ensure-kafka.sh" >>"$OUT"
    # setsid + nohup: a session of its own, so the broker outlives this
    # script and the caller's terminal and job control. The inner shell
    # writes its pid, and node.sh execs the JVM in that same process. 8>&-:
    # the broker must not inherit the lock, or the next caller waits for it
    # as long as the broker runs.
    # shellcheck disable=SC2016
    setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
        "$HERE/kafka/node.sh" run "$DIR" "$PORT" "$CTRL_PORT" \
        </dev/null >>"$OUT" 2>&1 8>&- &
    disown || true
    for _ in $(seq 50); do [ -s "$PID_FILE" ] && break; sleep 0.1; done
    pid=$(cat "$PID_FILE" 2>/dev/null || true)
fi

fail() {
    echo "$ME: ERROR: $*" >&2
    echo "--- $OUT (last lines)" >&2
    tail -n 15 "$OUT" >&2 || true
    echo "--- $DIR/server.log (last lines)" >&2
    tail -n 15 "$DIR/server.log" >&2 2>/dev/null || true
    echo "$ME: run it in the foreground to see why: $HERE/kafka/node.sh run $DIR $PORT $CTRL_PORT" >&2
    exit 1
}

deadline=$(( $(date +%s) + TIMEOUT ))
until "$HERE/kafka/node.sh" ready "$PORT" 1 2>/dev/null; do
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        if [ "$action" = "waited for" ]; then
            # It was shutting down, not starting: start it afresh.
            echo "$ME: Apache Kafka pid $pid had just stopped; starting it again"
            exec 8>&-
            exec "$0" "$@"
        fi
        fail "Apache Kafka (pid ${pid:-?}) exited before it answered at $HOST:$PORT"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || fail "Apache Kafka pid $pid does not answer a Metadata request at $HOST:$PORT after ${TIMEOUT}s"
done

echo "$ME: $action Apache Kafka 4.4.0 pid $pid; answering Metadata at $HOST:$PORT after $(elapsed)s (controller $HOST:$CTRL_PORT, data $DIR/data, log $DIR/server.log)"
