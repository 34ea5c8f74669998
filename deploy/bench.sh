#!/usr/bin/env bash
# deploy/bench.sh: the SubmitReferral load benchmark (docs/performance.md),
# measured beside pgbench running the same transaction and a bare tonic
# server, in one run on this machine.
#
#   bash deploy/bench.sh                                  # 8 and 32 clients, 10 s each
#   bash deploy/bench.sh --concurrency 4,16 --secs 20     # arguments go to the bench
#   BENCH_POOL=32 bash deploy/bench.sh                    # the service's pool size
#   bash deploy/bench.sh --rounds 5                       # five whole runs, ratios and their median
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

if [ -d .sqlx ]; then
    export SQLX_OFFLINE=true
fi

_cpm_say "machine: $(nproc) cores, $(free -h | awk '/^Mem:/ {print $2}') memory"
exec cargo bench -p integration-tests --bench intake_load -- "$@"
