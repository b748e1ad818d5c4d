#!/usr/bin/env bash
# troupe developer entry point.
#   ./dev.sh demo                 build, then run troupe-kv on port 6380 (redis-cli -p 6380)
#   ./dev.sh test [--sanitize S]  build, then run the whole test suite
#                                 (S: address,undefined or thread)
#   ./dev.sh build-release        optimized build in build-release/ (benchmarks)
# Both install missing Debian packages first (apt-get; sudo when not root).
set -euo pipefail
cd "$(dirname "$0")"

PKGS=(build-essential cmake pkg-config libevent-dev libmsgpack-dev libcmocka-dev libnats-dev nats-server)

deps() {
  local missing=()
  for p in "${PKGS[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "dev.sh: installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

build() { # build <dir> [cmake args...]
  local dir=$1; shift
  cmake -S . -B "$dir" -DTROUPE_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$(nproc)"
}

cmd=${1:-}
shift || true
case "$cmd" in
  demo)
    deps redis-tools
    build build
    echo "== troupe-kv, the demo service (examples/kv/): a Redis-compatible key-value"
    echo "   store on 127.0.0.1:6380. In another terminal:"
    echo "     redis-cli -p 6380 set hello world"
    echo "     redis-cli -p 6380 get hello"
    echo "     redis-benchmark -p 6380 -t ping,set,get,incr -n 100000 -q"
    echo "   Ctrl-C saves the keys to dump.tkv and stops it."
    exec build/examples/troupe-kv --port 6380
    ;;
  test)
    san=""
    if [ "${1:-}" = "--sanitize" ]; then san=${2:?"--sanitize needs address,undefined or thread"}; fi
    deps
    if [ -n "$san" ]; then
      dir="build-${san//,/-}"
      build "$dir" -DTROUPE_SANITIZE="$san" -DCMAKE_BUILD_TYPE=Debug
      export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    else
      dir=build
      build "$dir"
    fi
    ctest --test-dir "$dir" --output-on-failure -j2
    ;;
  build-release)
    deps
    cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DTROUPE_TESTS=OFF >/dev/null
    cmake --build build-release -j"$(nproc)" >/dev/null
    ;;
  *)
    sed -n '2,8p' "$0" >&2
    exit 2
    ;;
esac
