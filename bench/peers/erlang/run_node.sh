#!/usr/bin/env bash
# Two distributed Erlang nodes on loopback: gen_server:call round trips
# and `!` throughput (the Erlang side of bench/node.sh).
#   usage: run_node.sh <rtt|tput> <threads> [n]
# Installs erlang-base if missing, compiles troupe_node_bench.erl once
# into .build/, starts a private epmd on a free loopback port (so nothing
# outlives the run), node b (the server) and node a (the client), each
# with +S threads:threads. Prints exactly one result line on stdout.
set -euo pipefail

usage() { echo "usage: $0 <rtt|tput> <threads> [n]" >&2; exit 2; }
[ $# -eq 2 ] || [ $# -eq 3 ] || usage
bench=$1 threads=$2
case $bench in rtt) n=${3:-20000} ;; tput) n=${3:-500000} ;; *) usage ;; esac
[[ $threads =~ ^[1-9][0-9]*$ ]] || usage
[[ $n =~ ^[1-9][0-9]*$ ]] || usage

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$here/.build
src=$here/troupe_node_bench.erl
beam=$build/troupe_node_bench.beam

if ! command -v erlc >/dev/null 2>&1 || ! command -v erl >/dev/null 2>&1 ||
   ! command -v epmd >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  {
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq -y \
      install erlang-base
  } >&2
fi

if [ ! -f "$beam" ] || [ "$src" -nt "$beam" ]; then
  mkdir -p "$build"
  tmp=$(mktemp -d "$build/tmp.XXXXXX")
  erlc -o "$tmp" "$src" >&2
  mv -f "$tmp/troupe_node_bench.beam" "$beam"
  rm -rf "$tmp"
fi

epmd_pid="" b_pid=""
cleanup() {
  [ -z "$b_pid" ] || kill "$b_pid" 2>/dev/null || true
  [ -z "$epmd_pid" ] || kill "$epmd_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

# A private epmd on a free loopback port (retry if the port is taken).
for _ in 1 2 3 4 5 6 7 8 9 10; do
  port=$((20000 + RANDOM % 40000))
  epmd -address 127.0.0.1 -port "$port" >/dev/null 2>&1 &
  epmd_pid=$!
  for _ in $(seq 50); do
    epmd -port "$port" -names >/dev/null 2>&1 && break
    kill -0 "$epmd_pid" 2>/dev/null || break
    sleep 0.02
  done
  if kill -0 "$epmd_pid" 2>/dev/null && epmd -port "$port" -names >/dev/null 2>&1; then
    break
  fi
  epmd_pid=""
done
[ -n "$epmd_pid" ] || { echo "run_node.sh: cannot start epmd" >&2; exit 1; }
export ERL_EPMD_PORT=$port

a=a$$@127.0.0.1 b=b$$@127.0.0.1
common=(-noshell -setcookie troupe_node_bench -start_epmd false
        -kernel inet_dist_use_interface '{127,0,0,1}'
        +S "$threads:$threads" -pa "$build")

timeout 150 erl -name "$b" "${common[@]}" -run troupe_node_bench peer "$a" &
b_pid=$!
rc=0
timeout 150 erl -name "$a" "${common[@]}" \
  -run troupe_node_bench main "$bench" "$threads" "$n" "$b" || rc=$?
wait "$b_pid" || true
b_pid=""
exit "$rc"
