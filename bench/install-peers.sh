#!/usr/bin/env bash
# bench/install-peers.sh - installs what the peer benchmarks need.
#
#     bench/install-peers.sh            install what is missing (apt-get, as root)
#     bench/install-peers.sh --check    only say what is missing; exit 1 if anything is
#
# The peers (bench/peers/) are built with g++ (Boost.Context, Boost.Fiber,
# oneTBB), gcc with OpenMP or libuv, and Go; the network benches
# (bench/net.sh) also run wrk and nginx.  Each library is probed by compiling
# and linking a tiny program, so a header without its library (or the
# reverse) counts as missing; each tool, by looking for its program.  Nothing is installed when everything is present.  Not
# root, or no apt-get: say what is missing and how to get it, and exit 0, so
# bench/run.sh can still run the peers that do build.
set -euo pipefail

check_only=0
case "${1:-}" in
    --check) check_only=1 ;;
    "") ;;
    -h | --help)
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
        exit 0
        ;;
    *)
        echo "usage: $0 [--check]" >&2
        exit 2
        ;;
esac

probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir"' EXIT

# compiles SOURCE with COMPILER and FLAGS... ; true if it builds and links
links() {
    local compiler=$1 source=$2
    shift 2
    command -v "$compiler" >/dev/null 2>&1 || return 1
    local ext=c
    [[ $compiler == g++ ]] && ext=cpp
    printf '%s\n' "$source" >"$probe_dir/probe.$ext"
    "$compiler" "$probe_dir/probe.$ext" -o "$probe_dir/probe" "$@" >/dev/null 2>&1
}

missing=()  # what is missing, for people
packages=() # the Debian packages that provide it

need() { # description package
    missing+=("$1")
    [[ -n $2 ]] && packages+=("$2")
    return 0
}

probe_all() {
    missing=()
    packages=()
    command -v gcc >/dev/null 2>&1 || need "gcc" gcc
    command -v g++ >/dev/null 2>&1 || need "g++" g++
    command -v go >/dev/null 2>&1 || need "go (Go toolchain)" golang-go
    links g++ '#include <boost/context/fiber.hpp>
int main() { boost::context::fiber f{[](boost::context::fiber &&m) { return std::move(m); }};
             f = std::move(f).resume(); }' -lboost_context ||
        need "Boost.Context (headers + libboost_context)" libboost-context-dev
    links g++ '#include <boost/fiber/fiber.hpp>
#include <boost/fiber/operations.hpp>
int main() { boost::fibers::fiber f([] { boost::this_fiber::yield(); }); f.join(); }' \
        -lboost_fiber -lboost_context ||
        need "Boost.Fiber (headers + libboost_fiber)" libboost-fiber-dev
    links g++ '#include <oneapi/tbb/task_group.h>
int main() { tbb::task_group g; g.run([] {}); g.wait(); }' -ltbb -pthread ||
        need "oneTBB (oneapi/tbb/task_group.h + libtbb)" libtbb-dev
    # omp.h and libgomp ship with gcc itself on Debian: no package of their own.
    links gcc '#include <omp.h>
int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }' -fopenmp ||
        need "OpenMP (omp.h + libgomp, part of gcc)" ""
    command -v pkg-config >/dev/null 2>&1 || need "pkg-config" pkg-config
    local uv_flags
    uv_flags=$(pkg-config --cflags --libs libuv 2>/dev/null) || uv_flags=-luv
    # shellcheck disable=SC2086 # the flags are words
    links gcc '#include <uv.h>
int main(void) { uv_loop_t l; return uv_loop_init(&l) || uv_loop_close(&l); }' $uv_flags ||
        need "libuv (uv.h + libuv)" libuv1-dev
    command -v wrk >/dev/null 2>&1 || need "wrk (HTTP load generator)" wrk
    # nginx lives in /usr/sbin, which a user's PATH may lack
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need "nginx" nginx
    return 0
}

report_missing() {
    local m
    for m in "${missing[@]}"; do
        echo "install-peers: missing: $m"
    done
}

probe_all
if ((${#missing[@]} == 0)); then
    echo "install-peers: everything the peers need is present"
    exit 0
fi
report_missing
if ((check_only)); then
    exit 1
fi
if ((${#packages[@]} == 0)); then
    echo "install-peers: nothing apt-get can add; install the above by hand"
    exit 0
fi
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-peers: not root or no apt-get; to install, run as root:"
    echo "    apt-get install -y ${packages[*]}"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-peers: apt-get install -y ${packages[*]}"
# A fresh image often has empty package lists: update first.
apt-get update -qq
apt-get install -y -qq "${packages[@]}"

probe_all
if ((${#missing[@]} > 0)); then
    report_missing
    echo "install-peers: still missing after apt-get install" >&2
    exit 1
fi
echo "install-peers: done"
