# Makefile -- the two README commands and a few helpers around CMake.
#
#   make demo   build, start a private Redis and calc-server, call it from C,
#               Ruby and Python, clean up
#   make test   the whole suite: -Werror build, ctest, then ctest again
#               under ASan+UBSan, then the C test programs under valgrind
# Both install missing Debian packages first (scripts/install-deps.sh).
BUILD      ?= build
ASAN_BUILD ?= build-asan
VG_BUILD   ?= build-valgrind
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=

.PHONY: all deps build demo test test-fast test-asan test-valgrind bench chaos fuzz clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DRRPC_WERROR=ON $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

demo: build
	@scripts/demo.sh $(BUILD)

test-fast: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DRRPC_WERROR=ON -DRRPC_SANITIZE=address,undefined \
	  -DCMAKE_BUILD_TYPE=Debug $(CMAKE_ARGS) >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	@cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS)

test-valgrind: deps
	@cmake -S . -B $(VG_BUILD) -DRRPC_WERROR=ON -DRRPC_VALGRIND=ON \
	  -DCMAKE_BUILD_TYPE=Debug $(CMAKE_ARGS) >/dev/null
	@cmake --build $(VG_BUILD) -j $(JOBS)
	@cd $(VG_BUILD) && ctest --output-on-failure -j $(JOBS)

test: test-fast test-asan test-valgrind

bench: build
	@scripts/bench.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(VG_BUILD)
