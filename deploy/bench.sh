#!/usr/bin/env bash
# deploy/bench.sh: the load benchmarks (docs/performance.md), each in one
# run on this machine beside a baseline measured in the same run.
#
#   bash deploy/bench.sh [intake] [args]   SubmitReferral beside pgbench and a bare tonic server
#   bash deploy/bench.sh e2e [args]        end to end, one process and five, rising rates; cpm import
#   bash deploy/bench.sh webhooks [args]   1,000 agencies' webhooks, 5% dead, 200 changes/s
#
#   bash deploy/bench.sh                                  # 8 and 32 clients, 10 s each
#   bash deploy/bench.sh --concurrency 4,16 --secs 20     # arguments go to the bench
#   BENCH_POOL=32 bash deploy/bench.sh                    # the service's pool size
#   bash deploy/bench.sh --rounds 5                       # five whole runs, ratios and their median
#   bash deploy/bench.sh e2e --rates 25,50,100 --secs 15 --modes one,five
#   bash deploy/bench.sh e2e --parts import --import-rows 1000000   # the full import
#   bash deploy/bench.sh webhooks --agencies 1000 --rate 200 --secs 60
#
# PostgreSQL and RabbitMQ are reused when they already run, else started or
# installed (deploy/services.sh). pgbench ships with the PostgreSQL server
# package; when it is missing it is installed with apt-get (postgresql-contrib
# pulls in the server package), unless CPM_NO_INSTALL is set. The bench
# creates its own database and broker namespace and removes both at the end.
# The markdown report goes to stdout; progress goes to stderr.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=deploy/services.sh
source deploy/services.sh

cpm_ensure_postgres
cpm_ensure_rabbitmq

bench=intake_load
case "${1:-}" in
    intake) shift ;;
    e2e) bench=e2e_load; shift ;;
    webhooks) bench=webhook_fanout; shift ;;
esac

if [ -d .sqlx ]; then
    export SQLX_OFFLINE=true
fi
_cpm_say "machine: $(nproc) cores, $(free -h | awk '/^Mem:/ {print $2}') memory, load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$bench" != intake_load ]; then
    exec cargo bench -p integration-tests --bench "$bench" -- "$@"
fi

# The newest pgbench under /usr/lib/postgresql, else one on PATH.
find_pgbench() {
    local candidate
    candidate=$(find /usr/lib/postgresql -path '*/bin/pgbench' 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$candidate" ]; then
        printf '%s\n' "$candidate"
    elif command -v pgbench >/dev/null 2>&1; then
        command -v pgbench
    else
        return 1
    fi
}

if [ -z "${PGBENCH:-}" ]; then
    if ! PGBENCH=$(find_pgbench); then
        _cpm_say "pgbench not found; installing postgresql-contrib"
        _cpm_apt_install postgresql-contrib
        PGBENCH=$(find_pgbench) || _cpm_fail "pgbench still not found after installing postgresql-contrib"
    fi
fi
export PGBENCH
_cpm_say "pgbench: $PGBENCH ($("$PGBENCH" --version))"

exec cargo bench -p integration-tests --bench intake_load -- "$@"
