#!/usr/bin/env bash
# deploy/quickstart.sh: run the whole CPM platform on this machine and walk
# one referral through all five services, then replay a small synthetic
# programme and print the short evaluation report.
#
#   bash deploy/quickstart.sh                 # build, migrate, serve, demo, simulate, report, stop
#   bash deploy/quickstart.sh --keep-running  # ... and leave the server up
#   bash deploy/quickstart.sh --port 50061    # listen on another port
#
# PostgreSQL and RabbitMQ are reused when they already run, else started or
# installed (deploy/services.sh). The server runs in development mode: keys
# are generated in .cpm/dev-keys.toml, and requests may name a simulated time
# (dev.simulated_clock). Never put real client data in it.
set -euo pipefail

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

keep_running=0
port=50051
while [ $# -gt 0 ]; do
    case $1 in
        --keep-running) keep_running=1 ;;
        --port)
            [ $# -ge 2 ] || { echo "quickstart: --port needs a value" >&2; exit 2; }
            port=$2
            shift
            ;;
        --port=*) port=${1#--port=} ;;
        -h | --help) usage; exit 0 ;;
        *) echo "quickstart: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
case $port in
    '' | *[!0-9]*) echo "quickstart: --port must be a number" >&2; exit 2 ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
# shellcheck source=deploy/services.sh
source deploy/services.sh

step() { printf '\n==> %s\n' "$*"; }

server_pid=""
log=.cpm/serve.log

stop_server() {
    [ -n "$server_pid" ] || return 0
    if kill -0 "$server_pid" 2>/dev/null; then
        echo "stopping cpm serve (pid $server_pid) with SIGTERM"
        kill -TERM "$server_pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 30; i++)); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 1
        done
        if kill -0 "$server_pid" 2>/dev/null; then
            echo "cpm serve did not stop within 30 s; sending SIGKILL" >&2
            kill -KILL "$server_pid" 2>/dev/null || true
        fi
    fi
    local status=0
    wait "$server_pid" 2>/dev/null || status=$?
    echo "cpm serve exited with status $status"
    server_pid=""
}

on_exit() {
    local status=$?
    trap - EXIT
    if [ "$status" -ne 0 ] && [ -s "$log" ]; then
        echo >&2
        echo "quickstart failed (status $status); the last lines of $log:" >&2
        tail -n 40 "$log" >&2 || true
    fi
    if [ -n "$server_pid" ]; then
        if [ "$keep_running" -eq 1 ] && [ "$status" -eq 0 ] && kill -0 "$server_pid" 2>/dev/null; then
            echo "$server_pid" >.cpm/serve.pid
            echo
            echo "cpm serve keeps running (pid $server_pid) on 127.0.0.1:$port; log: $log"
            echo "stop it with:  kill $server_pid    (or: kill \$(cat .cpm/serve.pid))"
        else
            stop_server || true
        fi
    fi
    exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

step "PostgreSQL and RabbitMQ"
cpm_ensure_postgres
cpm_ensure_rabbitmq

step "Building the cpm binary (cargo build -p cpm)"
if [ -d .sqlx ]; then
    export SQLX_OFFLINE=true
fi
cargo build -p cpm
cpm="${CARGO_TARGET_DIR:-$root/target}/debug/cpm"
[ -x "$cpm" ] || { echo "quickstart: $cpm was not built" >&2; exit 1; }

# On a laptop, listen on loopback only: development keys are not for a network.
export CPM__GRPC__LISTEN="${CPM__GRPC__LISTEN:-127.0.0.1:$port}"
endpoint="http://127.0.0.1:$port"
mkdir -p .cpm
# The development clock lets `cpm simulate` replay the programme's four years
# in seconds (docs/simulate.md); production configurations refuse it.
export CPM__DEV__SIMULATED_CLOCK="${CPM__DEV__SIMULATED_CLOCK:-true}"

step "Migrating the database (cpm migrate)"
"$cpm" migrate

step "Starting the platform (cpm serve --target all), log in $log"
if _cpm_port_open 127.0.0.1 "$port"; then
    echo "quickstart: 127.0.0.1:$port is already in use (another cpm serve?); stop it or pass --port" >&2
    exit 1
fi
nohup "$cpm" serve --target all </dev/null >"$log" 2>&1 &
server_pid=$!
echo "cpm serve started (pid $server_pid)"

step "Waiting until it is healthy (cpm health --endpoint $endpoint)"
deadline=$((SECONDS + 60))
until "$cpm" health --endpoint "$endpoint" >/dev/null 2>&1; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        printf '\nquickstart: cpm serve exited during start-up\n' >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        printf '\nquickstart: cpm serve is not SERVING after 60 s\n' >&2
        "$cpm" health --endpoint "$endpoint" >&2 || true
        exit 1
    fi
    printf '.'
    sleep 1
done
"$cpm" health --endpoint "$endpoint"

step "Walking a referral through the five services (cpm demo)"
"$cpm" demo --endpoint "$endpoint"

step "Replaying a synthetic programme, a tenth of the evaluated one (cpm simulate --size 0.1)"
"$cpm" simulate --endpoint "$endpoint" --size 0.1

step "The evaluation report from the platform's data, short form (cpm report --short)"
"$cpm" report --endpoint "$endpoint" --short

if [ "$keep_running" -eq 0 ]; then
    step "Stopping the platform"
    stop_server
fi
echo
echo "Quick start finished. Server log: $log"
