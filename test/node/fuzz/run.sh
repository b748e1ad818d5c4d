#!/usr/bin/env bash
# Build and run the node frame-codec fuzzer (needs clang with libFuzzer:
# Debian's clang and libclang-rt-14-dev).
#   test/node/fuzz/run.sh [seconds]     default 60
# New crashes land in test/node/fuzz/regressions/ (commit them: test_wire
# replays every file there). The seed corpus is test/node/fuzz/corpus/
# (node/test_wire --write-corpus DIR writes it again).
#
# wire.c reaches into the rest of the node service (pids in spawn
# answers) and payload.c into the core, so the target links the whole
# static library, built here with clang and the fuzzer's instrumentation.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
secs=${1:-60}
out=${TMPDIR:-/tmp}/troupe-nfuzz
mkdir -p "$out/corpus" "$here/regressions"
CC=${CC:-clang}
command -v "$CC" >/dev/null || { echo "fuzz: $CC not found, skipping" >&2; exit 0; }
san="-fsanitize=address,undefined -fno-sanitize-recover=all"
cmake -S "$root" -B "$out/lib" -DCMAKE_C_COMPILER="$CC" -DCMAKE_BUILD_TYPE=Debug \
  -DTROUPE_TESTS=OFF -DCMAKE_C_FLAGS="-O1 -fsanitize=fuzzer-no-link $san" >/dev/null
cmake --build "$out/lib" --target troupe_static -j"$(nproc)" >/dev/null
# shellcheck disable=SC2046,SC2086 # pkg-config's words are separate flags
"$CC" -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer $san \
  -I"$root" -I"$root/include" $(pkg-config --cflags msgpack-c 2>/dev/null || true) \
  "$here/fuzz_nframe.c" "$out/lib/libtroupe.a" \
  $(pkg-config --libs libevent libnats) \
  $(pkg-config --libs msgpack-c 2>/dev/null || echo -lmsgpackc) -lpthread \
  -o "$out/fuzz_nframe"
cp -n "$here"/corpus/* "$out/corpus/" 2>/dev/null || true
"$out/fuzz_nframe" -max_total_time="$secs" -max_len=4096 \
  -artifact_prefix="$here/regressions/" "$out/corpus" "$here/corpus"
