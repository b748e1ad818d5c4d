#!/usr/bin/env bash
# Run every workload for troupe and each variant of each peer, interleaved,
# at 1 and 2 threads, and print Markdown tables: median seconds of troupe
# and of each peer's fastest variant with peer/troupe ratios (> 1: troupe
# is faster), every variant's median, and troupe's speed-up from 1 to 2
# threads per workload (when both ran). See bench/README.md.
#   bench/run.sh [reps]          (default 5)
# Environment: BENCHES="pingpong ring ..." THREADS="1 2" IMPLS="troupe erlang go tokio"
#   SKIP="tokio:join erlang:gen_server"   impl:variant pairs not to run
#   RESULTS=file                          keep the raw result lines there
#   TROUPE_BUILD=dir   use dir/bench/troupe-bench as it is (default: build
#                      build-release/ with ./dev.sh build-release)
set -euo pipefail
# Paths given in the environment are relative to where this was started.
[ -z "${RESULTS:-}" ] || RESULTS=$(realpath -m "$RESULTS")
[ -z "${TROUPE_BUILD:-}" ] || TROUPE_BUILD=$(realpath -m "$TROUPE_BUILD")
cd "$(dirname "$0")/.."
reps=${1:-5}
benches=${BENCHES:-"pingpong ring skynet fanin ask idle big"}
threads_list=${THREADS:-"1 2"}
impls=${IMPLS:-"troupe erlang go tokio"}
skip=" ${SKIP:-} "

if [ -z "${TROUPE_BUILD:-}" ]; then
  ./dev.sh build-release >&2
fi
troupe_bench=${TROUPE_BUILD:-build-release}/bench/troupe-bench
if [ -n "${RESULTS:-}" ]; then
  results=$RESULTS
  : >"$results"
else
  results=$(mktemp)
  trap 'rm -f "$results"' EXIT
fi

run_one() { # impl bench threads variant -> result line
  case $1 in
    troupe) "$troupe_bench" "$2" "$3" ;;
    *) "bench/peers/$1/run.sh" "$2" "$3" ${4:+"$4"} ;;
  esac
}

# A workload's variants per implementation ("-": troupe has one program),
# minus SKIP. Asking a peer for them also builds it, outside the timings.
declare -A variants
for impl in $impls; do
  for b in $benches; do
    if [ "$impl" = troupe ]; then
      vs="-"
    else
      all=$("bench/peers/$impl/run.sh" variants "$b") || { echo "run.sh: $impl cannot list its variants of $b" >&2; exit 1; }
      vs=""
      for v in $all; do
        case $skip in *" $impl:$v "*) ;; *) vs="$vs $v" ;; esac
      done
    fi
    [ -n "$vs" ] || { echo "run.sh: every $impl variant of $b is skipped" >&2; exit 2; }
    variants[$impl:$b]=$vs
  done
done

# Warm-up: one run of each peer, outside the measurements.
for impl in $impls; do
  [ "$impl" = troupe ] || run_one "$impl" pingpong 1 "" >/dev/null
done

# Interleaved: every implementation, variant and thread count once per
# round, so the machine's drift (these VMs have fast and slow spells) hits
# all of a workload's figures alike, including troupe's 1 → 2 thread
# speed-up.
for b in $benches; do
  for ((r = 1; r <= reps; r++)); do
    for t in $threads_list; do
      for impl in $impls; do
        for v in ${variants[$impl:$b]}; do
          line=$(run_one "$impl" "$b" "$t" "$v") || { echo "FAILED: $impl $b $t $v" >&2; exit 1; }
          echo "$line" >&2
          echo "$line" >>"$results"
        done
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
  # The best variant of an implementation at a bench and thread count: the
  # lowest median seconds, or for idle the lowest median bytes per actor.
  function best(bt, impl,   n, vs, i, k, b, score, bscore) {
    n = split(vars[bt SUBSEP impl], vs, " ")
    for (i = 1; i <= n; i++) {
      k = bt SUBSEP impl SUBSEP vs[i]
      score = (k in mem) ? median(mem[k]) : median(secs[k])
      if (i == 1 || score + 0 < bscore + 0) { b = vs[i]; bscore = score }
    }
    return b
  }
  function cell(k, v,   c) { # "0.233", with " (variant, N B/actor)" as known
    c = sprintf("%.3f", median(secs[k]))
    if (v != "-" && (k in mem)) return c sprintf(" (%s, %d B/actor)", v, median(mem[k]))
    if (v != "-") return c " (" v ")"
    if (k in mem) return c sprintf(" (%d B/actor)", median(mem[k]))
    return c
  }
  {
    b = kv($0, "bench"); t = kv($0, "threads"); who = kv($0, "impl"); v = kv($0, "variant")
    if (v == "") v = "-"
    bt = b SUBSEP t
    k = bt SUBSEP who SUBSEP v
    secs[k] = secs[k] " " kv($0, "seconds")
    if (kv($0, "bytes_per_actor") != "") mem[k] = mem[k] " " kv($0, "bytes_per_actor")
    if (!(bt in seen)) { seen[bt] = 1; order[++nrows] = bt }
    if (!(b in bseen)) { bseen[b] = 1; border[++nb] = b }
    if (!(k in vseen)) { vseen[k] = 1; vars[bt SUBSEP who] = vars[bt SUBSEP who] " " v }
    ran[bt SUBSEP who] = 1
  }
  END {
    ni = split(impls, im, " ")
    hdr = "| bench | threads |"; sep = "|---|---|"
    for (i = 1; i <= ni; i++) { hdr = hdr " " im[i] " s |"; sep = sep "---|" }
    # Ratios only when troupe ran.
    ratios = index(" " impls " ", " troupe ") > 0
    if (ratios) for (i = 1; i <= ni; i++) if (im[i] != "troupe") { hdr = hdr " " im[i] "/troupe |"; sep = sep "---|" }
    print hdr; print sep
    for (r = 1; r <= nrows; r++) {
      bt = order[r]; split(bt, p, SUBSEP)
      row = "| " p[1] " | " p[2] " |"
      for (i = 1; i <= ni; i++) { bv[i] = best(bt, im[i]); row = row " " cell(bt SUBSEP im[i] SUBSEP bv[i], bv[i]) " |" }
      if (ratios) tk = bt SUBSEP "troupe" SUBSEP best(bt, "troupe")
      if (ratios) for (i = 1; i <= ni; i++) if (im[i] != "troupe") {
        k = bt SUBSEP im[i] SUBSEP bv[i]
        row = row sprintf(" %.2f", median(secs[k]) / median(secs[tk]))
        if (k in mem) row = row sprintf(" (mem %.2f)", median(mem[k]) / median(mem[tk]))
        row = row " |"
      }
      print row
    }
    # Every variant of every peer, the one used above in bold.
    print ""
    hdr = "| bench | threads |"; sep = "|---|---|"
    for (i = 1; i <= ni; i++) if (im[i] != "troupe") { hdr = hdr " " im[i] " variants, median s |"; sep = sep "---|" }
    print hdr; print sep
    for (r = 1; r <= nrows; r++) {
      bt = order[r]; split(bt, p, SUBSEP)
      row = "| " p[1] " | " p[2] " |"
      for (i = 1; i <= ni; i++) if (im[i] != "troupe") {
        b = best(bt, im[i]); n = split(vars[bt SUBSEP im[i]], vs, " "); c = ""
        for (j = 1; j <= n; j++) {
          k = bt SUBSEP im[i] SUBSEP vs[j]
          x = vs[j] " " sprintf("%.3f", median(secs[k]))
          if (k in mem) x = x sprintf(" %d B/actor", median(mem[k]))
          c = c (j > 1 ? ", " : "") (vs[j] == b ? "**" x "**" : x)
        }
        row = row " " c " |"
      }
      print row
    }
    # troupe scaling: median seconds at 1 thread / at 2 threads (> 1: faster with 2).
    for (b = 1; b <= nb; b++) {
      k1 = border[b] SUBSEP "1"; k2 = border[b] SUBSEP "2"
      if (!((k1 SUBSEP "troupe") in ran) || !((k2 SUBSEP "troupe") in ran)) continue
      if (!shown++) { print ""; print "| bench | troupe speed-up 1 → 2 threads (t1 s / t2 s) |"; print "|---|---|" }
      t1 = median(secs[k1 SUBSEP "troupe" SUBSEP best(k1, "troupe")])
      t2 = median(secs[k2 SUBSEP "troupe" SUBSEP best(k2, "troupe")])
      printf "| %s | %.2f (%.3f / %.3f) |\n", border[b], t1 / t2, t1, t2
    }
  }' "$results"
