#!/usr/bin/env bash
# Run every workload for troupe and each peer, interleaved, at 1 and 2
# threads, and print a Markdown table of median seconds with peer/troupe
# ratios (> 1: troupe is faster), then troupe's speed-up from 1 to 2
# threads per workload (when both ran).
#   bench/run.sh [reps]          (default 5)
# Environment: BENCHES="pingpong ring ..." THREADS="1 2" IMPLS="troupe erlang go tokio"
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5}
benches=${BENCHES:-"pingpong ring skynet fanin ask idle big"}
threads_list=${THREADS:-"1 2"}
impls=${IMPLS:-"troupe erlang go tokio"}

./dev.sh build-release >&2
results=$(mktemp)
trap 'rm -f "$results"' EXIT

run_one() { # impl bench threads -> result line
  case $1 in
    troupe) build-release/bench/troupe-bench "$2" "$3" ;;
    *) "bench/peers/$1/run.sh" "$2" "$3" ;;
  esac
}

# Warm-up: build every peer once, outside the measurements.
for impl in $impls; do
  [ "$impl" = troupe ] || run_one "$impl" pingpong 1 >/dev/null
done

# Interleaved: every implementation and thread count once per round, so
# the machine's drift (these VMs have fast and slow spells) hits all of a
# workload's figures alike, including troupe's 1 → 2 thread speed-up.
for b in $benches; do
  for ((r = 1; r <= reps; r++)); do
    for t in $threads_list; do
      for impl in $impls; do
        line=$(run_one "$impl" "$b" "$t") || { echo "FAILED: $impl $b $t" >&2; exit 1; }
        echo "$line" >&2
        echo "$line" >>"$results"
      done
    done
  done
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "Machine: $cpu, $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; medians of $reps runs, interleaved."
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
    k = kv($0, "bench") SUBSEP kv($0, "threads") SUBSEP kv($0, "impl")
    secs[k] = secs[k] " " kv($0, "seconds")
    if (kv($0, "bytes_per_actor") != "") mem[k] = mem[k] " " kv($0, "bytes_per_actor")
    if (!(kv($0, "bench") SUBSEP kv($0, "threads") in seen)) { seen[kv($0, "bench") SUBSEP kv($0, "threads")] = 1; order[++nrows] = kv($0, "bench") SUBSEP kv($0, "threads") }
    if (!(kv($0, "bench") in bseen)) { bseen[kv($0, "bench")] = 1; border[++nb] = kv($0, "bench") }
  }
  END {
    ni = split(impls, im, " ")
    hdr = "| bench | threads |"; sep = "|---|---|"
    for (i = 1; i <= ni; i++) { hdr = hdr " " im[i] " s |"; sep = sep "---|" }
    for (i = 1; i <= ni; i++) if (im[i] != "troupe") { hdr = hdr " " im[i] "/troupe |"; sep = sep "---|" }
    print hdr; print sep
    for (r = 1; r <= nrows; r++) {
      split(order[r], bt, SUBSEP)
      row = "| " bt[1] " | " bt[2] " |"
      tm = median(secs[order[r] SUBSEP "troupe"])
      for (i = 1; i <= ni; i++) {
        k = order[r] SUBSEP im[i]
        cell = sprintf("%.3f", median(secs[k]))
        if (k in mem) cell = cell sprintf(" (%d B/actor)", median(mem[k]))
        row = row " " cell " |"
      }
      for (i = 1; i <= ni; i++) if (im[i] != "troupe") {
        k = order[r] SUBSEP im[i]
        row = row sprintf(" %.2f", median(secs[k]) / tm)
        if (k in mem) row = row sprintf(" (mem %.2f)", median(mem[k]) / median(mem[order[r] SUBSEP "troupe"]))
        row = row " |"
      }
      print row
    }
    # troupe scaling: median seconds at 1 thread / at 2 threads (> 1: faster with 2).
    for (b = 1; b <= nb; b++) {
      k1 = border[b] SUBSEP "1" SUBSEP "troupe"; k2 = border[b] SUBSEP "2" SUBSEP "troupe"
      if (!(k1 in secs) || !(k2 in secs)) continue
      if (!shown++) { print ""; print "| bench | troupe speed-up 1 → 2 threads (t1 s / t2 s) |"; print "|---|---|" }
      t1 = median(secs[k1]); t2 = median(secs[k2])
      printf "| %s | %.2f (%.3f / %.3f) |\n", border[b], t1 / t2, t1, t2
    }
  }' "$results"
