#!/usr/bin/env bash
# Install the Debian packages a job needs, when they are missing: scripts/deps.sh build|test|bench
# As root with apt-get, missing packages are installed; otherwise the script says what is missing and
# the job goes on without them (the parts that need them say so when they are skipped).
set -euo pipefail

job=${1:-build}
case "$job" in
  build) pkgs=(cmake make gcc) ;;
  test)  pkgs=(cmake make gcc clang valgrind qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross util-linux pkg-config iproute2 nftables apache2-utils curl) ;;
  bench) pkgs=(cmake make gcc g++ golang-go libboost-context-dev libboost-fiber-dev libtbb-dev wrk nginx libuv1-dev pkg-config) ;;
  *) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/weft-apt.log 2>&1; then
    apt-get update -q >>/tmp/weft-apt.log 2>&1 || true
    apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/weft-apt.log 2>&1 ||
      { echo "deps: could not install ${missing[*]} (see /tmp/weft-apt.log)" >&2; exit 0; }
  fi
else
  echo "deps: missing ${missing[*]}; install them (as root: apt-get install ${missing[*]}) for the full job" >&2
fi
