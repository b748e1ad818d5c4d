#!/usr/bin/env bash
# troupe-kv against redis-server, same redis-benchmark parameters (not part
# of ctest). Needs redis-tools and redis-server (Debian). Usage:
#   bench/kv.sh [build-dir] [requests] [clients]
# Prints requests/s side by side and the ratio troupe-kv / redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
N=${2:-200000}
C=${3:-50}
KV_PORT=6390
REDIS_PORT=6391
for b in redis-benchmark redis-server; do
  command -v $b >/dev/null || { echo "bench/kv.sh: $b not installed (apt-get install redis-tools redis-server)" >&2; exit 2; }
done
[ -x "$BUILD/examples/troupe-kv" ] || { cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null; cmake --build "$BUILD" -j"$(nproc)" --target troupe-kv >/dev/null; }

"$BUILD/examples/troupe-kv" --port $KV_PORT --no-persist --quiet >/dev/null &
KV=$!
redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no --daemonize no >/dev/null &
RS=$!
trap 'kill $KV $RS 2>/dev/null; wait 2>/dev/null' EXIT
sleep 0.5

rps() { # port pipeline test -> requests per second
  redis-benchmark -p "$1" -t "$3" -n "$N" -c "$C" -P "$2" -q 2>/dev/null |
    tr '\r' '\n' | grep "requests per second" | tail -1 |
    sed -E 's/^[^:]*: ([0-9.]+) requests per second.*/\1/'
}

printf '%-6s %-4s %14s %14s %7s\n' test "-P" troupe-kv redis-server ratio
for P in 1 16; do
  for T in ping set get incr; do
    a=$(rps $KV_PORT $P $T)
    b=$(rps $REDIS_PORT $P $T)
    printf '%-6s %-4s %14s %14s %7s\n' "$T" "$P" "$a" "$b" \
      "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
  done
done
