# The README's commands. Everything real lives in CMake and scripts/; this file only names the jobs.
#
#   make run     build, then run the main job (the core benchmarks, weft side)
#   make test    build every flavour (release, ASan+UBSan, TSan, aarch64 under qemu) and run every test
#   make bench   build, then run the benchmarks side by side with their peers (Go, Boost, TBB, OpenMP, libuv, nginx...)
#   make install PREFIX=/usr/local

BUILD ?= build
PREFIX ?= /usr/local
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all build run test bench install clean

all: build

build:
	@scripts/deps.sh build
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/cli/weft bench

test:
	scripts/test.sh

bench: build
	WEFT_BENCH=$(BUILD)/bench/weft-bench BUILD=$(BUILD) bench/run.sh && BUILD=$(BUILD) bench/net.sh

install: build
	cmake --install $(BUILD)

clean:
	rm -rf build build-asan build-tsan build-aarch64
