# Makefile -- the two README commands and a few helpers around CMake.
#
#   make demo   build, start a private Redis and calc-server, call it from C,
#               Ruby and Python, clean up
#   make install  build, then install library, header, CLI, examples,
#               pkg-config and CMake package files and man pages under
#               PREFIX (default /usr/local), staged under DESTDIR if set
#   make chaos  the long chaos test of both delivery modes (CHAOS_SECONDS each)
#   make test   the whole suite: -Werror build, ctest, then ctest again
#               under ASan+UBSan, the C test programs under valgrind and
#               under TSan, and a short libFuzzer run on request decoding
# Both install missing Debian packages first (scripts/install-deps.sh).
BUILD      ?= build
ASAN_BUILD ?= build-asan
VG_BUILD   ?= build-valgrind
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 600
CHAOS_SECONDS ?= 60
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=
PREFIX     ?= /usr/local
DESTDIR    ?=

.PHONY: all deps build install demo test test-fast test-asan test-valgrind test-tsan test-fuzz fuzz-build bench chaos fuzz clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DRRPC_WERROR=ON $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# The prefix is set at configure time too, so GNUInstallDirs picks the
# directories that suit it (e.g. lib/<multiarch> under /usr).
install: deps
	@cmake -S . -B $(BUILD) -DRRPC_WERROR=ON -DCMAKE_INSTALL_PREFIX=$(PREFIX) $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@DESTDIR=$(DESTDIR) cmake --install $(BUILD)
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

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

# ThreadSanitizer on the C test programs, which drive the threaded parts
# (server workers, heartbeats, the async client's loop thread); a reported
# race makes the program exit non-zero.
test-tsan: deps
	@cmake -S . -B $(TSAN_BUILD) -DRRPC_WERROR=ON -DRRPC_SANITIZE=thread \
	  -DCMAKE_BUILD_TYPE=Debug $(CMAKE_ARGS) >/dev/null
	@cmake --build $(TSAN_BUILD) -j $(JOBS)
	@cd $(TSAN_BUILD) && ctest --output-on-failure -j $(JOBS) -R '^test_'

# libFuzzer on request decoding (clang, ASan+UBSan), seeded from the
# conformance vectors: a short smoke run in `make test`, FUZZ_SECONDS in
# `make fuzz`.  New findings land in $(FUZZ_BUILD)/crash-*.
fuzz-build: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DRRPC_FUZZ=ON -DRRPC_SANITIZE=address,undefined \
	  -DRRPC_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_dispatch
	@/usr/bin/python3 tests/fuzz/make_corpus.py $(FUZZ_BUILD)/seeds >/dev/null
	@mkdir -p $(FUZZ_BUILD)/corpus

test-fuzz: fuzz-build
	@cd $(FUZZ_BUILD) && { ./fuzz_dispatch -max_total_time=20 -max_len=70000 \
	  -print_final_stats=1 corpus seeds >fuzz.log 2>&1; rc=$$?; \
	  grep -E '^(stat::number_of_executed_units|==|SUMMARY)' fuzz.log; \
	  [ $$rc -eq 0 ] || tail -40 fuzz.log; exit $$rc; }

fuzz: fuzz-build
	@cd $(FUZZ_BUILD) && ./fuzz_dispatch -max_total_time=$(FUZZ_SECONDS) -max_len=70000 \
	  -print_final_stats=1 corpus seeds

test: test-fast test-asan test-valgrind test-tsan test-fuzz

bench: build
	@scripts/bench.sh $(BUILD)

# The chaos test (docs/RELIABILITY.md): workers SIGKILLed, Redis restarted,
# workers cut off from Redis (blackhole, reset) and Redis stalled (SIGSTOP)
# under load, CHAOS_SECONDS in each delivery mode; prints the figures.
chaos: build
	@/usr/bin/python3 tests/chaos/chaos.py --bin-dir $(BUILD)/tests --mode both \
	  --seconds $(CHAOS_SECONDS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(VG_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
