#!/usr/bin/env bash
# Build and run the frame-codec fuzzer (needs clang with libFuzzer).
#   test/fuzz/run.sh [seconds]     default 60
# New crashes land in test/fuzz/regressions/ (commit them: test_frame
# replays every file there). The seed corpus is test/fuzz/corpus/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
secs=${1:-60}
out=${TMPDIR:-/tmp}/troupe-fuzz
mkdir -p "$out/corpus" "$here/regressions"
CC=${CC:-clang}
command -v "$CC" >/dev/null || { echo "fuzz: $CC not found, skipping" >&2; exit 0; }
msgpack_cflags=$(pkg-config --cflags msgpack-c 2>/dev/null || pkg-config --cflags msgpack 2>/dev/null || true)
"$CC" -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
  -I"$root" -I"$root/include" $msgpack_cflags \
  "$here/fuzz_frame.c" "$root/runtime/isolate/frame.c" "$root/actors/payload.c" \
  "$root/runtime/alloc.c" "$root/runtime/error.c" \
  -o "$out/fuzz_frame" $(pkg-config --libs msgpack-c 2>/dev/null || echo -lmsgpackc)
cp -n "$here"/corpus/* "$out/corpus/" 2>/dev/null || true
"$out/fuzz_frame" -max_total_time="$secs" -max_len=4096 \
  -artifact_prefix="$here/regressions/" "$out/corpus" "$here/corpus"
