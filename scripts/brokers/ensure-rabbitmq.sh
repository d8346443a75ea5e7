#!/usr/bin/env bash
# Make sure a RabbitMQ broker answers at 127.0.0.1:5672 (guest/guest) with the
# management HTTP API at 127.0.0.1:15672, installing/starting Debian's
# rabbitmq-server as needed (see shared/SPEC.md section 8). Idempotent: when
# the broker and the API already answer it returns in well under a second.
#
# Env:
#   BINDERY_TEST_RABBITMQ_URI  if it points somewhere other than
#                              127.0.0.1/localhost:5672, only check that it answers.
#   BINDERY_RABBITMQ_TIMEOUT   seconds to wait for startup (default 90).
set -euo pipefail

HOST=127.0.0.1
PORT=5672
MGMT_PORT=15672
TIMEOUT="${BINDERY_RABBITMQ_TIMEOUT:-90}"
CONF_DIR=/etc/rabbitmq
CONF="$CONF_DIR/rabbitmq.conf"
ENV_CONF="$CONF_DIR/rabbitmq-env.conf"
ME="ensure-rabbitmq"

die() { echo "$ME: ERROR: $*" >&2; exit 1; }

# TCP connect test without needing nc (bash's /dev/tcp).
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# The management API with guest/guest proves both the plugin and the
# credentials (guest may only log in from loopback, which is what we use).
mgmt_ok() {
    curl -fsS -m 3 -u guest:guest "http://$HOST:$MGMT_PORT/api/overview" >/dev/null 2>&1
}

# --- An externally provided broker: only check it, never start anything. ---
if [ -n "${BINDERY_TEST_RABBITMQ_URI:-}" ]; then
    re='^amqps?://([^@/]*@)?([^:/?]+)(:([0-9]+))?'
    if [[ "$BINDERY_TEST_RABBITMQ_URI" =~ $re ]]; then
        uhost="${BASH_REMATCH[2]}"; uport="${BASH_REMATCH[4]:-5672}"
        if ! { [ "$uhost" = 127.0.0.1 ] || [ "$uhost" = localhost ]; } || [ "$uport" != "$PORT" ]; then
            port_open "$uhost" "$uport" || die "BINDERY_TEST_RABBITMQ_URI=$BINDERY_TEST_RABBITMQ_URI: nothing answers at $uhost:$uport"
            echo "$ME: external broker $uhost:$uport answers (BINDERY_TEST_RABBITMQ_URI); nothing to do"
            exit 0
        fi
    else
        die "cannot parse BINDERY_TEST_RABBITMQ_URI=$BINDERY_TEST_RABBITMQ_URI"
    fi
fi

# --- Fast path: everything already up. ---
if port_open "$HOST" "$PORT" && mgmt_ok; then
    echo "$ME: already running at $HOST:$PORT (management at $HOST:$MGMT_PORT)"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "must run as root to install/start rabbitmq-server (Debian's scripts switch to the rabbitmq user themselves)"
command -v curl >/dev/null 2>&1 || die "curl is needed to check the management API (apt-get install -y curl)"

start_ts=$(date +%s)
join_actions() { local IFS=';' s; s="${actions[*]}"; echo "${s//;/, }"; }
deadline=$((start_ts + TIMEOUT))
actions=()

# Write our config only where nothing is configured yet, so an existing
# setup (e.g. listeners.tcp.local = ...) is kept as it is.
ensure_config() {
    mkdir -p "$CONF_DIR"
    touch "$CONF"
    if ! grep -Eq '^[[:space:]]*listeners\.tcp\.' "$CONF"; then
        echo "listeners.tcp.default = $HOST:$PORT" >>"$CONF"
    fi
    if ! grep -Eq '^[[:space:]]*management\.tcp\.ip' "$CONF"; then
        echo "management.tcp.ip = $HOST" >>"$CONF"
    fi
    # A fixed node name that resolves on any machine (the default
    # rabbit@<hostname> depends on /etc/hosts), epmd and distribution on
    # loopback only. Only on a fresh setup: the package keeps an existing file.
    if [ ! -s "$ENV_CONF" ] || ! grep -Eq '^[[:space:]]*(export[[:space:]]+)?(RABBITMQ_)?NODENAME=' "$ENV_CONF"; then
        local epmd=""
        grep -q 'ERL_EPMD_ADDRESS' "$ENV_CONF" 2>/dev/null || epmd="ERL_EPMD_ADDRESS=127.0.0.1"
        printf '%s\n' "NODENAME=rabbit@localhost" ${epmd:+"$epmd"} >>"$ENV_CONF"
    fi
}

# --- Install if missing. Config goes in first so the very first start (which
# the package's postinst may trigger where no policy-rc.d blocks it) already
# listens on loopback only. ---
if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
    ensure_config
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq rabbitmq-server >/dev/null
    actions+=("installed rabbitmq-server")
fi
ensure_config
PATH="$PATH:/usr/sbin"

# Node name and pid file exactly as Debian's rabbitmq-env computes them:
# PID_FILE defaults to $MNESIA_BASE/$NODENAME.pid, MNESIA_BASE to
# /var/lib/rabbitmq/mnesia, NODENAME to rabbit@<short hostname>.
# shellcheck source=/dev/null
read_env() { ( set +eu; [ -r "$ENV_CONF" ] && . "$ENV_CONF" >/dev/null 2>&1; eval "echo \"\${$1:-}\"" ); }
NODENAME="${RABBITMQ_NODENAME:-$(read_env NODENAME)}"
NODENAME="${NODENAME:-rabbit@$(hostname -s)}"
MNESIA_BASE="${RABBITMQ_MNESIA_BASE:-$(read_env MNESIA_BASE)}"
MNESIA_BASE="${MNESIA_BASE:-/var/lib/rabbitmq/mnesia}"
PID_FILE="${RABBITMQ_PID_FILE:-$(read_env PID_FILE)}"
PID_FILE="${PID_FILE:-$MNESIA_BASE/$NODENAME.pid}"

remaining() { local r=$((deadline - $(date +%s))); [ "$r" -gt 0 ] && echo "$r" || echo 1; }

fail_with_logs() {
    echo "$ME: ERROR: $*" >&2
    for f in /var/log/rabbitmq/startup_err /var/log/rabbitmq/startup_log "/var/log/rabbitmq/$NODENAME.log"; do
        [ -s "$f" ] && { echo "--- tail $f" >&2; tail -n 15 "$f" >&2; }
    done
    echo "$ME: start it by hand with: rabbitmq-server -detached && rabbitmqctl wait $PID_FILE" >&2
    exit 1
}

if ! port_open "$HOST" "$PORT"; then
    # The Erlang node may be up with the app stopped (rabbitmqctl stop_app, as
    # fault tests do): then start_app, since a second -detached would clash.
    # It may also still be booting (started by someone else a moment ago):
    # then just wait for the boot to finish.
    if timeout 20 rabbitmq-diagnostics -q -n "$NODENAME" ping >/dev/null 2>&1; then
        if timeout 20 rabbitmq-diagnostics -q -n "$NODENAME" is_booting 2>/dev/null | grep -q 'is booting'; then
            timeout "$(remaining)" rabbitmqctl -q -n "$NODENAME" await_startup --timeout "$(remaining)" >/dev/null 2>&1 \
                || fail_with_logs "node $NODENAME did not finish booting within ${TIMEOUT}s"
            actions+=("waited for node $NODENAME to finish booting")
        else
            timeout "$(remaining)" rabbitmqctl -q -n "$NODENAME" start_app >/dev/null 2>&1 \
                || fail_with_logs "rabbitmqctl start_app failed"
            actions+=("started the app on running node $NODENAME")
        fi
    else
        # Plugins can be enabled offline before the start, so the API comes
        # up together with the broker.
        rabbitmq-plugins -q enable --offline rabbitmq_management >/dev/null 2>&1 \
            || fail_with_logs "rabbitmq-plugins enable --offline rabbitmq_management failed"
        # No node runs, so a leftover pid file is stale and would mislead `wait`.
        rm -f "$PID_FILE"
        rabbitmq-server -detached >/dev/null 2>&1 || fail_with_logs "rabbitmq-server -detached failed"
        # `await_startup` right after -detached fails at once (the node is not
        # reachable yet); `wait <pid file>` waits for the file, then the app.
        timeout "$(remaining)" rabbitmqctl -q -n "$NODENAME" wait --timeout "$(remaining)" "$PID_FILE" >/dev/null 2>&1 \
            || fail_with_logs "node $NODENAME did not start within ${TIMEOUT}s (pid file $PID_FILE)"
        actions+=("started node $NODENAME")
    fi
    until port_open "$HOST" "$PORT"; do
        [ "$(date +%s)" -lt "$deadline" ] || fail_with_logs "nothing listens at $HOST:$PORT after ${TIMEOUT}s (check listeners.tcp.* in $CONF)"
        sleep 0.5
    done
fi

if ! mgmt_ok; then
    # Online enable on the running node (a no-op when it is already enabled
    # and only still starting its listener).
    if ! rabbitmq-plugins list -q -e rabbitmq_management 2>/dev/null | grep -q rabbitmq_management; then
        timeout "$(remaining)" rabbitmq-plugins -q -n "$NODENAME" enable rabbitmq_management >/dev/null 2>&1 \
            || fail_with_logs "could not enable rabbitmq_management"
        actions+=("enabled rabbitmq_management")
    fi
    until mgmt_ok; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            code=$(curl -s -o /dev/null -w '%{http_code}' -m 3 -u guest:guest "http://$HOST:$MGMT_PORT/api/overview" || true)
            [ "$code" = 401 ] && fail_with_logs "management API rejects guest/guest (HTTP 401): run rabbitmqctl add_user guest guest && rabbitmqctl set_user_tags guest administrator && rabbitmqctl set_permissions guest '.*' '.*' '.*'"
            fail_with_logs "management API at $HOST:$MGMT_PORT not answering after ${TIMEOUT}s (HTTP $code)"
        fi
        sleep 0.5
    done
fi

[ "${#actions[@]}" -gt 0 ] || actions+=("waited for it")
took=$(( $(date +%s) - start_ts ))
echo "$ME: $(join_actions); up at $HOST:$PORT (management at $HOST:$MGMT_PORT) after ${took}s"
