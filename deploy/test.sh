#!/usr/bin/env bash
# deploy/test.sh: the whole test suite against a real PostgreSQL and RabbitMQ.
#
#   bash deploy/test.sh                  # clippy, .sqlx/ check, every crate's tests, buf lint
#   bash deploy/test.sh -- --nocapture   # arguments go to cargo test
#   CPM_SKIP_BUF=1 bash deploy/test.sh   # without buf lint
#   CPM_IMAGE_PROFILE=release bash deploy/test.sh   # the image's binary in release, as the Dockerfile
#
# PostgreSQL and RabbitMQ are reused when they already run, else started or
# installed (deploy/services.sh). Tests read CPM_TEST_DATABASE_URL (they
# create and drop databases of their own on that server) and
# CPM_TEST_AMQP_URL. buf runs through npx when npm is on the machine; a
# machine without npm skips it with a note. The Python example agency client
# (examples/python) is tested through a venv in .cpm/venv, exported to the
# tests as CPM_PYTHON; without python3 (or network for pip) that test is
# skipped with a note, never failed. The committed query metadata (.sqlx/)
# is checked against a scratch database migrated by `cpm migrate`, with the
# sqlx-cli of Cargo.lock's sqlx (installed with cargo when missing, about
# 3 minutes). Exits non-zero when anything fails.
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

# Makes `cargo sqlx` the sqlx-cli of the sqlx version in Cargo.lock,
# installing it when missing or another version.
cpm_sqlx_cli() {
    local version installed
    version=$(awk '$0 == "name = \"sqlx\"" { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
    if [ -z "$version" ]; then
        echo "sqlx-cli: no sqlx package in Cargo.lock" >&2
        return 1
    fi
    installed=$(cargo sqlx --version 2>/dev/null || true)
    if [ "${installed##* }" = "$version" ]; then
        return 0
    fi
    echo "sqlx-cli: installing $version (found: ${installed:-none}); this takes about 3 minutes"
    cargo install sqlx-cli --locked --version "$version" \
        --no-default-features --features postgres,rustls
}

# Regenerates the query metadata of every query! against a scratch database
# with every schema migrated, and compares it with the committed .sqlx/:
# fails when a query or a migration changed without `cargo sqlx prepare`,
# or when .sqlx/ holds a query no longer in the code. Drops the database.
cpm_sqlx_check() {
    local name="cpm_sqlx_check_$$" base url log ok=1
    cpm_sqlx_cli || return 1
    # CPM_TEST_DATABASE_URL names the postgres database; swap in our own.
    base=${CPM_TEST_DATABASE_URL%%\?*}
    url="${base%/*}/$name${CPM_TEST_DATABASE_URL:${#base}}"
    log=$(mktemp)
    # cpm migrate creates the database. Built with SQLX_OFFLINE, so a query
    # missing from .sqlx/ already stops it here.
    if ! CPM__DATABASE__URL="$url" cargo run --locked --quiet -p cpm -- migrate; then
        echo "sqlx: could not build cpm or migrate the scratch database $name" >&2
        ok=0
    elif ! cargo sqlx prepare --workspace --check --database-url "$url" \
        -- --all-targets --locked 2>&1 | tee "$log"; then
        ok=0
    elif grep -q 'unused queries' "$log"; then
        echo "sqlx: .sqlx/ holds queries the code no longer has" >&2
        ok=0
    fi
    cargo sqlx database drop -y --database-url "$url" >/dev/null 2>&1 ||
        echo "sqlx: could not drop the scratch database $name" >&2
    rm -f "$log"
    if [ "$ok" -eq 0 ]; then
        echo "sqlx: regenerate with: DATABASE_URL=<a database migrated by cpm migrate> cargo sqlx prepare --workspace -- --all-targets" >&2
        return 1
    fi
}

failed=()

step "cargo clippy --workspace --all-targets --locked -- -D warnings"
# clippy.toml forbids holding a tracing span's entered guard across an
# await (issue 9); the lint runs here so the test command enforces it.
if cargo clippy --workspace --all-targets --locked -- -D warnings; then
    echo "cargo clippy: passed"
else
    failed+=("cargo clippy")
fi

step "cargo sqlx prepare --workspace --check (.sqlx/ matches the queries)"
# prepare touches the workspace crates' sources so that every query! expands
# again: cargo test then rebuilds those crates even on an unchanged tree.
sqlx_started=$SECONDS
if cpm_sqlx_check; then
    echo "sqlx prepare --check: passed ($((SECONDS - sqlx_started)) s)"
else
    failed+=("sqlx prepare --check")
fi

step "cargo test --workspace --locked $*"
if cargo test --workspace --locked "$@"; then
    echo "cargo test: passed"
else
    failed+=("cargo test")
fi

step "the image's build steps (deploy/image-build.sh check)"
# No container engine in CI: the script proves deploy/Dockerfile builds with
# it step for step, then builds the binary as the image does (dev profile
# here unless CPM_IMAGE_PROFILE=release; docs/operations.md says why) into
# $CARGO_TARGET_DIR/image/cpm, which the chart's launch test runs.
image_out="${CARGO_TARGET_DIR:-target}/image"
if CPM_IMAGE_PROFILE="${CPM_IMAGE_PROFILE:-dev}" CPM_IMAGE_OUT="$image_out" bash deploy/image-build.sh check; then
    echo "image build steps: passed"
else
    failed+=("image build steps")
fi

step "Helm chart helm/cpm: lint, render, validate, launch what it renders; compose holds together"
# helm/cpm/tests/test_chart.py in a venv of its own (.cpm/chart-venv) with
# PyPI's helm-python-sdk (the Helm engine, no helm binary) and
# kubernetes-validate. Without python3 or pip's registry it is skipped with
# a note, as the Python example is.
cpm_chart_tests() {
    local venv=.cpm/chart-venv
    if ! command -v python3 >/dev/null 2>&1; then
        echo "Helm chart: not tested (no python3)"
        return 0
    fi
    if ! "$venv/bin/python" -c '' >/dev/null 2>&1 && ! python3 -m venv --clear "$venv" >/dev/null 2>&1; then
        echo "Helm chart: not tested (python3 -m venv failed; install python3-venv)"
        return 0
    fi
    if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r helm/cpm/tests/requirements.txt >/dev/null 2>&1; then
        echo "Helm chart: not tested (pip could not install helm/cpm/tests/requirements.txt; no network?)"
        return 0
    fi
    "$venv/bin/python" helm/cpm/tests/test_chart.py --cpm "$image_out/cpm" &&
        "$venv/bin/python" deploy/compose/test_compose.py
}
if cpm_chart_tests; then
    echo "Helm chart: passed"
else
    failed+=("Helm chart")
fi

step "cargo fuzz: the request validators and the event decoder, ${CPM_FUZZ_SECONDS:-20} s each"
# libFuzzer without a sanitizer (safe Rust: coverage is what finds panics),
# so stable Rust builds it. A crash fails the step and leaves its input in
# fuzz/artifacts/ to reproduce with `cargo fuzz run <target> <file>`.
cpm_fuzz() {
    if ! command -v cargo-fuzz >/dev/null 2>&1; then
        echo "cargo-fuzz: installing (about a minute)"
        cargo install cargo-fuzz --locked --version 0.13.2 || return 1
    fi
    local target log status
    for target in requests events; do
        log=$(mktemp)
        (cd fuzz && SQLX_OFFLINE=true SQLX_OFFLINE_DIR="$PWD/../.sqlx" \
            cargo fuzz run --dev --sanitizer none "$target" -- \
            -max_total_time="${CPM_FUZZ_SECONDS:-20}" -print_final_stats=1) >"$log" 2>&1
        status=$?
        tail -n 8 "$log"
        rm -f "$log"
        [ "$status" -eq 0 ] || return 1
    done
}
if cpm_fuzz; then
    echo "cargo fuzz: passed"
else
    failed+=("cargo fuzz")
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
