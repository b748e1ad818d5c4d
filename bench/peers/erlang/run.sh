#!/usr/bin/env bash
# Run one troupe peer benchmark in Erlang/OTP.
#   usage: run.sh <pingpong|ring|skynet|fanin|ask|idle|big> <threads> [variant]
#          run.sh variants <bench>
# Installs erlang-base if missing, compiles troupe_bench.erl once into
# .build/ (again only when the source is newer), then runs it with
# +S threads:threads. Prints exactly one result line on stdout.
set -euo pipefail

usage() {
  echo "usage: $0 <pingpong|ring|skynet|fanin|ask|idle|big> <threads> [variant]" >&2
  echo "       $0 variants <bench>" >&2
  exit 2
}
[ $# -eq 2 ] || [ $# -eq 3 ] || usage
if [ "$1" = variants ]; then
  threads=1
else
  threads=$2
  [[ $threads =~ ^[1-9][0-9]*$ ]] || usage
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$here/.build
src=$here/troupe_bench.erl
beam=$build/troupe_bench.beam

# Toolchain: Debian's erlang-base (erl, erlc, kernel, stdlib, compiler).
if ! command -v erlc >/dev/null 2>&1 || ! command -v erl >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  {
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq -y \
      install erlang-base
  } >&2
fi

# Build once; rebuild only when the source is newer than the beam file.
if [ ! -f "$beam" ] || [ "$src" -nt "$beam" ]; then
  mkdir -p "$build"
  tmp=$(mktemp -d "$build/tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  erlc -o "$tmp" "$src" >&2
  mv -f "$tmp/troupe_bench.beam" "$beam"
  rm -rf "$tmp"
  trap - EXIT
fi

# +P: idle and skynet need more than the default 1,048,576 processes.
exec erl -noshell +S "$threads:$threads" +P 2000000 -pa "$build" \
  -run troupe_bench main "$@"
