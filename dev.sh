#!/usr/bin/env bash
# troupe developer entry point.
#   ./dev.sh demo                 build, then run troupe-kv on port 6380 (redis-cli -p 6380)
#   ./dev.sh cluster              build, then run a nats-server and three troupe-kv nodes
#                                 sharing one keyspace on ports 7001-7003
#   ./dev.sh test [--sanitize S]  build, then run the whole test suite
#                                 (S: address,undefined or thread)
#   ./dev.sh build-release        optimized build in build-release/ (benchmarks)
#   ./dev.sh deps [PKG...]        install the build packages (and PKG...) only
# Each installs missing Debian packages first (apt-get; sudo when not root).
set -euo pipefail
cd "$(dirname "$0")"

PKGS=(build-essential cmake pkg-config libevent-dev libmsgpack-dev libcmocka-dev libnats-dev nats-server)

deps() {
  local missing=()
  for p in "${PKGS[@]}" "$@"; do
    grep -q "ok installed" <<<"$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" || missing+=("$p")
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
  cluster)
    deps redis-tools
    build build
    dir=$(mktemp -d /tmp/troupe-kv-cluster.XXXXXX)
    url=nats://127.0.0.1:7000
    pids=()
    # Each in its own session (setsid), so Ctrl-C reaches only this script,
    # which then stops the nodes once (each saves its shards) and the server.
    stop_all() {
      trap - INT TERM EXIT
      if [ ${#pids[@]} -gt 1 ]; then
        kill -TERM "${pids[@]:1}" 2>/dev/null || true
        wait "${pids[@]:1}" 2>/dev/null || true
      fi
      kill -TERM "${pids[0]}" 2>/dev/null || true
      wait "${pids[0]}" 2>/dev/null || true
      rm -rf "$dir"
    }
    trap stop_all EXIT
    trap 'exit 0' INT TERM
    setsid nats-server -a 127.0.0.1 -p 7000 -js -sd "$dir/js" >"$dir/nats.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
      (exec 3<>/dev/tcp/127.0.0.1/7000) 2>/dev/null && break
      sleep 0.05
    done
    start_node() { # start_node <name> <port>: its output prefixed with its name
      setsid build/examples/troupe-kv --port "$2" --dbfile "$dir/$1.tkv" --cluster $url \
        --node "$1" --nodes a,b,c > >(trap '' INT; sed -u "s/^/[$1] /") 2>&1 &
      pids+=($!)
    }
    start_node a 7001
    start_node b 7002
    start_node c 7003
    sleep 1
    echo "== troupe-kv cluster (examples/kv/cluster.c, docs/guide/14-nodes.md): nats-server -js"
    echo "   on 127.0.0.1:7000; nodes a, b, c on ports 7001-7003, each owning a third of the"
    echo "   keys, snapshots in $dir. In another terminal:"
    echo "     redis-cli -p 7001 set hello world      # any node reads and writes every key"
    echo "     redis-cli -p 7003 get hello"
    echo "     redis-cli -p 7002 dbsize"
    echo "     redis-cli -p 7003 save                 # node c saves its own keys"
    echo "     kill -9 ${pids[3]}    # node c: its keys answer -ERR ... unavailable, a's and b's still work"
    echo "     build/examples/troupe-kv --port 7003 --dbfile $dir/c.tkv --cluster $url --node c --nodes a,b,c"
    echo "                  # c is back with the keys it saved"
    echo "   Ctrl-C stops them all (each node saves its keys first)."
    wait "${pids[0]}"
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
  deps) # deps [extra Debian packages]: what the others install first
    deps "$@"
    ;;
  build-release)
    deps
    cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DTROUPE_TESTS=OFF >/dev/null
    cmake --build build-release -j"$(nproc)" >/dev/null
    ;;
  *)
    sed -n '2,9p' "$0" >&2
    exit 2
    ;;
esac
