#!/usr/bin/env bash
# Tokio peer of troupe's benchmarks: run.sh <bench> <threads> [variant]
#                                    run.sh variants <bench>
# Installs what is missing (Debian's cargo, librust-tokio-dev) with apt-get,
# builds once, offline, from /usr/share/cargo/registry, then runs the
# workload. stdout carries only the one result line; build chatter goes to
# stderr.
set -euo pipefail

if [ $# -ne 2 ] && [ $# -ne 3 ]; then
    echo "usage: $0 <pingpong|ring|skynet|fanin|ask|idle|big> <threads> [variant]" >&2
    echo "       $0 variants <bench>" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"   # .cargo/config.toml (the offline source replacement) is found from here

apt_updated=0
apt_install() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if [ "$apt_updated" -eq 0 ]; then
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        apt_updated=1
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        -o Dpkg::Use-Pty=0 --no-install-recommends "$@" >&2
}

# Tokio and its dependencies, as Debian packages them (tokio 1.24 on bookworm).
if ! ls -d /usr/share/cargo/registry/tokio-1.* >/dev/null 2>&1; then
    apt_install librust-tokio-dev
fi

# Any working cargo >= 1.75 will do (the code returns `impl Future` from
# traits): one on PATH, rustup's, or Debian's cargo-web (bookworm: 1.85 and
# later; Debian's plain `cargo` package is 1.65, too old).
find_cargo() {
    local c minor
    for c in "$(command -v cargo || true)" "${HOME:-/root}/.cargo/bin/cargo" /usr/bin/cargo; do
        if [ -z "$c" ] || [ ! -x "$c" ]; then continue; fi
        minor=$("$c" --version 2>/dev/null | sed -n 's/^cargo 1\.\([0-9]*\).*/\1/p')
        if [ -n "$minor" ] && [ "$minor" -ge 75 ]; then
            echo "$c"
            return 0
        fi
    done
    return 1
}
cargo="$(find_cargo || true)"
if [ -z "$cargo" ]; then
    apt_install cargo-web
    cargo=/usr/bin/cargo
fi

bin="$here/target/release/bench-tokio"
jobs="${JOBS:-2}"
build() {
    "$1" build --release --offline --quiet -j "$jobs" >&2
}
# Cargo caches the build: this is a no-op once it is up to date. A Cargo.lock
# left by another cargo version may be unreadable: drop it and resolve again.
if ! build "$cargo"; then
    echo "run.sh: build failed; retrying without Cargo.lock" >&2
    rm -f Cargo.lock
    build "$cargo"
fi

exec "$bin" "$@"
