#!/usr/bin/env bash
# Make sure a Redis server answers PING at 127.0.0.1:6379, installing and
# starting Debian's redis-server as needed (see shared/SPEC.md section 8).
# Idempotent: when the server already answers it returns at once.
#
# Env:
#   BINDERY_TEST_REDIS_URL   if it points somewhere other than
#                            127.0.0.1/localhost:6379, only check that it answers.
#   BINDERY_REDIS_TIMEOUT    seconds to wait for startup (default 30).
set -euo pipefail

HOST=127.0.0.1
PORT=6379
TIMEOUT="${BINDERY_REDIS_TIMEOUT:-30}"
ME="ensure-redis"

die() { echo "$ME: ERROR: $*" >&2; exit 1; }

pong() { redis-cli -h "$1" -p "$2" PING 2>/dev/null | grep -q PONG; }
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# --- An externally provided server: only check it, never start anything. ---
if [ -n "${BINDERY_TEST_REDIS_URL:-}" ]; then
    re='^rediss?://([^@/]*@)?([^:/?]+)(:([0-9]+))?'
    if [[ "$BINDERY_TEST_REDIS_URL" =~ $re ]]; then
        uhost="${BASH_REMATCH[2]}"; uport="${BASH_REMATCH[4]:-6379}"
        if ! { [ "$uhost" = 127.0.0.1 ] || [ "$uhost" = localhost ]; } || [ "$uport" != "$PORT" ]; then
            # The URL may hold a password: never print it.
            port_open "$uhost" "$uport" || die "BINDERY_TEST_REDIS_URL: nothing answers at $uhost:$uport"
            echo "$ME: external server $uhost:$uport answers (BINDERY_TEST_REDIS_URL); nothing to do"
            exit 0
        fi
    else
        die "cannot parse BINDERY_TEST_REDIS_URL (expected redis://[user:password@]host[:port])"
    fi
fi

# --- Fast path: already up. ---
if command -v redis-cli >/dev/null 2>&1 && pong "$HOST" "$PORT"; then
    echo "$ME: already running at $HOST:$PORT"
    exit 0
fi

if ! command -v redis-server >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || die "redis-server is missing and installing it needs root (apt-get install -y redis-server)"
    echo "$ME: installing redis-server from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends redis-server >/dev/null 2>&1; then
        apt-get update -qq
        apt-get install -y --no-install-recommends redis-server >/dev/null
    fi
fi

echo "$ME: starting redis-server on $HOST:$PORT"
# Daemonized, loopback only, no protected-mode surprises; persistence stays
# at the package's defaults.
redis-server --bind "$HOST" --port "$PORT" --daemonize yes \
    --logfile /tmp/bindery-redis.log --dir /tmp

deadline=$(( $(date +%s) + TIMEOUT ))
until pong "$HOST" "$PORT"; do
    [ "$(date +%s)" -lt "$deadline" ] || die "redis-server did not answer PING within ${TIMEOUT}s (log: /tmp/bindery-redis.log)"
    sleep 0.2
done
echo "$ME: redis-server answers at $HOST:$PORT ($(redis-cli -h "$HOST" -p "$PORT" INFO server | grep -m1 redis_version | tr -d '\r'))"
