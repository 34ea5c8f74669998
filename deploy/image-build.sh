#!/usr/bin/env bash
# deploy/image-build.sh: the build steps of the cpm image, run by the Dockerfile and by CI.
#
#   deploy/image-build.sh deps     # builder stage 1: dependencies only, from the manifests
#   deploy/image-build.sh binary   # builder stage 2: the cpm binary, stripped and checked, in $CPM_IMAGE_OUT
#   deploy/image-build.sh check    # CI: the Dockerfile runs exactly these steps, then `binary`
#
# The Dockerfile (deploy/Dockerfile) copies only the Cargo manifests and runs `deps`: stub
# sources stand in for the workspace's crates, so every dependency is compiled into a layer
# that stays cached until Cargo.lock or a manifest changes. It then copies the sources and
# runs `binary`. CI has no container engine, so deploy/test.sh runs `check`, which proves
# the Dockerfile still calls this script for each build step with the same environment, and
# then runs `binary` as the Dockerfile does, in the test's target directory.
#
# Environment (the Dockerfile sets the same values):
#   CPM_IMAGE_PROFILE  cargo profile: release (the image's; default) or dev (CI's quick check:
#                      a cold release build takes about 5 minutes on two cores)
#   CPM_IMAGE_OUT      where the binary is installed (default: $CARGO_TARGET_DIR/image)
#   SQLX_OFFLINE=true  compile-checked queries from the committed .sqlx/, no database
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=${CPM_IMAGE_PROFILE:-release}
target_dir=${CARGO_TARGET_DIR:-target}
out=${CPM_IMAGE_OUT:-$target_dir/image}
export SQLX_OFFLINE=true
# The one set of cargo arguments of every build step.
cargo_args=(build --locked --profile "$profile" -p cpm --bin cpm)
profile_dir=$profile
[ "$profile" = dev ] && profile_dir=debug

say() { printf '[image] %s\n' "$*"; }

# The workspace members, from the root manifest's `members` list.
members() {
    awk '/^members *= *\[/ { inside = 1; next } inside && /\]/ { exit } inside { gsub(/[",[:space:]]/, ""); if ($0 != "") print }' Cargo.toml
}

# Stub sources for every target a member's manifest declares or cargo would discover,
# so cargo resolves and builds the dependency graph without the real sources.
stub_sources() {
    local member bench
    for member in $(members); do
        mkdir -p "$member/src"
        [ -f "$member/src/lib.rs" ] || : >"$member/src/lib.rs"
        [ -f "$member/src/main.rs" ] || echo 'fn main() {}' >"$member/src/main.rs"
        [ -f "$member/build.rs" ] && echo 'fn main() {}' >"$member/build.rs"
        for bench in $(awk '/^\[\[bench\]\]/ { b = 1; next } b && /^name *=/ { gsub(/[" ]/, ""); sub(/name=/, ""); print; b = 0 }' "$member/Cargo.toml"); do
            mkdir -p "$member/benches"
            echo 'fn main() {}' >"$member/benches/$bench.rs"
        done
    done
    # cargo discovers src/bin/*.rs only when present; a declared [[bin]] path must exist.
    mkdir -p integration-tests/src/bin
}

deps() {
    if [ -f services/cpm/src/cli.rs ]; then
        echo "[image] deps runs on a tree of manifests only (the Dockerfile's first stage), not on the sources" >&2
        exit 2
    fi
    stub_sources
    say "dependencies: cargo ${cargo_args[*]}"
    cargo "${cargo_args[@]}"
    # The stubs' own artefacts must not pass for the real crates' in the next stage (COPY
    # keeps the sources' older mtimes): forget the workspace crates' fingerprints.
    local member name
    for member in $(members); do
        name=$(awk -F'"' '/^name *=/ { print $2; exit }' "$member/Cargo.toml")
        rm -rf "$target_dir/$profile_dir/.fingerprint/$name-"* "$target_dir/$profile_dir/build/$name-"*
    done
}

binary() {
    say "binary: cargo ${cargo_args[*]}"
    cargo "${cargo_args[@]}"
    mkdir -p "$out"
    install -m 0755 "$target_dir/$profile_dir/cpm" "$out/cpm"
    strip "$out/cpm"
    # The binary runs and knows its targets, as the non-root image user when we can
    # become one (the image runs it as 65532).
    local run=("$out/cpm")
    if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null 2>&1; then
        run=(setpriv --reuid 65532 --regid 65532 --clear-groups "$out/cpm")
    fi
    "${run[@]}" --version
    "${run[@]}" targets >/dev/null
    # Only the C runtime the distroless/cc base holds: no OpenSSL or other shared library.
    if command -v ldd >/dev/null 2>&1; then
        local unexpected
        unexpected=$(ldd "$out/cpm" | awk '{ print $1 }' | grep -Ev '^(linux-vdso\.so\.1|libgcc_s\.so\.1|libm\.so\.6|libc\.so\.6|/lib64/ld-linux-x86-64\.so\.2|/lib/ld-linux-aarch64\.so\.1|ld-linux-aarch64\.so\.1)$' || true)
        if [ -n "$unexpected" ]; then
            echo "[image] cpm links libraries the runtime image lacks: $unexpected" >&2
            exit 1
        fi
    fi
    say "$out/cpm: $(du -h "$out/cpm" | cut -f1), stripped, runs as uid 65532, links only the C runtime"
}

# The Dockerfile must build with this script, step for step: no RUN of cargo of its own.
check() {
    local dockerfile=deploy/Dockerfile
    grep -q '^RUN deploy/image-build.sh deps$' "$dockerfile" ||
        { echo "[image] $dockerfile does not run 'deploy/image-build.sh deps'" >&2; exit 1; }
    grep -q '^RUN deploy/image-build.sh binary$' "$dockerfile" ||
        { echo "[image] $dockerfile does not run 'deploy/image-build.sh binary'" >&2; exit 1; }
    if grep -E '^RUN ' "$dockerfile" | grep -v 'deploy/image-build.sh' | grep -q 'cargo'; then
        echo "[image] $dockerfile runs cargo outside deploy/image-build.sh" >&2
        exit 1
    fi
    grep -q '^ENV SQLX_OFFLINE=true' "$dockerfile" ||
        { echo "[image] $dockerfile does not build with SQLX_OFFLINE=true" >&2; exit 1; }
    grep -q '^USER 65532:65532$' "$dockerfile" ||
        { echo "[image] $dockerfile does not run as 65532" >&2; exit 1; }
    # Every member manifest the deps stage needs is copied before it.
    local member
    for member in $(members); do
        grep -q "^COPY $member/Cargo.toml $member/Cargo.toml$" "$dockerfile" ||
            { echo "[image] $dockerfile does not copy $member/Cargo.toml for the dependency layer" >&2; exit 1; }
    done
    say "$dockerfile runs this script's deps and binary steps, copies every member manifest, builds offline, runs as 65532"
    binary
}

case "${1:-}" in
    deps) deps ;;
    binary) binary ;;
    check) check ;;
    *) echo "usage: $0 deps|binary|check" >&2; exit 2 ;;
esac
