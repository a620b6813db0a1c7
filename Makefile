# Makefile -- the two README commands and a few helpers around CMake.
#
#   make demo   build, start a private Redis and calc-server, call it from C,
#               Ruby and Python, clean up
#   make install  build, then install library, header, CLI, examples,
#               pkg-config and CMake package files and man pages under
#               PREFIX (default /usr/local), staged under DESTDIR if set
#   make chaos  the long chaos test of both delivery modes, of reliable mode
#               sharded, of reliable mode on a 3-master Redis Cluster with
#               failovers, of reliable mode without effects (the grouped
#               commit) and of reliable mode over AMQP (CHAOS_SECONDS each)
#   make test   the whole suite: formatting checked, -Werror build, ctest, then ctest again
#               under ASan+UBSan, the C test programs under valgrind and
#               under TSan, and a short libFuzzer run on request decoding
#               and on a worker's whole path (15 s each)
# Both install missing Debian packages first (scripts/install-deps.sh).
BUILD      ?= build
ASAN_BUILD ?= build-asan
VG_BUILD   ?= build-valgrind
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 600
CHAOS_SECONDS ?= 60
JOBS       ?= $(shell nproc)
# The plain and ASan ctest passes run one more test than there are cores:
# their tests mostly wait (brokers starting, timeouts, peers' interpreters)
# -- on 2 cores -j3 used about one core on average and took 333 s instead
# of 435 s at -j2.  At -j4 the plain pass took 335-347 s, but Sentinel
# elections slowed to 10 s and scale_sentinel failed: not worth it.
TEST_JOBS  ?= $(shell echo $$(( $$(nproc) + 1 )))
CMAKE_ARGS ?=
PREFIX     ?= /usr/local
DESTDIR    ?=
# The Python with redis-py, unless given: scripts/find-python.sh (the first
# python3 on PATH that imports redis, else /usr/bin/python3).  Exported, so
# CMake (hence ctest), demo.sh and bench.sh use the same one.
ifeq ($(origin RRPC_PYTHON),undefined)
RRPC_PYTHON := $(shell scripts/find-python.sh)
endif
export RRPC_PYTHON

.PHONY: format format-check all deps build install demo test test-fast test-asan test-valgrind test-tsan test-fuzz fuzz-build bench chaos fuzz clean

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
	@cd $(BUILD) && ctest --output-on-failure -j $(TEST_JOBS)

test-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DRRPC_WERROR=ON -DRRPC_SANITIZE=address,undefined \
	  -DCMAKE_BUILD_TYPE=Debug $(CMAKE_ARGS) >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	@# The peers' own suites and their cross-language and hostile-input tests
	@# run no C code: the plain pass has run them.  Their AMQP suites and the
	@# language matrices (*interop*) run C only through rrpc call and
	@# calc-server, which the C tests run here too; they were a minute of it.
	@# So do the peers on Sentinel and Cluster (scale_sentinel and scale_cluster
	@# run rrpc's C side there).
	@cd $(ASAN_BUILD) && ctest --output-on-failure -j $(TEST_JOBS) -E \
	  '^(node_package|python_package|ruby_gem|peers_ruby_python|peers_faults|python_amqp|ruby_amqp|node_amqp|interop_c_ruby_python|interop_priority_progress|amqp_interop_matrix|scale_node_ha|scale_peers_ha)$$'

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

# libFuzzer (clang, ASan+UBSan) on request decoding (fuzz_dispatch) and on
# a worker's whole path from popped bytes to the commands it sends
# (fuzz_worker, tests/fuzz/README.md), seeded from the conformance vectors
# and tests/fuzz/regressions: a short smoke run in `make test`, FUZZ_SECONDS
# each in `make fuzz`.  New findings land in $(FUZZ_BUILD)/crash-*.
fuzz-build: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DRRPC_FUZZ=ON -DRRPC_SANITIZE=address,undefined \
	  -DRRPC_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_dispatch fuzz_worker
	@"$(RRPC_PYTHON)" tests/fuzz/make_corpus.py $(FUZZ_BUILD)/seeds >/dev/null
	@"$(RRPC_PYTHON)" tests/fuzz/make_corpus.py --worker $(FUZZ_BUILD)/worker-seeds >/dev/null
	@mkdir -p $(FUZZ_BUILD)/corpus $(FUZZ_BUILD)/worker-corpus

# One target for FUZZ_TIME seconds: its log in $(FUZZ_BUILD)/<target>.log,
# the stats printed, the log's tail on failure.  The worker target's own
# log lines (rrpc[...]) are the worker's, not findings.
fuzz_run = cd $(FUZZ_BUILD) && { ./$(1) -max_total_time=$(2) -max_len=70000 \
	  -print_final_stats=1 $(3) $(CURDIR)/tests/fuzz/regressions >$(1).log 2>&1; rc=$$?; \
	  echo "$(1):"; grep -E '^(stat::number_of_executed_units|==|SUMMARY|fuzz_worker:)' $(1).log; \
	  [ $$rc -eq 0 ] || grep -v '^rrpc\[' $(1).log | tail -40; exit $$rc; }

# 15 s each in `make test`: request decoding, then the worker's whole path.
test-fuzz: fuzz-build
	@$(call fuzz_run,fuzz_dispatch,15,corpus seeds)
	@$(call fuzz_run,fuzz_worker,15,worker-corpus worker-seeds)

fuzz: fuzz-build
	@$(call fuzz_run,fuzz_dispatch,$(FUZZ_SECONDS),corpus seeds)
	@$(call fuzz_run,fuzz_worker,$(FUZZ_SECONDS),worker-corpus worker-seeds)

# Formatting is part of the suite: every C file tracked by git must be as
# clang-format (.clang-format) writes it; `make format` rewrites them.
format-check: deps
	@files=$$(git ls-files '*.c' '*.h' 2>/dev/null || find src include tools examples tests bench -name '*.[ch]'); \
	  clang-format --dry-run --Werror $$files && echo "format-check: $$(echo $$files | wc -w) files formatted"

format:
	@git ls-files '*.c' '*.h' | xargs clang-format -i

test: format-check test-fast test-asan test-valgrind test-tsan test-fuzz

# The benchmarks of docs/PERFORMANCE.md, each on private Redis servers of its
# own, printing markdown tables: scripts/bench.sh (rrpc against the floor, and
# reliable mode), scripts/bench-baseline.sh (what newer features cost the
# calls that do not use them) and scripts/bench-cluster.sh (calc-server on a
# 3-master Redis Cluster, sharded, against one Redis), then
# scripts/bench-amqp.sh (rrpc over RabbitMQ against the AMQP floor, on a
# private rabbitmq-server).  About 12 minutes;
# RRPC_BENCH_SECONDS and RRPC_BENCH_ROUNDS shorten it.
bench: build
	@scripts/bench.sh $(BUILD)
	@scripts/bench-baseline.sh $(BUILD)
	@scripts/bench-cluster.sh $(BUILD)
	@scripts/bench-amqp.sh $(BUILD)

# The chaos test (docs/RELIABILITY.md): workers SIGKILLed, Redis restarted,
# workers cut off from Redis (blackhole, reset) and Redis stalled (SIGSTOP)
# under load, CHAOS_SECONDS in each delivery mode, reliable mode sharded, and
# reliable mode on a 3-master Cluster (worker kills, master failovers:
# CLUSTER FAILOVER and SIGKILL of a master), reliable mode with a worker that
# adds no effect (the grouped commit; one Redis and sharded), and reliable mode over AMQP on a
# private RabbitMQ node (worker kills; worker kills and broker restarts;
# worker kills and the node killed with kill -9 and started again);
# prints the figures.
chaos: build
	@"$(RRPC_PYTHON)" tests/chaos/chaos.py --bin-dir $(BUILD)/tests --mode all \
	  --seconds $(CHAOS_SECONDS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(VG_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
