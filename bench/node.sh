#!/usr/bin/env bash
# Two nodes side by side: troupe (bench/node_bench.c), plain nats.c
# (bench/peers/nats_c/) and distributed Erlang (bench/peers/erlang/
# run_node.sh), interleaved round by round, then a Markdown table of
# medians with the ratios troupe/nats.c and troupe/Erlang.
#   bench/node.sh [reps]            (default 5)
# Environment:
#   BUILD=dir   build the two C programs there (Release) instead of
#               ./dev.sh build-release into build-release/
#   THREADS=1   scheduler threads of troupe (Erlang: +S t:t)
#   N_RTT=20000 N_TPUT=500000   work per run
#   IMPLS="troupe natsc erlang"
# Every run starts its own nats-server (troupe, nats.c) or epmd (Erlang) on
# a free loopback port and ends it; each is bounded by its own alarm.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5}
threads=${THREADS:-1}
n_rtt=${N_RTT:-20000}
n_tput=${N_TPUT:-500000}
impls=${IMPLS:-"troupe natsc erlang"}

if [ -n "${BUILD:-}" ]; then
  if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq update >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq -y \
      install nats-server >&2
  fi
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTROUPE_TESTS=OFF >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target troupe-node-bench natsc-node-bench >/dev/null
  build=$BUILD
else
  ./dev.sh build-release >&2
  build=build-release
fi

results=$(mktemp)

run_one() { # impl bench [n] -> result line
  local n
  [ "$2" = rtt ] && n=$n_rtt || n=$n_tput
  n=${3:-$n}
  case $1 in
    troupe) timeout 180 "$build/bench/troupe-node-bench" "$2" "$threads" "$n" ;;
    natsc) timeout 180 "$build/bench/natsc-node-bench" "$2" "$threads" "$n" ;;
    erlang) timeout 180 bench/peers/erlang/run_node.sh "$2" "$threads" "$n" ;;
    *) echo "unknown impl $1" >&2; return 2 ;;
  esac
}

# Warm-up (builds the Erlang module, loads the programs), not measured.
for impl in $impls; do
  run_one "$impl" rtt 1000 >/dev/null 2>&1 || true
done

# A run that fails (wrong check, a node seen down, a crash) is reported
# and counted, not used; its slot is retried, at most 3 times.
failed=$(mktemp)
trap 'rm -f "$results" "$failed"' EXIT
for ((r = 1; r <= reps; r++)); do
  for b in rtt tput; do
    for impl in $impls; do
      for attempt in 1 2 3; do
        errf=$(mktemp)
        rc=0
        line=$(run_one "$impl" "$b" 2>"$errf") || rc=$?
        if [ "$rc" -eq 0 ]; then
          echo "$line" >&2
          echo "$line" >>"$results"
          rm -f "$errf"
          break
        fi
        why=$(grep -v '^$' "$errf" | head -1)
        rm -f "$errf"
        echo "FAILED (exit $rc, attempt $attempt): $impl $b: ${why:-no message}" >&2
        echo "$impl $b exit=$rc ${why:-}" >>"$failed"
      done
    done
  done
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "Machine: $cpu, $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(date -u +%Y-%m-%d); medians of $reps runs, interleaved; threads=$threads; rtt n=$n_rtt, tput n=$n_tput."
echo
awk -v impls="$impls" '
  function kv(line, key,   i, n, f, a) {
    n = split(line, f, " ")
    for (i = 1; i <= n; i++) { split(f[i], a, "="); if (a[1] == key) return a[2] }
    return ""
  }
  function median(list,   n, v, i, j, t) {
    n = split(list, v, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  {
    k = kv($0, "bench") SUBSEP kv($0, "impl")
    secs[k] = secs[k] " " kv($0, "seconds")
    n[kv($0, "bench")] = kv($0, "n")
  }
  END {
    ni = split(impls, im, " ")
    name["troupe"] = "troupe"; name["natsc"] = "nats.c"; name["erlang"] = "Erlang"
    hdr = "| workload |"; sep = "|---|"
    for (i = 1; i <= ni; i++) { hdr = hdr " " name[im[i]] " |"; sep = sep "---:|" }
    for (i = 1; i <= ni; i++) if (im[i] != "troupe") { hdr = hdr " troupe/" name[im[i]] " |"; sep = sep "---:|" }
    print hdr; print sep
    split("rtt tput", bs, " ")
    for (b = 1; b <= 2; b++) {
      bn = bs[b]
      if (!((bn SUBSEP "troupe") in secs)) continue
      row = bn == "rtt" ? "| round trip, µs (lower is better) |" : "| one-way, messages/s (higher is better) |"
      for (i = 1; i <= ni; i++) {
        m = median(secs[bn SUBSEP im[i]])
        val[im[i]] = bn == "rtt" ? m * 1e6 / n[bn] : n[bn] / m
        row = row (bn == "rtt" ? sprintf(" %.1f |", val[im[i]]) : sprintf(" %.0f |", val[im[i]]))
      }
      for (i = 1; i <= ni; i++) if (im[i] != "troupe")
        row = row sprintf(" %.2f |", val["troupe"] / val[im[i]])
      print row
    }
    print ""
    print "Targets: round trip troupe/nats.c <= 1.2; throughput troupe/nats.c >= 0.8."
  }' "$results"
if [ -s "$failed" ]; then
  echo
  echo "Failed runs (retried, not in the medians): $(wc -l <"$failed")"
  sed 's/^/- /' "$failed"
fi
