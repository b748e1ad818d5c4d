#!/usr/bin/env bash
# Run one troupe peer benchmark in Go.
#   usage: run.sh <pingpong|ring|skynet|fanin|ask|idle|big> <threads> [variant]
#          run.sh variants <bench>
# Installs golang-go if missing, builds main.go once into .build/ (again
# only when a source file is newer than the binary), then runs it with
# GOMAXPROCS=threads. Prints exactly one result line on stdout.
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
bin=$build/troupe-bench

# Toolchain: Debian's golang-go.
if ! command -v go >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  {
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq -y \
      install golang-go
  } >&2
fi

# Build once, offline, with caches kept under .build/; rebuild only when
# main.go or go.mod is newer than the binary.
if [ ! -x "$bin" ] || [ "$here/main.go" -nt "$bin" ] || [ "$here/go.mod" -nt "$bin" ]; then
  mkdir -p "$build"
  tmp=$(mktemp "$build/troupe-bench.tmp.XXXXXX")
  trap 'rm -f "$tmp"' EXIT
  (
    cd "$here"
    export GOCACHE=$build/cache GOPATH=$build/gopath GOMODCACHE=$build/gopath/pkg/mod
    export GOPROXY=off GOFLAGS='' GO111MODULE=on GOTOOLCHAIN=local GOWORK=off
    go build -trimpath -o "$tmp" .
  ) >&2
  mv -f "$tmp" "$bin"
  trap - EXIT
fi

GOMAXPROCS=$threads exec "$bin" "$@"
