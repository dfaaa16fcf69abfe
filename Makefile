# nn: build, test and run everything from here.
#   make          the library (build/libnn.a) and the examples
#   make test     install missing packages, build, run every test suite
#   make asan     the test suites under AddressSanitizer + UBSan
#   make mnist    install, fetch MNIST, build, train (ARGS="--epochs 1")
#   make bench    benchmarks (tests/bench/)
#   make deps     install missing Debian packages with apt-get

SHELL   := /bin/bash
CC      ?= gcc
BUILD   ?= build
PKGS    := openblas cmocka zlib libcjson libpng
DEBS    := libopenblas-openmp-dev libcmocka-dev libcjson-dev zlib1g-dev libpng-dev pkg-config
OPT     ?= -O2 -march=native
CFLAGS  := -std=c11 -D_POSIX_C_SOURCE=200809L $(OPT) -g -fopenmp -Wall -Wextra -I. \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(EXTRA_CFLAGS)
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
LDFLAGS := -fopenmp $(EXTRA_LDFLAGS)

SRC     := $(wildcard tensor/*.c nn/*.c layers/*.c optim/*.c)
OBJ     := $(SRC:%.c=$(BUILD)/obj/%.o)
LIB     := $(BUILD)/libnn.a
TESTS   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
EXAMPLES := $(patsubst examples/%.c,$(BUILD)/examples/%,$(wildcard examples/*.c))
BENCHES := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(wildcard tests/bench/*.c))
HEADERS := $(wildcard tensor/*.h nn/*.h layers/*.h optim/*.h)

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all lib test run-tests asan deps mnist bench clean examples mnist-data
all: $(LIB) $(EXAMPLES)
lib: $(LIB)
examples: $(EXAMPLES)

$(BUILD)/obj/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/tests/%: tests/%.c tests/*.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< -o $@ $(LIB) $(LDFLAGS) $(LDLIBS)

$(BUILD)/examples/%: examples/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< -o $@ $(LIB) $(LDFLAGS) $(LDLIBS)

$(BUILD)/bench/%: tests/bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< -o $@ $(LIB) $(LDFLAGS) $(LDLIBS)

deps:
	@missing=""; for p in $(DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# Each suite runs from the repository root (fixtures are read from tests/).
run-tests: $(TESTS) $(EXAMPLES)
	@fail=0; for t in $(TESTS); do echo "== $$t"; $$t || fail=1; done; \
	if [ $$fail = 0 ]; then echo "ALL TEST SUITES PASSED"; else echo "SOME TEST SUITES FAILED"; exit 1; fi

test: deps
	$(MAKE) --no-print-directory run-tests

asan: deps
	$(MAKE) --no-print-directory BUILD=build/asan OPT="-O1 -fno-omit-frame-pointer" \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" run-tests

clean:
	rm -rf $(BUILD)

# Benchmarks: `make bench` runs every tests/bench/bench_*.c; `make bench-NAME`
# runs one, then its PyTorch counterpart tests/bench/torch_NAME.py when
# Debian's python3-torch is installed (skipped with a message otherwise).
PYTHON ?= /usr/bin/python3
bench: $(patsubst tests/bench/bench_%.c,bench-%,$(wildcard tests/bench/bench_*.c))
bench-%: $(BUILD)/bench/bench_%
	$<
	@if [ -f tests/bench/torch_$*.py ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then $(PYTHON) tests/bench/torch_$*.py; \
	  else echo "skipped tests/bench/torch_$*.py: PyTorch (python3-torch) is not installed"; fi; fi

# MNIST: fetched once into .cache/ (git-ignored), checked by MD5.
MNIST_DIR := .cache/mnist
mnist-data:
	@sh examples/fetch_mnist.sh $(MNIST_DIR)

mnist: deps
	@$(MAKE) --no-print-directory mnist-data
	@$(MAKE) --no-print-directory $(BUILD)/examples/mnist
	$(BUILD)/examples/mnist --data $(MNIST_DIR) $(ARGS)

# Fuzzing (libFuzzer, clang): `make fuzz` runs every tests/fuzz/fuzz_*.c for
# FUZZ_RUNS executions each, starting from its committed seed corpus in
# tests/fuzz/corpus/NAME (copied, so the committed corpus is not changed);
# FUZZ_TIME=S bounds each harness by seconds instead (the CI budget).
FUZZ_DEBS := clang libclang-rt-14-dev libomp-dev
FUZZ_RUNS ?= 200000
FUZZ_TIME ?=
FUZZERS := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
.PHONY: fuzz fuzz-deps fuzz-run
fuzz-deps:
	@$(MAKE) --no-print-directory deps DEBS="$(FUZZ_DEBS)"

fuzz: deps fuzz-deps
	@$(MAKE) --no-print-directory BUILD=build/fuzz CC=clang OPT="-O1 -fno-omit-frame-pointer" \
	  EXTRA_CFLAGS="-fsanitize=fuzzer-no-link,address,undefined -Wno-unknown-pragmas" fuzz-run

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(LIB)
	$(CC) $(CFLAGS) -fsanitize=fuzzer,address,undefined $< -o $@ $(LIB) $(LDFLAGS) $(LDLIBS)

fuzz-run: $(FUZZERS)
	@for f in $(FUZZERS); do name=$${f#build/fuzz/fuzz_}; \
	  work=build/fuzz/corpus-$$name; rm -rf $$work; mkdir -p $$work; \
	  cp tests/fuzz/corpus/$$name/* $$work/ 2>/dev/null; \
	  echo "== fuzz $$name"; \
	  OMP_NUM_THREADS=1 ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1 \
	    $$f $$work -runs=$(FUZZ_RUNS) $(if $(FUZZ_TIME),-max_total_time=$(FUZZ_TIME)) \
	    -max_len=4096 -rss_limit_mb=4096 -malloc_limit_mb=4096 -print_final_stats=1 2>&1 \
	    | grep -E "stat::number_of_executed_units|ERROR|SUMMARY|crash-|Done" ; \
	  [ $${PIPESTATUS[0]} = 0 ] || { echo "fuzz $$name FAILED"; exit 1; }; \
	done; echo "ALL FUZZERS PASSED"
