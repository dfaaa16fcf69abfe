# nn: build, test and run everything from here.
#   make          the library (build/libnn.a) and the examples
#   make test     install missing packages, build, run every test suite
#   make asan     the test suites under AddressSanitizer + UBSan
#   make mnist    install, fetch MNIST, build, train (ARGS="--epochs 1")
#   make bench    benchmarks (tests/bench/)
#   make deps     install missing Debian packages with apt-get

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
