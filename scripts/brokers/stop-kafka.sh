#!/usr/bin/env bash
# Stop the test broker at 127.0.0.1:9092, whichever ensure-kafka.sh started:
# Apache Kafka (SIGTERM, a controlled shutdown; SIGKILL after the timeout)
# or Tansu (tansu/stop-tansu.sh). Waits until the port is closed.
# Idempotent: nothing running is not an error. Apache Kafka's data stays in
# its folder, so the next ensure-kafka.sh starts with the same topics.
#
# Env:
#   BINDERY_KAFKA_DIR           node folder (default /opt/bindery-kafka/run/9092)
#   BINDERY_KAFKA_STOP_TIMEOUT  seconds to wait before SIGKILL (default 30)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
HOST=127.0.0.1
PORT=9092
DIR="${BINDERY_KAFKA_DIR:-/opt/bindery-kafka/run/$PORT}"
PID_FILE="$DIR/kafka.pid"
TIMEOUT="${BINDERY_KAFKA_STOP_TIMEOUT:-30}"
ME="stop-kafka"

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
is_our_kafka() {
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q "kafka.Kafka $DIR/server.properties"
}
is_tansu() { [ "$(cat "/proc/$1/comm" 2>/dev/null)" = tansu ]; }

pid=""
if [ -s "$PID_FILE" ]; then
    p=$(cat "$PID_FILE")
    if [[ "$p" =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null && is_our_kafka "$p"; then
        pid="$p"
    fi
fi
listener=""
if command -v ss >/dev/null 2>&1; then
    listener=$(ss -Hltnp "sport = :$PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true)
fi
# Our Kafka without its pid file (deleted by hand): found by its listener,
# but only ever signal a JVM that runs our node folder.
if [ -z "$pid" ] && [ -n "$listener" ] && is_our_kafka "$listener"; then
    pid="$listener"
fi

if [ -z "$pid" ]; then
    rm -f "$PID_FILE"
    if { [ -n "$listener" ] && is_tansu "$listener"; } || [ -s /tmp/bindery-tansu.pid ]; then
        exec "$HERE/tansu/stop-tansu.sh"
    fi
    if port_open "$HOST" "$PORT"; then
        echo "$ME: ERROR: something that is not our Apache Kafka nor our Tansu listens at $HOST:$PORT; not touching it" >&2
        exit 1
    fi
    echo "$ME: no Kafka running; $HOST:$PORT is closed"
    exit 0
fi

start_ts=$(date +%s)
kill -TERM "$pid"
killed=0
deadline=$((start_ts + TIMEOUT))
while kill -0 "$pid" 2>/dev/null || port_open "$HOST" "$PORT"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        if kill -0 "$pid" 2>/dev/null && [ "$killed" = 0 ]; then
            echo "$ME: Apache Kafka pid $pid still running ${TIMEOUT}s after SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            killed=1
            deadline=$(( $(date +%s) + 5 ))
            continue
        fi
        echo "$ME: ERROR: Apache Kafka pid $pid still running or $HOST:$PORT still answers" >&2
        exit 1
    fi
    sleep 0.1
done
rm -f "$PID_FILE"
echo "$ME: stopped Apache Kafka pid $pid; $HOST:$PORT closed after $(( $(date +%s) - start_ts ))s (data kept in $DIR/data)"
