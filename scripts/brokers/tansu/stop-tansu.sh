#!/usr/bin/env bash
# Stop the Tansu broker started by tansu/ensure-tansu.sh (stop-kafka.sh calls
# this when a Tansu runs). Tansu ignores SIGTERM, so it gets SIGINT; then we wait until
# 127.0.0.1:9092 is closed. With memory:// storage everything it held is gone.
# Idempotent: nothing running is not an error.
#
# Env: BINDERY_KAFKA_STOP_TIMEOUT  seconds to wait before SIGKILL (default 15).
set -euo pipefail

HOST=127.0.0.1
PORT=9092
PID_FILE=/tmp/bindery-tansu.pid
TIMEOUT="${BINDERY_KAFKA_STOP_TIMEOUT:-15}"
ME="stop-kafka(tansu)"

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
is_tansu() { [ "$(cat "/proc/$1/comm" 2>/dev/null)" = tansu ]; }

pid=""
if [ -s "$PID_FILE" ]; then
    p=$(cat "$PID_FILE")
    if [[ "$p" =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null && is_tansu "$p"; then
        pid="$p"
    fi
fi
# A tansu started by hand has no pid file: find the listener on the port, but
# only ever signal a process that really is tansu.
if [ -z "$pid" ] && command -v ss >/dev/null 2>&1; then
    p=$(ss -Hltnp "sport = :$PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true)
    if [ -n "$p" ] && is_tansu "$p"; then pid="$p"; fi
fi

if [ -z "$pid" ]; then
    rm -f "$PID_FILE"
    if port_open "$HOST" "$PORT"; then
        echo "$ME: ERROR: something that is not our tansu listens at $HOST:$PORT; not touching it" >&2
        exit 1
    fi
    echo "$ME: no tansu running; $HOST:$PORT is closed"
    exit 0
fi

start_ts=$(date +%s)
kill -INT "$pid"
killed=0
deadline=$((start_ts + TIMEOUT))
while kill -0 "$pid" 2>/dev/null || port_open "$HOST" "$PORT"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        if kill -0 "$pid" 2>/dev/null && [ "$killed" = 0 ]; then
            echo "$ME: tansu pid $pid ignored SIGINT for ${TIMEOUT}s; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            killed=1
            deadline=$(( $(date +%s) + 5 ))
            continue
        fi
        echo "$ME: ERROR: tansu pid $pid still running or $HOST:$PORT still answers" >&2
        exit 1
    fi
    sleep 0.1
done
rm -f "$PID_FILE"
echo "$ME: stopped tansu pid $pid; $HOST:$PORT closed after $(( $(date +%s) - start_ts ))s"
