#!/usr/bin/env bash
# A three-node RabbitMQ cluster for the cluster fault tests
# (tests/cluster_rabbitmq.rs), beside the Debian package's own node
# rabbit@localhost on 5672, which it never touches.
#
#   rabbitmq-cluster.sh start          start what is not running, join the
#                                      cluster, print the AMQP URIs (idempotent)
#   rabbitmq-cluster.sh stop           stop the three nodes, forget the cluster
#                                      (data removed, logs kept)
#   rabbitmq-cluster.sh status         which nodes run, and the cluster's view
#   rabbitmq-cluster.sh kill N         SIGKILL node N's beam.smp (N = 1..3)
#   rabbitmq-cluster.sh start-node N   start node N again, wait until it rejoined
#
# Node N is rabbit-cN@localhost: AMQP on 127.0.0.1:568N, management API on
# 127.0.0.1:1568N (guest/guest), Erlang distribution on 2568N, data and logs
# under /var/tmp/bindery-rabbitmq-cluster/nodeN. Each node has its own
# rabbitmq.conf, rabbitmq-env.conf and enabled-plugins file there, so
# nothing in /etc/rabbitmq is read or written; the nodes run as the
# package's `rabbitmq` user with its Erlang cookie, so `rabbitmqctl -n
# rabbit-cN@localhost ...` works as for the package's node. epmd is shared.
#
# Env: BINDERY_RABBITMQ_CLUSTER_TIMEOUT  seconds to wait for a node (default 120).
set -euo pipefail

ME="rabbitmq-cluster"
BASE=/var/tmp/bindery-rabbitmq-cluster
TIMEOUT="${BINDERY_RABBITMQ_CLUSTER_TIMEOUT:-120}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RMQ_BIN=/usr/lib/rabbitmq/bin
RMQ_HOME=/var/lib/rabbitmq
NODES=(1 2 3)

die() { echo "$ME: ERROR: $*" >&2; exit 1; }
log() { echo "$ME: $*"; }

node_name() { echo "rabbit-c$1@localhost"; }
amqp_port() { echo $((5680 + $1)); }
mgmt_port() { echo $((15680 + $1)); }
dist_port() { echo $((25680 + $1)); }
node_dir() { echo "$BASE/node$1"; }
uri() { echo "amqp://guest:guest@127.0.0.1:$(amqp_port "$1")/%2f"; }

check_node_arg() {
    [[ "${1:-}" =~ ^[1-3]$ ]] || die "NODE must be 1, 2 or 3, not '${1:-}'"
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# rabbitmqctl & co. as the rabbitmq user (the package's cookie), bounded.
ctl() {
    local tool=$1 n=$2; shift 2
    timeout "${CTL_TIMEOUT:-60}" runuser -u rabbitmq -- env HOME="$RMQ_HOME" \
        "$RMQ_BIN/$tool" -q -n "$(node_name "$n")" "$@"
}

# The pid of node N's beam.smp, or nothing: the pid file the node writes,
# checked against the process's command line (pids are reused).
beam_pid() {
    local pid_file pid
    pid_file="$(node_dir "$1")/pid"
    [ -s "$pid_file" ] || return 0
    pid=$(tr -dc '0-9' <"$pid_file")
    [ -n "$pid" ] && [ -r "/proc/$pid/environ" ] || return 0
    # RabbitMQ 3.10 names the node at boot, not on the command line; the
    # environment this script gave the VM names it.
    if [ "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")" = beam.smp ] \
        && tr '\0' '\n' <"/proc/$pid/environ" | grep -qx "RABBITMQ_NODENAME=$(node_name "$1")"; then
        echo "$pid"
    fi
}

# Up = the VM runs, the rabbit app is booted and AMQP answers.
node_up() {
    [ -n "$(beam_pid "$1")" ] && port_open "$(amqp_port "$1")" \
        && CTL_TIMEOUT=20 ctl rabbitmq-diagnostics "$1" check_running >/dev/null 2>&1
}

write_config() {
    local n=$1 dir
    dir=$(node_dir "$n")
    mkdir -p "$dir/mnesia" "$dir/log"
    cat >"$dir/rabbitmq.conf" <<EOF
# Written by scripts/brokers/rabbitmq-cluster.sh for $(node_name "$n").
listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")
management.tcp.ip = 127.0.0.1
management.tcp.port = $(mgmt_port "$n")
# Quick detection of a killed peer (default 60 s).
net_ticktime = 10
log.file.level = info
log.console = false
EOF
    cat >"$dir/rabbitmq-env.conf" <<EOF
# Written by scripts/brokers/rabbitmq-cluster.sh; used instead of /etc/rabbitmq/rabbitmq-env.conf.
NODENAME=$(node_name "$n")
EOF
    echo "[rabbitmq_management]." >"$dir/enabled_plugins"
    chown -R rabbitmq:rabbitmq "$BASE"
}

# Starts node N's VM in the background (not waiting).
launch() {
    local n=$1 dir
    dir=$(node_dir "$n")
    write_config "$n"
    rm -f "$dir/pid"
    log "starting $(node_name "$n") (AMQP 127.0.0.1:$(amqp_port "$n"), management $(mgmt_port "$n"), dist $(dist_port "$n"))"
    # setsid: the node outlives this script and its caller's process group.
    runuser -u rabbitmq -- env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME="$RMQ_HOME" LANG=C.UTF-8 \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        RABBITMQ_NODENAME="$(node_name "$n")" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
        RABBITMQ_DIST_PORT="$(dist_port "$n")" \
        RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$dir/pid" \
        setsid "$RMQ_BIN/rabbitmq-server" >"$dir/log/startup_log" 2>"$dir/log/startup_err" </dev/null &
    disown || true
}

fail_with_logs() {
    local n=$1; shift
    echo "$ME: ERROR: $*" >&2
    local dir; dir=$(node_dir "$n")
    for f in "$dir/log/ctl.log" "$dir/log/startup_err" "$dir/log/startup_log" "$dir/log/$(node_name "$n").log"; do
        [ -s "$f" ] && { echo "--- tail $f" >&2; tail -n 20 "$f" >&2; }
    done
    exit 1
}

wait_up() {
    local n=$1 deadline=$(( $(date +%s) + TIMEOUT ))
    until node_up "$n"; do
        [ "$(date +%s)" -lt "$deadline" ] || fail_with_logs "$n" "$(node_name "$n") not up after ${TIMEOUT}s"
        sleep 1
    done
}

# The running members of the cluster as node N sees them, one a line.
running_members() {
    CTL_TIMEOUT=30 ctl rabbitmqctl "$1" cluster_status --formatter json 2>/dev/null \
        | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin).get("running_nodes", [])))' 2>/dev/null || true
}
disk_members() {
    CTL_TIMEOUT=30 ctl rabbitmqctl "$1" cluster_status --formatter json 2>/dev/null \
        | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin).get("disk_nodes", [])))' 2>/dev/null || true
}

# Joins node N (N > 1) to rabbit-c1 unless it is a member already.
ensure_joined() {
    local n=$1
    if disk_members "$n" | grep -qx "$(node_name 1)"; then
        return 0
    fi
    log "joining $(node_name "$n") to $(node_name 1)"
    # 3.10's CLI prints harmless errors while joining (tracked-connection
    # tables of nodes not running yet): kept in ctl.log, shown on failure.
    local out; out="$(node_dir "$n")/log/ctl.log"
    ctl rabbitmqctl "$n" stop_app >>"$out" 2>&1 || fail_with_logs "$n" "stop_app failed"
    ctl rabbitmqctl "$n" join_cluster "$(node_name 1)" >>"$out" 2>&1 || fail_with_logs "$n" "join_cluster failed"
    ctl rabbitmqctl "$n" start_app >>"$out" 2>&1 || fail_with_logs "$n" "start_app failed"
}

# Waits until node N is running and every node that runs lists it.
wait_rejoined() {
    local n=$1 deadline=$(( $(date +%s) + TIMEOUT )) m
    wait_up "$n"
    for m in "${NODES[@]}"; do
        [ "$m" = "$n" ] && continue
        [ -n "$(beam_pid "$m")" ] || continue
        until running_members "$m" | grep -qx "$(node_name "$n")"; do
            [ "$(date +%s)" -lt "$deadline" ] || fail_with_logs "$n" "$(node_name "$m") does not list $(node_name "$n") as running after ${TIMEOUT}s"
            sleep 1
        done
    done
}

ensure_installed() {
    if [ ! -x "$RMQ_BIN/rabbitmq-server" ]; then
        log "rabbitmq-server is missing; installing it with ensure-rabbitmq.sh"
        "$HERE/ensure-rabbitmq.sh"
    fi
    [ -x "$RMQ_BIN/rabbitmq-server" ] || die "no $RMQ_BIN/rabbitmq-server after ensure-rabbitmq.sh"
    [ "$(id -u)" -eq 0 ] || die "must run as root (the nodes run as the rabbitmq user)"
    command -v python3 >/dev/null 2>&1 || die "python3 is needed to read rabbitmqctl's JSON"
    [ -s "$RMQ_HOME/.erlang.cookie" ] || die "no Erlang cookie at $RMQ_HOME/.erlang.cookie (start the package's node once: ensure-rabbitmq.sh)"
}

print_uris() {
    local n uris=()
    for n in "${NODES[@]}"; do uris+=("$(uri "$n")"); done
    local IFS=,
    echo "${uris[*]}"
}

cmd_start() {
    ensure_installed
    local n started=() all_up=1
    for n in "${NODES[@]}"; do node_up "$n" || all_up=0; done
    if [ "$all_up" = 1 ] && [ "$(running_members 1 | grep -c '^rabbit-c[123]@localhost$')" = 3 ]; then
        log "already running: $(node_name 1), $(node_name 2), $(node_name 3) (management on 15681..15683)"
        print_uris
        return 0
    fi
    # Start every stopped node at once: nodes of an existing cluster wait
    # for each other while they boot.
    for n in "${NODES[@]}"; do
        if [ -z "$(beam_pid "$n")" ]; then
            launch "$n"
            started+=("$n")
        fi
    done
    for n in "${NODES[@]}"; do wait_up "$n"; done
    for n in 2 3; do ensure_joined "$n"; done
    for n in "${NODES[@]}"; do wait_rejoined "$n"; done
    log "cluster of $(node_name 1), $(node_name 2), $(node_name 3) up (started: ${started[*]:-none}); AMQP URIs:"
    print_uris
}

cmd_stop() {
    local n pid
    # Last in, first out is not needed: the data goes, so the next start
    # forms a fresh cluster.
    for n in 3 2 1; do
        pid=$(beam_pid "$n")
        if [ -n "$pid" ]; then
            log "stopping $(node_name "$n") (pid $pid)"
            CTL_TIMEOUT=60 ctl rabbitmqctl "$n" stop >/dev/null 2>&1 || true
            for _ in $(seq 1 30); do [ -d "/proc/$pid" ] || break; sleep 1; done
            if [ -d "/proc/$pid" ]; then
                log "$(node_name "$n") did not stop within 30 s; SIGKILL pid $pid"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        rm -rf "$(node_dir "$n")/mnesia" "$(node_dir "$n")/pid"
    done
    log "stopped (logs kept under $BASE/node*/log)"
}

cmd_status() {
    local n pid rc=0
    for n in "${NODES[@]}"; do
        pid=$(beam_pid "$n")
        if node_up "$n"; then
            echo "$(node_name "$n"): up, pid $pid, $(uri "$n" | sed 's/guest:guest/guest:****/')"
        elif [ -n "$pid" ]; then
            echo "$(node_name "$n"): VM running (pid $pid), broker not up"; rc=1
        else
            echo "$(node_name "$n"): down"; rc=1
        fi
    done
    for n in "${NODES[@]}"; do
        if node_up "$n"; then
            echo "running members seen by $(node_name "$n"): $(running_members "$n" | tr '\n' ' ')"
            break
        fi
    done
    return "$rc"
}

cmd_kill() {
    check_node_arg "${1:-}"
    local n=$1 pid
    pid=$(beam_pid "$n")
    [ -n "$pid" ] || die "$(node_name "$n") is not running"
    kill -KILL "$pid"
    for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    log "killed $(node_name "$n") (SIGKILL to beam.smp pid $pid)"
}

cmd_start_node() {
    check_node_arg "${1:-}"
    ensure_installed
    local n=$1
    [ -d "$(node_dir "$n")/mnesia" ] || die "$(node_name "$n") has no data; run '$0 start' first"
    if node_up "$n"; then
        log "$(node_name "$n") is running already"
    else
        [ -z "$(beam_pid "$n")" ] || die "$(node_name "$n") VM runs (pid $(beam_pid "$n")) but the broker is not up"
        launch "$n"
    fi
    wait_rejoined "$n"
    log "$(node_name "$n") up and in the cluster: $(uri "$n" | sed 's/guest:guest/guest:****/')"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    kill) cmd_kill "${2:-}" ;;
    start-node) cmd_start_node "${2:-}" ;;
    *) echo "usage: $0 {start|stop|status|kill NODE|start-node NODE}  (NODE = 1..3)" >&2; exit 2 ;;
esac
