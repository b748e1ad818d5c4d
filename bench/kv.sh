#!/usr/bin/env bash
# troupe-kv against redis-server in the same run (not part of ctest): the
# same redis-benchmark tests, clients and pipelining for both, troupe-kv
# with 1 and with 2 scheduler threads, rounds interleaved (each round runs
# every server once per cell, in a rotating order) and the median of the
# rounds reported. Usage:
#   bench/kv.sh [-n requests] [-R rounds] [-r keyspace] [-t tests] [-b build-dir]
# -n requests per run at -P 1 (16 times as many at -P 16; default 100000),
# -R rounds (default 5), -r redis-benchmark's random keyspace (default
# 100000; 0: one key), -t comma-separated tests (default
# set,get,incr,lpush,lpop,sadd,hset,zadd), -b the Release build directory
# (default build-kvbench, configured and built here).
# Installs redis-server and redis-tools (Debian) when missing. Prints one
# line per test and configuration: requests/s of redis-server, troupe-kv at
# 1 and 2 threads, the ratios troupe/redis and t2/t1, and in how many
# rounds t2 was below t1 (a pair measured in the same round, so a reading
# that the host's drift between rounds does not move); then the servers'
# CPU time per request (user + system, from /proc), which a machine busy
# with other work disturbs less than requests/s, and redis-benchmark's own
# (when it is about 1e6 / requests/s, the client used a whole CPU: it, not
# the server, set the pace). A test that a server does not support shows
# "-" (the others still run).
set -euo pipefail
cd "$(dirname "$0")/.."

N=100000
ROUNDS=5
KEYSPACE=100000
TESTS=set,get,incr,lpush,lpop,sadd,hset,zadd
BUILD=build-kvbench
while getopts "n:R:r:t:b:" o; do
  case $o in
    n) N=$OPTARG ;;
    R) ROUNDS=$OPTARG ;;
    r) KEYSPACE=$OPTARG ;;
    t) TESTS=$OPTARG ;;
    b) BUILD=$OPTARG ;;
    *) sed -n '2,20p' "$0" >&2; exit 2 ;;
  esac
done
CONFIGS=("50 1" "50 16" "200 1") # clients pipeline
SERVERS=(redis t1 t2)
declare -A PORT=([redis]=6391 [t1]=6392 [t2]=6393)

./dev.sh deps redis-server redis-tools # build packages too: it builds troupe-kv
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j2 --target troupe-kv >/dev/null
KV="$BUILD/examples/troupe-kv"

PIDS=()
CLIENT_OUT=$(mktemp) CLIENT_TIME=$(mktemp) # redis-benchmark's output, its time
declare -A SPID # server -> pid
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$CLIENT_OUT" "$CLIENT_TIME"
}
trap cleanup EXIT
for s in "${SERVERS[@]}"; do # a server left on a port would be measured instead
  if (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$s]}") 2>/dev/null; then
    echo "bench/kv.sh: port ${PORT[$s]} is taken (a server left running?)" >&2
    exit 1
  fi
done
redis-server --port "${PORT[redis]}" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize no >/dev/null &
SPID[redis]=$!
TROUPE_THREADS=1 "$KV" --port "${PORT[t1]}" --no-persist --quiet >/dev/null &
SPID[t1]=$!
TROUPE_THREADS=2 "$KV" --port "${PORT[t2]}" --no-persist --quiet >/dev/null &
SPID[t2]=$!
PIDS+=("${SPID[@]}")
for s in "${SERVERS[@]}"; do # wait until each answers
  for _ in $(seq 100); do
    redis-cli -p "${PORT[$s]}" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
  done
  if ! kill -0 "${SPID[$s]}" 2>/dev/null; then
    echo "bench/kv.sh: the $s server did not start" >&2
    exit 1
  fi
done

cpu_ticks() { # pid -> user + system clock ticks
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

run() { # server clients pipeline test -> "requests/s server-us client-us", or "- - -"
  local n=$N r=()
  [ "$3" -gt 1 ] && n=$((N * 16))
  [ "$KEYSPACE" -gt 0 ] && r=(-r "$KEYSPACE")
  local v t0 t1 TIMEFORMAT='%U %S'
  t0=$(cpu_ticks "${SPID[$1]}")
  { time timeout 300 redis-benchmark -p "${PORT[$1]}" -c "$2" -P "$3" -t "$4" -n "$n" \
    "${r[@]}" -q >"$CLIENT_OUT" 2>&1; } 2>"$CLIENT_TIME" || true
  t1=$(cpu_ticks "${SPID[$1]}")
  v=$(tr '\r' '\n' <"$CLIENT_OUT" | grep "requests per second" | tail -1 |
    sed -E 's/^[^:]*: ([0-9.]+) requests per second.*/\1/') || true
  if [ -z "$v" ]; then
    echo "- - -"
  else
    echo "$v $(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$n" \
      'BEGIN { printf "%.2f", d * 1e6 / hz / n }') $(awk -v n="$n" \
      '{ printf "%.2f", ($1 + $2) * 1e6 / n }' "$CLIENT_TIME")"
  fi
}

median() { # values... ("-" if any is "-")
  case " $* " in *" - "*) echo -; return ;; esac
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

below() { # values-a values-b (one per round, in round order) -> "k/n":
  # the rounds in which a was below b, or "-"
  case " $1 $2 " in *" - "*) echo -; return ;; esac
  awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x); split(b, y)
    for (i = 1; i <= n; i++) k += x[i] + 0 < y[i] + 0; printf "%d/%d", k, n }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }

declare -A R U C # R[test,config,server] = "requests/s ...", U: server CPU us/request, C: client's
IFS=, read -r -a TLIST <<<"$TESTS"
for ((round = 0; round < ROUNDS; round++)); do
  echo "bench/kv.sh: round $((round + 1)) of $ROUNDS" >&2
  for cfg in "${CONFIGS[@]}"; do
    read -r c p <<<"$cfg"
    for t in "${TLIST[@]}"; do
      for ((k = 0; k < ${#SERVERS[@]}; k++)); do # rotating order
        s=${SERVERS[$(((k + round) % ${#SERVERS[@]}))]}
        read -r v u cl <<<"$(run "$s" "$c" "$p" "$t")"
        R[$t,$cfg,$s]+="$v "
        U[$t,$cfg,$s]+="$u "
        C[$t,$cfg,$s]+="$cl "
      done
    done
  done
done

echo "redis-benchmark -n $N (x16 at -P 16) -r $KEYSPACE, median of $ROUNDS interleaved rounds; requests/s"
echo "(t2<t1: the rounds in which t2 was below t1, each pair from the same round)"
printf '%-6s %-12s %12s %12s %12s %8s %8s %7s %6s\n' test config redis-server \
  troupe-t1 troupe-t2 t1/redis t2/redis t2/t1 't2<t1'
for cfg in "${CONFIGS[@]}"; do
  read -r c p <<<"$cfg"
  for t in "${TLIST[@]}"; do
    # shellcheck disable=SC2086 # the values are words
    rs=$(median ${R[$t,$cfg,redis]})
    # shellcheck disable=SC2086
    t1=$(median ${R[$t,$cfg,t1]})
    # shellcheck disable=SC2086
    t2=$(median ${R[$t,$cfg,t2]})
    printf '%-6s %-12s %12s %12s %12s %8s %8s %7s %6s\n' "$t" "-c $c -P $p" \
      "$rs" "$t1" "$t2" "$(ratio "$t1" "$rs")" "$(ratio "$t2" "$rs")" \
      "$(ratio "$t2" "$t1")" "$(below "${R[$t,$cfg,t2]}" "${R[$t,$cfg,t1]}")"
  done
done
cpu_table() { # title name-of-array
  local -n a=$2
  echo
  echo "$1"
  printf '%-6s %-12s %12s %12s %12s\n' test config redis-server troupe-t1 troupe-t2
  for cfg in "${CONFIGS[@]}"; do
    read -r c p <<<"$cfg"
    for t in "${TLIST[@]}"; do
      # shellcheck disable=SC2086 # the values are words
      printf '%-6s %-12s %12s %12s %12s\n' "$t" "-c $c -P $p" \
        "$(median ${a[$t,$cfg,redis]})" "$(median ${a[$t,$cfg,t1]})" \
        "$(median ${a[$t,$cfg,t2]})"
    done
  done
}
cpu_table "server CPU time per request (user + system, microseconds), median" U
cpu_table "redis-benchmark's CPU time per request (microseconds), median" C
