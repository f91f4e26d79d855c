#!/usr/bin/env bash
# `make test`: build every flavour and run every test in it.
#
#   release  gcc -O2: unit tests, stress tests at full size, tool checks (Valgrind)
#   check    gcc -O2 with WEFT_DEBUG=3 (the invariant checkers on): stress and unit tests
#   clang    clang -O2, -Werror: unit tests
#   asan     ASan+UBSan (LeakSanitizer included): unit tests, stress at 1/5 size, tool checks
#   tsan     TSan: unit tests, stress at 1/20 size, tool checks (a planted race is found, clean code is quiet)
#   aarch64  cross-built with gcc-aarch64-linux-gnu, unit tests and the context switch under qemu-aarch64
#
# Each test program runs each of its tests in a child process with a timeout (test/runner.h).
# Usage: scripts/test.sh [flavour ...]    (default: all; WEFT_TEST_JOBS sets build parallelism)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

scripts/deps.sh test

jobs=${WEFT_TEST_JOBS:-$(nproc 2>/dev/null || echo 2)}
flavours=("$@")
[ ${#flavours[@]} -eq 0 ] && flavours=(release check clang asan tsan aarch64)
summary=()
failed=0

note() { printf '\n=== %s\n' "$*"; }

configure_build() { # dir, cmake args...
  local dir=$1; shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWEFT_BUILD_BENCH=OFF -DWEFT_BUILD_EXAMPLES=ON "$@" >"$dir.configure.log" 2>&1 &&
    cmake --build "$dir" -j "$jobs" >"$dir.build.log" 2>&1
}

run_programs() { # flavour, prefix command (may be empty), programs...
  local flavour=$1 prefix=$2; shift 2
  local p rc
  for p in "$@"; do
    [ -x "$p" ] || continue
    # shellcheck disable=SC2086
    $prefix "$p"
    rc=$?
    if [ $rc -ne 0 ]; then
      summary+=("FAIL  $flavour  $(basename "$p")")
      failed=1
    else
      summary+=("ok    $flavour  $(basename "$p")")
    fi
  done
}

flavour_release() {
  note "release (gcc)"
  configure_build build-test || { cat build-test.build.log build-test.configure.log | tail -40; return 1; }
  run_programs release "" build-test/test/test-* build-test/test/stress/stress-* build-test/test/tools/test-tools
  check_install
}

# The installed library works from both pkg-config and CMake's find_package, shared and static.
check_install() {
  local prefix out rc=0
  prefix=$(mktemp -d /tmp/weft-install.XXXXXX)
  out=$prefix/check
  mkdir -p "$out/cmake"
  cmake --install build-test --prefix "$prefix" >"$out/install.log" 2>&1 || rc=1
  if [ $rc -eq 0 ] && command -v pkg-config >/dev/null; then
    # shellcheck disable=SC2046
    cc -o "$out/hello-pc" examples/hello.c $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs weft) \
      -Wl,-rpath,"$prefix/lib" >>"$out/install.log" 2>&1 && "$out/hello-pc" >>"$out/install.log" 2>&1 || rc=1
  fi
  cat >"$out/cmake/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.16)
project(weft_consumer C)
find_package(weft REQUIRED)
add_executable(hello-shared $PWD/examples/hello.c)
target_link_libraries(hello-shared weft::weft)
add_executable(hello-static $PWD/examples/hello.c)
target_link_libraries(hello-static weft::weft_static)
CMAKE
  if [ $rc -eq 0 ]; then
    { cmake -S "$out/cmake" -B "$out/cmake/build" -DCMAKE_PREFIX_PATH="$prefix" &&
      cmake --build "$out/cmake/build" &&
      LD_LIBRARY_PATH="$prefix/lib" "$out/cmake/build/hello-shared" &&
      "$out/cmake/build/hello-static"; } >>"$out/install.log" 2>&1 || rc=1
  fi
  if [ $rc -eq 0 ]; then
    summary+=("ok    release  install (pkg-config, find_package, shared and static)")
    rm -rf "$prefix"
  else
    summary+=("FAIL  release  install (see $out/install.log)")
    tail -20 "$out/install.log"
    failed=1
  fi
}

# The invariant checkers (WEFT_DEBUG=3, src/core/internal.h): every waiter list, timer heap and fd
# descriptor is walked after each change to it; a broken one aborts with what was found.
flavour_check() {
  note "check (WEFT_DEBUG=3: invariant checkers)"
  configure_build build-check -DWEFT_DEBUG=3 || { tail -40 build-check.build.log; return 1; }
  run_programs check "" build-check/test/stress/stress-* build-check/test/test-*
}

flavour_clang() {
  note "clang"
  if ! command -v clang >/dev/null; then
    summary+=("skip  clang    (clang is not installed)")
    return 0
  fi
  CC=clang configure_build build-clang || { tail -40 build-clang.build.log; return 1; }
  run_programs clang "" build-clang/test/test-*
}

flavour_asan() {
  note "asan (ASan+UBSan+LSan)"
  configure_build build-asan -DWEFT_SANITIZE=address || { tail -40 build-asan.build.log; return 1; }
  WEFT_TEST_SCALE=0.2 WEFT_TEST_TIMEOUT_SCALE=3 \
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_programs asan "" build-asan/test/test-* build-asan/test/stress/stress-* build-asan/test/tools/test-tools
}

flavour_tsan() {
  note "tsan"
  configure_build build-tsan -DWEFT_SANITIZE=thread || { tail -40 build-tsan.build.log; return 1; }
  # TSan needs a memory layout that address-space randomisation sometimes breaks (MACHINE.md)
  local prefix=""
  if command -v setarch >/dev/null; then prefix="setarch $(uname -m) -R"; fi
  WEFT_TEST_SCALE=0.05 WEFT_TEST_TIMEOUT_SCALE=5 TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1" \
    run_programs tsan "$prefix" build-tsan/test/test-* build-tsan/test/stress/stress-* build-tsan/test/tools/test-tools
}

flavour_aarch64() {
  note "aarch64 (qemu-user)"
  if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
    summary+=("skip  aarch64  (gcc-aarch64-linux-gnu or qemu-user is not installed)")
    return 0
  fi
  configure_build build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DWEFT_BUILD_CLI=OFF \
    -DWEFT_BUILD_EXAMPLES=OFF || { tail -40 build-aarch64.build.log; return 1; }
  WEFT_TEST_SCALE=0.05 WEFT_TEST_TIMEOUT_SCALE=6 QEMU_LD_PREFIX=/usr/aarch64-linux-gnu \
    run_programs aarch64 "qemu-aarch64 -L /usr/aarch64-linux-gnu" build-aarch64/test/test-* \
    build-aarch64/test/stress/stress-* build-aarch64/test/tools/test-tools
}

for f in "${flavours[@]}"; do
  if ! "flavour_$f"; then
    summary+=("FAIL  $f  (build failed)")
    failed=1
  fi
done

note "summary"
printf '%s\n' "${summary[@]}"
if [ $failed -ne 0 ]; then
  echo "make test: FAILED"
  exit 1
fi
echo "make test: all passed"
