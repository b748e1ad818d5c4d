#!/usr/bin/env bash
# Soak: the load and fault workloads mixed for a long time (default 30
# minutes), checking that memory and descriptors stay flat after warm-up,
# with a backtrace of every thread if anything hangs. Not part of CI.
#   test/soak.sh [seconds] [seed]
# Runs, side by side:
#  - troupe-soak: rounds of a random mesh (message conservation), a fan-in
#    flood, 100,000 timers set and cancelled, spawn/exit churn;
#  - troupe-kv under RLIMIT_NOFILE=64, driven by redis-benchmark (new TCP
#    clients every cycle), by bursts of more connections than it has
#    descriptors (accept hits EMFILE and must recover), and by clients that
#    disconnect in the middle of a request.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-1800}
seed=${2:-$(date +%s)}
build=build-soak
./dev.sh build-release >/dev/null # also installs the packages
for p in redis-tools gdb; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null; }
done
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target troupe-soak troupe-kv >/dev/null

work=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true # troupe-kv saves on SIGTERM: let it finish first
  rm -rf "$work"
}
trap cleanup EXIT
port=$((20000 + RANDOM % 20000))

(ulimit -n 64; exec "$build/examples/troupe-kv" --port "$port" --dbfile "$work/dump.tkv") \
  >"$work/kv.log" 2>&1 &
kv=$!
"$build/test/troupe-soak" "$secs" "$seed" >"$work/soak.log" 2>&1 &
soak=$!
sleep 1

kv_sample() { # rss_kb fds of troupe-kv
  echo "$(awk '/VmRSS/{print $2}' /proc/$kv/status) $(ls /proc/$kv/fd | wc -l)"
}

hang_check() { # a process whose log stopped moving for 120 s
  local log=$1 pid=$2 name=$3
  local age=$(( $(date +%s) - $(stat -c %Y "$log") ))
  if [ "$age" -gt 120 ] && kill -0 "$pid" 2>/dev/null; then
    echo "HANG: $name made no progress for ${age}s; backtraces:"
    gdb -batch -p "$pid" -ex "thread apply all bt" 2>/dev/null | grep -E '^(#|Thread)'
    exit 1
  fi
}

start=$(date +%s)
: >"$work/kv.samples"
while kill -0 "$soak" 2>/dev/null; do
  # TCP client churn: new connections each cycle
  timeout 120 redis-benchmark -p "$port" -c 40 -n 20000 -t set,get,incr -q >/dev/null 2>&1 || true
  # more connections than descriptors: accept hits EMFILE, then recovers
  (for i in $(seq 70); do exec {fd}<>"/dev/tcp/127.0.0.1/$port" || break; done; sleep 0.2) 2>/dev/null || true
  # peers that vanish mid-request, at every stage of a RESP frame
  for cut in 1 4 9 14 20; do
    printf '*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n' | head -c "$cut" |
      timeout 2 redis-cli -p "$port" -x ping >/dev/null 2>&1 || true
    exec 3<>"/dev/tcp/127.0.0.1/$port" && printf '*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n' |
      head -c "$cut" >&3 && exec 3>&- || true
  done
  echo "$(( $(date +%s) - start )) $(kv_sample)" >>"$work/kv.samples"
  touch "$work/kv.alive"
  hang_check "$work/soak.log" "$soak" troupe-soak
  redis-cli -p "$port" ping >/dev/null 2>&1 || { echo "troupe-kv stopped answering"; cat "$work/kv.log"; exit 1; }
done
wait "$soak" || { echo "troupe-soak failed:"; tail -5 "$work/soak.log"; exit 1; }

# Flat after warm-up: compare the second tenth of the run with the end.
report() { # file column label
  awk -v col="$2" -v label="$3" '
    { v[NR] = $col } END {
      w = int(NR / 10) + 1; a = v[w]; b = v[NR]
      printf "%s: after warm-up %s, at the end %s (%+.1f%%)\n", label, a, b, (b - a) * 100.0 / (a ? a : 1)
      exit (b > a * 1.10 + 1024) }' "$1"
}
echo "soak: ${secs}s, seed $seed, $(grep -c '^round=' "$work/soak.log") troupe-soak rounds, $(wc -l <"$work/kv.samples") kv load cycles"
fail=0
awk '/^round=/{split($3,a,"="); split($4,b,"="); print a[2], b[2]}' "$work/soak.log" >"$work/soak.samples"
report "$work/soak.samples" 1 "troupe-soak RSS kB" || fail=1
report "$work/soak.samples" 2 "troupe-soak fds" || fail=1
report "$work/kv.samples" 2 "troupe-kv RSS kB" || fail=1
report "$work/kv.samples" 3 "troupe-kv fds" || fail=1
echo "troupe-kv accept pauses (EMFILE) logged: $(grep -c 'pausing accepts' "$work/kv.log" || true)"
[ "$fail" -eq 0 ] && echo "soak: PASS" || { echo "soak: FAIL (growth above 10%)"; exit 1; }
