#!/usr/bin/env bash
# Start, stop or query a local Milvus 2.3.5 server (pip package `milvus`, command `milvus-server`)
# for the integration tests.
#
#   .ci/milvus-server.sh start  DATA_DIR   # starts it (or reuses a healthy one), prints its URI
#   .ci/milvus-server.sh status DATA_DIR   # prints the URI and exits 0 when healthy, else exits 1
#   .ci/milvus-server.sh stop   DATA_DIR   # kills the whole process group, waits until it is gone
#
# Why a process group: milvus-server is a Python launcher around the `milvus` binary and it ignores
# SIGTERM, so it is started with setsid and stopped with SIGKILL sent to the group.
# milvus-server silently moves every port to the next free one when the default is taken, so the
# real gRPC port is read back from the config it writes (DATA_DIR/configs/milvus.yaml) and the
# health port from the METRICS_PORT the launcher gives the binary.
#
# Environment: MILVUS_SERVER_BIN (default: $VIRTUAL_ENV/bin, then PATH, then the repo's .venv/bin),
# MILVUS_PROXY_PORT (first gRPC port to try, default 19530), MILVUS_START_TIMEOUT (seconds, default 120),
# COMMON_SESSION_TTL (seconds, default 10 here; Milvus reads common.* settings from the environment).
# Files kept in DATA_DIR: milvus-server.pid (process group id), milvus-server.log (launcher output).
set -euo pipefail

usage() { echo "usage: $0 start|stop|status DATA_DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1
data_dir=$(mkdir -p "$2" && cd "$2" && pwd)
pid_file="$data_dir/milvus-server.pid"
log_file="$data_dir/milvus-server.log"
config_file="$data_dir/configs/milvus.yaml"
start_timeout=${MILVUS_START_TIMEOUT:-120}

find_server_bin() {
    if [[ -n "${MILVUS_SERVER_BIN:-}" ]]; then echo "$MILVUS_SERVER_BIN"; return; fi
    local repo candidate
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/milvus-server" ]]; then echo "$VIRTUAL_ENV/bin/milvus-server"; return; fi
    if candidate=$(command -v milvus-server); then echo "$candidate"; return; fi
    if [[ -x "$repo/.venv/bin/milvus-server" ]]; then echo "$repo/.venv/bin/milvus-server"; return; fi
    echo "milvus-server not found (set MILVUS_SERVER_BIN or: pip install milvus==2.3.5)" >&2
    exit 1
}

# The process group id from the pid file, only if that group still has a live process.
running_pgid() {
    [[ -f "$pid_file" ]] || return 1
    local pgid
    pgid=$(cat "$pid_file")
    [[ "$pgid" =~ ^[0-9]+$ ]] || return 1
    pgrep -g "$pgid" >/dev/null 2>&1 || return 1
    echo "$pgid"
}

# gRPC port: the first `port:` line inside the top-level `proxy:` section of the written config.
grpc_port() {
    [[ -f "$config_file" ]] || return 1
    awk '/^proxy:/{inside=1; next} /^[^ #]/{inside=0} inside && $1=="port:"{print $2; exit}' "$config_file"
}

# Health port: METRICS_PORT in the environment of the `milvus` binary of our process group.
health_port() {
    local pgid=$1 pid port
    for pid in $(pgrep -g "$pgid" -x milvus 2>/dev/null); do
        port=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | sed -n 's/^METRICS_PORT=//p')
        if [[ -n "$port" ]]; then echo "$port"; return 0; fi
    done
    return 1
}

is_healthy() {
    local pgid=$1 port
    port=$(health_port "$pgid") || return 1
    [[ "$(curl -fsS --max-time 2 "http://127.0.0.1:$port/healthz" 2>/dev/null || true)" == *OK* ]]
}

print_uri() { echo "http://127.0.0.1:$(grpc_port)"; }

do_stop() {
    local pgid
    if pgid=$(running_pgid); then
        kill -KILL -- "-$pgid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            pgrep -g "$pgid" >/dev/null 2>&1 || break
            sleep 0.1
        done
        if pgrep -g "$pgid" >/dev/null 2>&1; then
            echo "milvus server group $pgid still alive after SIGKILL" >&2
            exit 1
        fi
    fi
    rm -f "$pid_file"
}

# Run the milvus-server launcher (a Python script) with SO_REUSEADDR on the sockets it probes
# ports with. Without it a restart right after a stop finds the old port in TIME_WAIT, moves the
# server to the next free port, and every client of the old one loses it for good; the milvus
# binary itself binds with SO_REUSEADDR, so only the probe stood in the way.
launch() {
    local bin=$1 shebang
    shift
    read -r shebang <"$bin"
    # shellcheck disable=SC2086  # the interpreter line may be "/usr/bin/env python3"
    exec ${shebang#\#!} -c '
import socket, sys
_bind = socket.socket.bind
def bind(sock, address):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return _bind(sock, address)
socket.socket.bind = bind
from milvus import main
sys.argv[0] = "milvus-server"
sys.exit(main())' "$@"
}

do_start() {
    local pgid bin deadline
    if pgid=$(running_pgid) && is_healthy "$pgid"; then
        print_uri
        return 0
    fi
    do_stop  # a stale or unhealthy group: start from scratch
    bin=$(find_server_bin)
    rm -f "$config_file"
    # A restarted server waits for the killed one's etcd session lease to expire (common.session.ttl,
    # 30 s by default) before it serves the collections again; 10 s keeps test restarts short.
    COMMON_SESSION_TTL=${COMMON_SESSION_TTL:-10} setsid bash -c "$(declare -f launch); launch \"\$@\"" launch "$bin" --data "$data_dir" \
        --proxy-port "${MILVUS_PROXY_PORT:-19530}" >"$log_file" 2>&1 </dev/null &
    echo $! >"$pid_file"  # setsid makes the launcher its group leader: pid == pgid
    pgid=$!
    deadline=$((SECONDS + start_timeout))
    until is_healthy "$pgid"; do
        if ! pgrep -g "$pgid" >/dev/null 2>&1; then
            echo "milvus server exited during startup; see $log_file and $data_dir/logs" >&2
            tail -n 20 "$log_file" >&2 || true
            rm -f "$pid_file"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "milvus server not healthy after ${start_timeout}s; stopping it (see $log_file)" >&2
            do_stop
            exit 1
        fi
        sleep 0.5
    done
    print_uri
}

do_status() {
    local pgid
    if pgid=$(running_pgid) && is_healthy "$pgid"; then
        print_uri
        return 0
    fi
    echo "milvus server in $data_dir is not running or not healthy" >&2
    return 1
}

case "$action" in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    *) usage ;;
esac
