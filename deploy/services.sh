# shellcheck shell=bash
#
# deploy/services.sh: make PostgreSQL and RabbitMQ available for the CPM
# platform on a Debian or Ubuntu machine, re-using servers that already run.
#
# Source it, then call the functions:
#
#     source deploy/services.sh
#     cpm_ensure_postgres   # exports CPM__DATABASE__URL and CPM_TEST_DATABASE_URL
#     cpm_ensure_rabbitmq   # exports CPM__AMQP__URL and CPM_TEST_AMQP_URL
#
# Rules it keeps:
# - A server that already answers on its standard port (PostgreSQL 5432,
#   RabbitMQ 5672 on 127.0.0.1) is used as it is: never stopped, restarted or
#   reconfigured.
# - A server that is installed but stopped is started; one that is missing is
#   installed with apt-get (as root, or through sudo) without prompts.
#   Set CPM_NO_INSTALL=1 to get an error instead of an installation.
# - Variables the caller has already set are left alone. When both URLs of a
#   server are set, that server is not looked for at all: the caller chose it.
# - Safe under `set -euo pipefail`; it changes no shell option of the caller.
#   Each function returns non-zero, after saying why, when it cannot succeed.

# ---------------------------------------------------------------- helpers ---

_cpm_say() { printf '[cpm] %s\n' "$*" >&2; }

_cpm_fail() {
    printf '[cpm] error: %s\n' "$*" >&2
    return 1
}

# Hides the password of a URL: postgres://cpm:secret@host/db -> postgres://cpm:***@host/db
_cpm_redact() { printf '%s' "$1" | sed -E 's#^([a-z]+://[^:/@]+):[^@]*@#\1:***@#'; }

# Runs a command as root: directly when root already, else through sudo
# (non-interactive, so a password prompt fails instead of hanging).
_cpm_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        _cpm_fail "need root for: $* (run as root, or install sudo)"
    fi
}

# True when a TCP port accepts connections, using bash's /dev/tcp.
_cpm_port_open() {
    local host=$1 port=$2
    timeout 3 bash -c "exec 3<>/dev/tcp/${host}/${port}" >/dev/null 2>&1
}

# Finds a command also in the sbin directories a non-root PATH may lack.
_cpm_find() {
    local name=$1 dir
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    for dir in /usr/sbin /sbin /usr/local/sbin; do
        if [ -x "$dir/$name" ]; then
            printf '%s\n' "$dir/$name"
            return 0
        fi
    done
    return 1
}

_CPM_APT_UPDATED=${_CPM_APT_UPDATED:-}

# Installs Debian packages without prompts (apt-get update once per shell).
_cpm_apt_install() {
    if [ -n "${CPM_NO_INSTALL:-}" ]; then
        _cpm_fail "CPM_NO_INSTALL is set, not installing: $*"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        _cpm_fail "apt-get not found; install $* yourself (this script knows Debian and Ubuntu)"
        return 1
    fi
    _cpm_say "installing $* with apt-get (this takes a minute)"
    if [ -z "$_CPM_APT_UPDATED" ]; then
        _cpm_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 ||
            { _cpm_fail "apt-get update failed"; return 1; }
        _CPM_APT_UPDATED=1
    fi
    _cpm_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >&2 ||
        { _cpm_fail "apt-get install $* failed"; return 1; }
}

# ------------------------------------------------------------- PostgreSQL ---

_cpm_postgres_ready() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h 127.0.0.1 -p 5432 -t 3 >/dev/null 2>&1
    else
        _cpm_port_open 127.0.0.1 5432
    fi
}

_cpm_postgres_wait() {
    local seconds=$1 i
    for ((i = 0; i < seconds; i++)); do
        _cpm_postgres_ready && return 0
        sleep 1
    done
    _cpm_postgres_ready
}

# Starts every stopped cluster named <version>/main under /etc/postgresql,
# creating main for the newest installed version when there is none.
_cpm_postgres_start() {
    local conf version started=0
    if ! compgen -G '/etc/postgresql/*/main' >/dev/null; then
        version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -n | tail -n 1)
        if [ -z "$version" ] || ! command -v pg_createcluster >/dev/null 2>&1; then
            _cpm_fail "PostgreSQL is installed but no server version was found under /usr/lib/postgresql"
            return 1
        fi
        _cpm_say "creating PostgreSQL cluster $version/main"
        _cpm_as_root pg_createcluster "$version" main >&2 ||
            { _cpm_fail "pg_createcluster $version main failed"; return 1; }
    fi
    for conf in /etc/postgresql/*/main; do
        version=$(basename "$(dirname "$conf")")
        # Exit status 0 means already running (perhaps on another port): leave it be.
        if _cpm_as_root pg_ctlcluster "$version" main status >/dev/null 2>&1; then
            continue
        fi
        _cpm_say "starting PostgreSQL $version/main"
        if _cpm_as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2; then
            started=1
        else
            _cpm_say "pg_ctlcluster $version main start failed (see /var/log/postgresql/postgresql-$version-main.log)"
        fi
    done
    [ "$started" -eq 1 ] || _cpm_postgres_ready
}

# Prints the user a psql connection to $1 runs as; fails when it cannot connect.
_cpm_psql_user() {
    PGCONNECT_TIMEOUT=5 psql -X -w -q -At -v ON_ERROR_STOP=1 "$1" -c 'select current_user' 2>/dev/null
}

# Runs SQL on the server as the postgres OS user (peer authentication).
_cpm_psql_as_postgres() {
    local sql=$1
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && su postgres -s /bin/sh -c 'psql -X -q -v ON_ERROR_STOP=1 -d postgres') <<<"$sql"
    elif command -v sudo >/dev/null 2>&1; then
        (cd / && sudo -n -u postgres psql -X -q -v ON_ERROR_STOP=1 -d postgres) <<<"$sql"
    else
        _cpm_fail "cannot act as the postgres user (not root and no sudo)"
    fi
}

# Makes sure PostgreSQL answers on 127.0.0.1:5432 and exports
# CPM__DATABASE__URL (database cpm) and CPM_TEST_DATABASE_URL (database
# postgres, from which tests create their own databases) unless already set.
cpm_ensure_postgres() {
    if [ -n "${CPM__DATABASE__URL:-}" ] && [ -n "${CPM_TEST_DATABASE_URL:-}" ]; then
        echo "[cpm] PostgreSQL: using the caller's CPM__DATABASE__URL=$(_cpm_redact "$CPM__DATABASE__URL") and CPM_TEST_DATABASE_URL"
        return 0
    fi

    local action
    if _cpm_postgres_ready; then
        action="reused the PostgreSQL already running on 127.0.0.1:5432"
    else
        if compgen -G '/etc/postgresql/*/main' >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
            action="started the installed PostgreSQL"
        else
            _cpm_apt_install postgresql postgresql-client || return 1
            action="installed and started PostgreSQL"
        fi
        _cpm_postgres_ready || _cpm_postgres_start || true
        if ! _cpm_postgres_wait 30; then
            _cpm_fail "PostgreSQL does not answer on 127.0.0.1:5432 (see /var/log/postgresql/); set CPM__DATABASE__URL and CPM_TEST_DATABASE_URL to use another server"
            return 1
        fi
    fi

    if ! command -v psql >/dev/null 2>&1; then
        _cpm_apt_install postgresql-client || return 1
    fi

    # A base URL (no database) that works for this user, trying the least
    # intrusive first: the current OS user, then the postgres role, then a
    # role of our own.
    local base="" user candidate
    for candidate in "postgres://localhost" "postgres://postgres@localhost"; do
        if user=$(_cpm_psql_user "$candidate/postgres") && [ -n "$user" ]; then
            if [[ "$user" =~ ^[A-Za-z0-9._-]+$ ]]; then
                base="postgres://${user}@localhost"
            else
                base=$candidate
            fi
            break
        fi
    done
    if [ -z "$base" ] && _cpm_psql_user "postgres://cpm:cpm@127.0.0.1/postgres" >/dev/null; then
        base="postgres://cpm:cpm@127.0.0.1"
        action="$action, logged in as role cpm"
    fi
    if [ -z "$base" ]; then
        _cpm_say "no password-less login to PostgreSQL; creating role cpm (password cpm, superuser so tests can create databases)"
        _cpm_psql_as_postgres "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cpm') THEN
    CREATE ROLE cpm LOGIN SUPERUSER PASSWORD 'cpm';
  END IF;
END \$\$;" >&2 || { _cpm_fail "could not create role cpm"; return 1; }
        if _cpm_psql_user "postgres://cpm:cpm@127.0.0.1/postgres" >/dev/null; then
            base="postgres://cpm:cpm@127.0.0.1"
            action="$action, created role cpm"
        else
            _cpm_fail "cannot log in to PostgreSQL as the current user, as postgres or as cpm:cpm; set CPM__DATABASE__URL and CPM_TEST_DATABASE_URL"
            return 1
        fi
    fi

    # The application's database; `cpm migrate` would create it too.
    local exists
    exists=$(PGCONNECT_TIMEOUT=5 psql -X -w -q -At "$base/postgres" \
        -c "select 1 from pg_database where datname = 'cpm'" 2>/dev/null || true)
    if [ "$exists" != "1" ]; then
        if PGCONNECT_TIMEOUT=5 psql -X -w -q "$base/postgres" -c 'CREATE DATABASE cpm' >/dev/null 2>&1; then
            action="$action, created database cpm"
        else
            _cpm_say "could not create database cpm now; \`cpm migrate\` will try again"
        fi
    fi

    if [ -z "${CPM__DATABASE__URL:-}" ]; then
        export CPM__DATABASE__URL="$base/cpm"
    fi
    if [ -z "${CPM_TEST_DATABASE_URL:-}" ]; then
        export CPM_TEST_DATABASE_URL="$base/postgres"
    fi
    echo "[cpm] PostgreSQL: $action; CPM__DATABASE__URL=$(_cpm_redact "$CPM__DATABASE__URL") CPM_TEST_DATABASE_URL=$(_cpm_redact "$CPM_TEST_DATABASE_URL")"
}

# --------------------------------------------------------------- RabbitMQ ---

# True when a RabbitMQ node answers its CLI (it may still be booting).
_cpm_rabbitmq_node_up() {
    local ctl
    ctl=$(_cpm_find rabbitmqctl) || return 1
    _cpm_as_root timeout 20 "$ctl" -q ping >/dev/null 2>&1
}

# Makes sure RabbitMQ answers on 127.0.0.1:5672 and exports CPM__AMQP__URL
# and CPM_TEST_AMQP_URL (guest on the default vhost) unless already set.
cpm_ensure_rabbitmq() {
    local url='amqp://guest:guest@127.0.0.1:5672/%2f'
    if [ -n "${CPM__AMQP__URL:-}" ] && [ -n "${CPM_TEST_AMQP_URL:-}" ]; then
        echo "[cpm] RabbitMQ: using the caller's CPM__AMQP__URL=$(_cpm_redact "$CPM__AMQP__URL") and CPM_TEST_AMQP_URL"
        return 0
    fi

    local action server
    if _cpm_port_open 127.0.0.1 5672; then
        action="reused the RabbitMQ already running on 127.0.0.1:5672"
    else
        if server=$(_cpm_find rabbitmq-server); then
            action="started the installed RabbitMQ"
        else
            _cpm_apt_install rabbitmq-server || return 1
            server=$(_cpm_find rabbitmq-server) ||
                { _cpm_fail "rabbitmq-server is not on this machine after installing it"; return 1; }
            action="installed and started RabbitMQ"
        fi
        # The package's own start, or a node still booting, must not be started twice.
        if _cpm_port_open 127.0.0.1 5672 || _cpm_rabbitmq_node_up; then
            _cpm_say "a RabbitMQ node is already up; waiting for it"
        else
            _cpm_say "starting RabbitMQ: $server -detached"
            _cpm_as_root "$server" -detached >&2 ||
                { _cpm_fail "rabbitmq-server -detached failed (see /var/log/rabbitmq/)"; return 1; }
        fi

        local deadline=$((SECONDS + 60))
        until _cpm_port_open 127.0.0.1 5672; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                _cpm_fail "RabbitMQ does not answer on 127.0.0.1:5672 after 60 s (see /var/log/rabbitmq/)"
                return 1
            fi
            sleep 1
        done
        local ctl remaining=$((deadline - SECONDS))
        [ "$remaining" -ge 5 ] || remaining=5
        if ctl=$(_cpm_find rabbitmqctl); then
            if ! _cpm_as_root timeout "$remaining" "$ctl" -q await_startup >/dev/null 2>&1; then
                _cpm_fail "RabbitMQ opened its port but did not finish starting (rabbitmqctl await_startup)"
                return 1
            fi
        fi
    fi

    if [ -z "${CPM__AMQP__URL:-}" ]; then
        export CPM__AMQP__URL="$url"
    fi
    if [ -z "${CPM_TEST_AMQP_URL:-}" ]; then
        export CPM_TEST_AMQP_URL="$url"
    fi
    echo "[cpm] RabbitMQ: $action; CPM__AMQP__URL=$(_cpm_redact "$CPM__AMQP__URL") CPM_TEST_AMQP_URL=$(_cpm_redact "$CPM_TEST_AMQP_URL")"
}
