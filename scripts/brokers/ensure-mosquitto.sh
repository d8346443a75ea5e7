#!/usr/bin/env bash
# Make sure an MQTT broker (Mosquitto, MQTT 5) answers at 127.0.0.1:1883,
# installing Debian's `mosquitto` package and starting it with a config file of
# this script's own when needed (see shared/SPEC.md section 8). Idempotent:
# when something already answers it returns at once.
#
# The broker keeps persistent sessions and queued QoS 1 messages on disk
# (`persistence true`, store under /var/tmp/bindery-mosquitto), so the tests
# that kill it with SIGKILL and start it again find their sessions again.
#
# Env:
#   BINDERY_TEST_MQTT_URL       if it points somewhere other than
#                               127.0.0.1/localhost:1883, only check that it answers.
#   BINDERY_MOSQUITTO_TIMEOUT   seconds to wait for startup (default 30).
set -euo pipefail

HOST=127.0.0.1
PORT=1883
TIMEOUT="${BINDERY_MOSQUITTO_TIMEOUT:-30}"
RUN_DIR=/var/tmp/bindery-mosquitto
CONF="$RUN_DIR/mosquitto.conf"
ME="ensure-mosquitto"

die() { echo "$ME: ERROR: $*" >&2; exit 1; }

# TCP connect test without needing nc (bash's /dev/tcp).
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# --- An externally provided broker: only check it, never start anything. ---
if [ -n "${BINDERY_TEST_MQTT_URL:-}" ]; then
    re='^mqtts?://([^@/]*@)?([^:/?]+)(:([0-9]+))?'
    if [[ "$BINDERY_TEST_MQTT_URL" =~ $re ]]; then
        uhost="${BASH_REMATCH[2]}"; uport="${BASH_REMATCH[4]:-1883}"
        if ! { [ "$uhost" = 127.0.0.1 ] || [ "$uhost" = localhost ]; } || [ "$uport" != "$PORT" ]; then
            port_open "$uhost" "$uport" || die "BINDERY_TEST_MQTT_URL: nothing answers at $uhost:$uport"
            echo "$ME: external broker $uhost:$uport answers (BINDERY_TEST_MQTT_URL); nothing to do"
            exit 0
        fi
    else
        die "cannot parse BINDERY_TEST_MQTT_URL (expected mqtt://host:port)"
    fi
fi

if port_open "$HOST" "$PORT"; then
    echo "$ME: already running at $HOST:$PORT"
    exit 0
fi

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    [ "$(id -u)" -eq 0 ] || die "mosquitto is not installed and installing it needs root"
    echo "$ME: installing Debian's mosquitto"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends mosquitto >/dev/null 2>&1; then
        apt-get update -q >/dev/null
        apt-get install -y --no-install-recommends mosquitto >/dev/null
    fi
fi
MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"

mkdir -p "$RUN_DIR/data"
cat > "$CONF" <<CONF
# Written by scripts/brokers/ensure-mosquitto.sh; rewritten on every start.
listener $PORT $HOST
allow_anonymous true
persistence true
persistence_location $RUN_DIR/data/
autosave_interval 1
# Sessions and their queued messages may grow large in tests with backlogs.
max_queued_messages 100000
max_inflight_messages 0
log_dest file $RUN_DIR/mosquitto.log
pid_file $RUN_DIR/mosquitto.pid
CONF
if id mosquitto >/dev/null 2>&1; then chown -R mosquitto: "$RUN_DIR" 2>/dev/null || true; fi

echo "$ME: starting $MOSQUITTO -c $CONF"
"$MOSQUITTO" -c "$CONF" -d

deadline=$(( $(date +%s) + TIMEOUT ))
until port_open "$HOST" "$PORT"; do
    [ "$(date +%s)" -lt "$deadline" ] || die "mosquitto did not answer at $HOST:$PORT within ${TIMEOUT}s; see $RUN_DIR/mosquitto.log"
    sleep 0.2
done
echo "$ME: mosquitto answers at $HOST:$PORT (config $CONF, log $RUN_DIR/mosquitto.log)"
