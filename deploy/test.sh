#!/usr/bin/env bash
# deploy/test.sh: the whole test suite against a real PostgreSQL and RabbitMQ.
#
#   bash deploy/test.sh                  # clippy, every crate's tests, then buf lint
#   bash deploy/test.sh -- --nocapture   # arguments go to cargo test
#   CPM_SKIP_BUF=1 bash deploy/test.sh   # without buf lint
#
# PostgreSQL and RabbitMQ are reused when they already run, else started or
# installed (deploy/services.sh). Tests read CPM_TEST_DATABASE_URL (they
# create and drop databases of their own on that server) and
# CPM_TEST_AMQP_URL. buf runs through npx when npm is on the machine; a
# machine without npm skips it with a note. The Python example agency client
# (examples/python) is tested through a venv in .cpm/venv, exported to the
# tests as CPM_PYTHON; without python3 (or network for pip) that test is
# skipped with a note, never failed. Exits non-zero when anything fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=deploy/services.sh
source deploy/services.sh

step() { printf '\n==> %s\n' "$*"; }

step "PostgreSQL and RabbitMQ"
cpm_ensure_postgres
cpm_ensure_rabbitmq

if [ -d .sqlx ]; then
    # Compile-checked queries use the committed query metadata, no database.
    export SQLX_OFFLINE=true
fi

# Prepares .cpm/venv with the example client's requirements and exports
# CPM_PYTHON. Every way this can fail is a skip with a note: the Rust test
# that runs the example then says it did not run.
cpm_python_example_env() {
    local venv=.cpm/venv
    if [ -n "${CPM_PYTHON:-}" ]; then
        echo "Python example client: using CPM_PYTHON=$CPM_PYTHON as set by the caller"
        return 0
    fi
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        # Debian ships venv and ensurepip apart from python3.
        _cpm_apt_install python3 python3-venv || true
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        echo "Python example client: not tested (no python3, and it could not be installed)"
        return 0
    fi
    if ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
        if ! python3 -m venv --clear "$venv" >/dev/null 2>&1; then
            echo "Python example client: not tested (python3 -m venv failed; install python3-venv)"
            return 0
        fi
    fi
    if "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r examples/python/requirements.txt >/dev/null 2>&1; then
        CPM_PYTHON="$PWD/$venv/bin/python"
        export CPM_PYTHON
        echo "Python example client: tested with $CPM_PYTHON"
    else
        echo "Python example client: not tested (pip could not install examples/python/requirements.txt; no network?)"
    fi
}

step "Python for the example agency client"
cpm_python_example_env

failed=()

step "cargo clippy --workspace --all-targets --locked -- -D warnings"
# clippy.toml forbids holding a tracing span's entered guard across an
# await (issue 9); the lint runs here so the test command enforces it.
if cargo clippy --workspace --all-targets --locked -- -D warnings; then
    echo "cargo clippy: passed"
else
    failed+=("cargo clippy")
fi

step "cargo test --workspace --locked $*"
if cargo test --workspace --locked "$@"; then
    echo "cargo test: passed"
else
    failed+=("cargo test")
fi

step "buf lint proto"
if [ -n "${CPM_SKIP_BUF:-}" ]; then
    echo "buf lint: skipped (CPM_SKIP_BUF is set)"
else
    buf=()
    if command -v buf >/dev/null 2>&1; then
        buf=(buf)
    elif command -v npx >/dev/null 2>&1; then
        # Fetching buf is not linting it: a fetch that fails is a skip, not a failure.
        if npx --yes @bufbuild/buf --version >/dev/null 2>&1; then
            buf=(npx --yes @bufbuild/buf)
        else
            echo "buf lint: skipped (npx could not fetch @bufbuild/buf from the npm registry)"
        fi
    else
        echo "buf lint: skipped (no npm/npx on this machine; install Node.js and npm to lint the protos)"
    fi
    if [ ${#buf[@]} -gt 0 ]; then
        if "${buf[@]}" lint proto; then
            echo "buf lint: passed"
        else
            failed+=("buf lint")
        fi
    fi
fi

echo
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "All checks passed."
