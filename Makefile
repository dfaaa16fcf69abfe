# nn: build, test and run everything from here.
#   make          the library (build/libnn.a) and the examples
#   make test     install missing packages, build, run every test suite
#   make asan     the test suites under AddressSanitizer + UBSan
#   make mnist    install, fetch MNIST, build, train (ARGS="--epochs 1")
#   make fashion  the residual network on Fashion-MNIST (Debian dataset-fashion-mnist)
#   make mnist-mpi NP=2   MNIST over NP processes with mpirun (installs OpenMPI)
#   make mpi      libnn_mpi.a and the MPI-enabled examples (installs OpenMPI)
#   make bench    benchmarks (tests/bench/)
#   make deps     install missing Debian packages with apt-get

SHELL   := /bin/bash
CC      ?= gcc
BUILD   ?= build
PKGS    := openblas cmocka zlib libcjson libpng
DEBS    := libopenblas-openmp-dev libcmocka-dev libcjson-dev zlib1g-dev libpng-dev pkg-config
OPT     ?= -O2 -march=native
# -fno-math-errno: nothing reads errno after a math call, and without it a
# sqrtf in a loop (Adam's update) is a call that stops the loop vectorising.
CFLAGS  := -std=c11 -D_POSIX_C_SOURCE=200809L $(OPT) -g -fopenmp -fno-math-errno -Wall -Wextra -I. \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(EXTRA_CFLAGS)
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
LDFLAGS := -fopenmp $(EXTRA_LDFLAGS)

# nn/mpi.c is the one file that needs MPI: it goes into its own library,
# libnn_mpi.a, built with mpicc's flags whenever mpicc is found (see "MPI"
# below); the core library never includes <mpi.h>.
SRC     := $(filter-out nn/mpi.c,$(wildcard tensor/*.c layers/*.c optim/*.c nn/*.c nn/io/*.c))
OBJ     := $(SRC:%.c=$(BUILD)/obj/%.o)
LIB     := $(BUILD)/libnn.a
TESTS   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
SCRIPT_TESTS := $(wildcard tests/test_*.sh)
EXAMPLES := $(patsubst examples/%.c,$(BUILD)/examples/%,$(wildcard examples/*.c))
BENCHES := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(wildcard tests/bench/*.c))
HEADERS := $(wildcard tensor/*.h layers/*.h optim/*.h nn/*.h nn/io/*.h)

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# MPI, optional: found when mpicc is on the PATH (OpenMPI's libopenmpi-dev).
MPICC    := $(shell command -v mpicc 2>/dev/null)
MPI_DEBS := libopenmpi-dev openmpi-bin
MPI_LIB  := $(if $(MPICC),$(BUILD)/libnn_mpi.a)

.PHONY: all lib test run-tests asan deps mnist bench clean examples mnist-data
all: $(LIB) $(MPI_LIB) $(EXAMPLES)
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

# ---- MPI (nn/mpi.h) ----
# With mpicc found, nn/mpi.c becomes libnn_mpi.a and examples/mnist.c is
# built with NN_WITH_MPI against it: the same program then trains over
# processes when mpirun starts it, and as before when started on its own.
# $(BUILD)/gen/mpi.flags records which, so installing OpenMPI rebuilds it.
# As root in a container OpenMPI needs: OMPI_ALLOW_RUN_AS_ROOT=1 and
# OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 (mpirun refuses root otherwise),
# --oversubscribe (more ranks than the cores it counts), and the shared-
# memory transport without single-copy (vader's CMA/XPMEM need ptrace
# rights a container lacks): --mca btl self,vader
# --mca btl_vader_single_copy_mechanism none. --bind-to none lets a rank's
# OpenMP threads use more than the one core mpirun binds it to by default.
MPI_CFLAGS := $(if $(MPICC),$(shell $(MPICC) --showme:compile))
MPI_LIBS   := $(if $(MPICC),$(shell $(MPICC) --showme:link))
MPIRUN_ENV := OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
MPIRUN_FLAGS := --oversubscribe --bind-to none --mca btl self,vader --mca btl_vader_single_copy_mechanism none
NP ?= 2
.PHONY: FORCE mpi mnist-mpi
FORCE:
$(BUILD)/gen/mpi.flags: FORCE
	@mkdir -p $(dir $@)
	@echo "$(MPICC) $(MPI_CFLAGS) $(MPI_LIBS)" | cmp -s - $@ || echo "$(MPICC) $(MPI_CFLAGS) $(MPI_LIBS)" > $@

$(BUILD)/obj/nn/mpi.o: nn/mpi.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(MPI_CFLAGS) -c $< -o $@

$(BUILD)/libnn_mpi.a: $(BUILD)/obj/nn/mpi.o
	@rm -f $@
	ar rcs $@ $^

ifneq ($(MPICC),)
$(BUILD)/examples/mnist: examples/mnist.c $(LIB) $(MPI_LIB) $(BUILD)/gen/mpi.flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DNN_WITH_MPI $(MPI_CFLAGS) $< -o $@ $(MPI_LIB) $(LIB) $(LDFLAGS) $(MPI_LIBS) $(LDLIBS)
else
$(BUILD)/examples/mnist: $(BUILD)/gen/mpi.flags
endif

mpi: deps
	@command -v mpicc >/dev/null 2>&1 || $(MAKE) --no-print-directory deps DEBS="$(MPI_DEBS)"
	@$(MAKE) --no-print-directory $(BUILD)/libnn_mpi.a $(BUILD)/examples/mnist

# `make mnist-mpi NP=4 ARGS="--epochs 1"`: examples/mnist.c over NP ranks.
mnist-mpi: mpi
	@$(MAKE) --no-print-directory mnist-data
	$(MPIRUN_ENV) mpirun -np $(NP) $(MPIRUN_FLAGS) $(BUILD)/examples/mnist --data $(MNIST_DIR) $(ARGS)

$(BUILD)/bench/%: tests/bench/%.c tests/bench/*.h $(LIB)
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
	@fail=0; for t in $(TESTS) $(SCRIPT_TESTS); do echo "== $$t"; $$t || fail=1; done; \
	if [ $$fail = 0 ]; then echo "ALL TEST SUITES PASSED"; else echo "SOME TEST SUITES FAILED"; exit 1; fi

# MNIST too: test_onnx compares ONNX Runtime with nn on trained networks and
# real test images (skipped, saying why, when the fetch fails).
test: deps onnx-deps
	@$(MAKE) --no-print-directory mnist-data || \
	  echo "test: could not fetch MNIST; the tests that need it will be skipped"
	$(MAKE) --no-print-directory run-tests

# The consumers that tests/test_onnx.c checks exported ONNX files with, each
# optional (the suite skips its part, saying why, when one is missing):
# Debian's python3-onnx (the checker) and libonnx-testdata (operator
# conformance fixtures), and ONNX Runtime from npm's onnxruntime-node (Debian
# has no ONNX Runtime), installed into ONNXRUNTIME_DIR (git-ignored). A
# failed install (offline, no node) is reported and does not stop the tests.
ONNX_DEBS ?= python3-onnx libonnx-testdata
ONNXRUNTIME_DIR ?= .cache/onnxruntime
ONNXRUNTIME_NPM ?= onnxruntime-node@1.20.1
export NN_ONNXRUNTIME_DIR := $(ONNXRUNTIME_DIR)
.PHONY: onnx-deps
onnx-deps:
	@$(MAKE) --no-print-directory deps DEBS="$(ONNX_DEBS)" || \
	  echo "onnx-deps: could not install $(ONNX_DEBS); their tests will be skipped"
	@if [ ! -d "$(ONNXRUNTIME_DIR)/node_modules/onnxruntime-node" ]; then \
	  if command -v npm >/dev/null 2>&1; then \
	    mkdir -p "$(ONNXRUNTIME_DIR)" && \
	    (cd "$(ONNXRUNTIME_DIR)" && npm install --ignore-scripts --no-audit --no-fund \
	       --loglevel=error $(ONNXRUNTIME_NPM) >/dev/null) || \
	    echo "onnx-deps: npm install $(ONNXRUNTIME_NPM) failed; the runtime tests will be skipped"; \
	  else echo "onnx-deps: npm not found; the ONNX Runtime tests will be skipped"; fi; \
	fi

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

# The default network's spec, examples/mnist_cnn.txt, is compiled into the
# program as a C string (one source of truth for the file and the binary).
# The shared training loop is a header used by the program and its test.
$(BUILD)/gen/mnist_cnn.inc: examples/mnist_cnn.txt
	@mkdir -p $(dir $@)
	sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $< > $@
$(BUILD)/examples/mnist: $(BUILD)/gen/mnist_cnn.inc examples/mnist_train.h
$(BUILD)/examples/mnist: CFLAGS += -I$(BUILD)/gen
$(BUILD)/tests/test_mnist_train: examples/mnist_train.h

# Fashion-MNIST with the same program: Debian's dataset-fashion-mnist holds
# it as gzip IDX files (installed when missing); the network is the residual
# network of examples/fashion_resnet.txt, trained with 1-pixel shifts for 19
# epochs, the learning rate divided by 10 after 15.
FASHION_DIR   ?= /usr/share/datasets/fashion-mnist
FASHION_MODEL ?= examples/fashion_resnet.txt
FASHION_FLAGS := --shift 1 --epochs 19 --lr-step 15 --lr-decay 0.1
.PHONY: fashion
fashion: deps
	@$(MAKE) --no-print-directory deps DEBS=dataset-fashion-mnist
	@$(MAKE) --no-print-directory $(BUILD)/examples/mnist
	$(BUILD)/examples/mnist --data $(FASHION_DIR) --model $(FASHION_MODEL) $(FASHION_FLAGS) $(ARGS)

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
	  EXTRA_CFLAGS="-fsanitize=fuzzer-no-link,address,undefined -Wno-unknown-pragmas -Wno-pass-failed" fuzz-run

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

# Installing nn as a library. `make install PREFIX=/usr/local` (DESTDIR=...
# stages into a package root) installs the headers with the source layout
# under one folder named for the library (PREFIX/include/nn/{tensor,optim,
# layers,nn}/, so `#include <nn/nn.h>` works with -IPREFIX/include/nn, which
# is what `pkg-config --cflags nn` gives), libnn.a, the shared libnn.so.X.Y.Z with its soname
# link libnn.so.X and the libnn.so link, and nn.pc for pkg-config.
# `make uninstall` with the same PREFIX/DESTDIR removes those files again.
# The version has one source, the NN_VERSION_* macros of nn/nn.h; the soname
# carries the major version only (see the README's versioning policy).
# The shared library is built from its own -fPIC objects in $(BUILD)/pic, so
# the static library's objects are not changed by it.
PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
NN_VERSION_MAJOR := $(shell sed -n 's/^.define NN_VERSION_MAJOR  *\([0-9][0-9]*\).*/\1/p' nn/nn.h)
NN_VERSION_MINOR := $(shell sed -n 's/^.define NN_VERSION_MINOR  *\([0-9][0-9]*\).*/\1/p' nn/nn.h)
NN_VERSION_PATCH := $(shell sed -n 's/^.define NN_VERSION_PATCH  *\([0-9][0-9]*\).*/\1/p' nn/nn.h)
NN_VERSION := $(NN_VERSION_MAJOR).$(NN_VERSION_MINOR).$(NN_VERSION_PATCH)
NN_SONAME  := libnn.so.$(NN_VERSION_MAJOR)
NN_SHLIB   := $(BUILD)/libnn.so.$(NN_VERSION)
PIC_OBJ    := $(SRC:%.c=$(BUILD)/pic/%.o)
# What the library itself links against: the build's packages minus cmocka.
# The objects are compiled by gcc with -fopenmp, so they call libgomp.
NN_LIB_PKGS := $(filter-out cmocka,$(PKGS))
NN_LIB_LIBS := $(shell pkg-config --libs $(NN_LIB_PKGS) 2>/dev/null) -lgomp -lm
NN_HEADER_DIRS := $(sort $(dir $(HEADERS)))
NN_INCDIR := $(INCLUDEDIR)/nn
# The libraries libnn itself links, for static linking (Libs.private). They
# are listed here rather than as Requires.private, which would make
# `pkg-config --cflags nn` add their include paths to every user's build
# although no installed header includes them.
NN_LIB_LIBS_PRIVATE := $(shell pkg-config --libs $(NN_LIB_PKGS) 2>/dev/null)

.PHONY: shared install uninstall
shared: $(NN_SHLIB)

$(BUILD)/pic/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -c $< -o $@

# --no-undefined: a missing dependency fails here, not in a user's link.
$(NN_SHLIB): $(PIC_OBJ)
	@test -n "$(NN_VERSION_MAJOR)" -a -n "$(NN_VERSION_MINOR)" -a -n "$(NN_VERSION_PATCH)" || \
	  { echo "cannot read NN_VERSION_MAJOR/MINOR/PATCH from nn/nn.h"; exit 1; }
	$(CC) -shared -Wl,-soname,$(NN_SONAME) -Wl,--no-undefined -Wl,--as-needed -o $@ $^ \
	  $(LDFLAGS) $(NN_LIB_LIBS)

install: $(LIB) $(NN_SHLIB) $(MPI_LIB)
	install -d $(addprefix $(DESTDIR)$(NN_INCDIR)/,$(NN_HEADER_DIRS)) \
	  $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR)
	@for h in $(HEADERS); do install -m 644 $$h $(DESTDIR)$(NN_INCDIR)/$$h || exit 1; done
	install -m 644 $(LIB) $(DESTDIR)$(LIBDIR)/libnn.a
	$(if $(MPI_LIB),install -m 644 $(MPI_LIB) $(DESTDIR)$(LIBDIR)/libnn_mpi.a)
	install -m 755 $(NN_SHLIB) $(DESTDIR)$(LIBDIR)/libnn.so.$(NN_VERSION)
	ln -sf libnn.so.$(NN_VERSION) $(DESTDIR)$(LIBDIR)/$(NN_SONAME)
	ln -sf $(NN_SONAME) $(DESTDIR)$(LIBDIR)/libnn.so
	@printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' '' \
	  'Name: nn' \
	  'Description: small deep-learning framework in C (conv2d, SpatialDropout2D, dense, Adam)' \
	  'Version: $(NN_VERSION)' \
	  'Cflags: -I$${includedir}/nn' \
	  'Libs: -L$${libdir} -lnn' \
	  'Libs.private: $(NN_LIB_LIBS_PRIVATE) -lgomp -lm' > $(DESTDIR)$(PKGCONFIGDIR)/nn.pc
	@echo "installed nn $(NN_VERSION) into $(DESTDIR)$(PREFIX)"

uninstall:
	rm -f $(addprefix $(DESTDIR)$(NN_INCDIR)/,$(HEADERS))
	rm -f $(DESTDIR)$(LIBDIR)/libnn.a $(DESTDIR)$(LIBDIR)/libnn_mpi.a $(DESTDIR)$(LIBDIR)/libnn.so.$(NN_VERSION) \
	  $(DESTDIR)$(LIBDIR)/$(NN_SONAME) $(DESTDIR)$(LIBDIR)/libnn.so $(DESTDIR)$(PKGCONFIGDIR)/nn.pc
	@for d in $$(printf '%s\n' $(NN_HEADER_DIRS) | sort -r) ''; do \
	  rmdir $(DESTDIR)$(NN_INCDIR)/$$d 2>/dev/null || true; done

# The dropout study (examples/dropout_study.c, "Why spatial dropout" in the
# README): trains a small CNN without dropout, with element-wise and with
# spatial dropout on small MNIST subsets over several seeds, then draws the
# learning curves with gnuplot. About 15 minutes on 2 cores; a reduced
# version in about 2: `make study ARGS=--quick`. Output in STUDY_OUT:
# results.jsonl, curves.dat, curves.png, maps.png.
STUDY_OUT ?= build/study
.PHONY: study
study: deps
	@command -v gnuplot >/dev/null 2>&1 || $(MAKE) --no-print-directory deps DEBS=gnuplot-nox
	@$(MAKE) --no-print-directory mnist-data
	@$(MAKE) --no-print-directory $(BUILD)/examples/dropout_study
	$(BUILD)/examples/dropout_study --data $(MNIST_DIR) --out $(STUDY_OUT) $(ARGS)
	gnuplot -e "dir='$(STUDY_OUT)'" examples/plot_study.gp
	@echo "pictures: $(STUDY_OUT)/curves.png $(STUDY_OUT)/maps.png"
$(BUILD)/examples/dropout_study: examples/dropout_study_stats.h examples/dropout_study_png.h \
  examples/dropout_study_maps.h examples/dropout_study_util.h

# `make valgrind`: every test suite and `mnist --epochs 1 --limit 512` under memcheck, built -O2 for x86-64-v3 (at -O1 gcc fuses no scalar multiply-add, so the last bits of some results would differ from the files that nn 0.1.0 wrote, which test_checkpoint compares) (valgrind cannot decode AVX-512), OpenBLAS on its AVX kernels (its AVX2 ones are slow under valgrind and change results with the thread count); about 5 min, not part of `make test`.
VG_BUILD ?= build/valgrind
VG_ENV   := OMP_WAIT_POLICY=passive OPENBLAS_CORETYPE=Sandybridge
VALGRIND := valgrind -q --leak-check=full --show-possibly-lost=no --error-exitcode=9 \
            --errors-for-leak-kinds=definite
.PHONY: valgrind valgrind-run
valgrind: deps
	@command -v valgrind >/dev/null 2>&1 || $(MAKE) --no-print-directory deps DEBS=valgrind
	@$(MAKE) --no-print-directory mnist-data
	@$(MAKE) --no-print-directory BUILD=$(VG_BUILD) OPT="-O2 -g -march=x86-64-v3" valgrind-run

valgrind-run: $(TESTS) $(BUILD)/examples/mnist
	@fail=0; for t in $(TESTS) "$(BUILD)/examples/mnist --data $(MNIST_DIR) --epochs 1 --limit 512 --quiet"; do \
	  echo "== valgrind $$t"; log=$${t%% *}.valgrind.out; start=$$SECONDS; \
	  $(VG_ENV) $(VALGRIND) $$t >$$log 2>&1 || { fail=1; cat $$log; }; \
	  echo "   $$(grep -E '^\[  (PASSED|FAILED)  \]|^final test' $$log | tail -1) ($$((SECONDS - start)) s)"; \
	done; \
	if [ $$fail = 0 ]; then echo "ALL CLEAN UNDER VALGRIND"; else echo "VALGRIND FOUND ERRORS"; exit 1; fi

# The second dropout study (examples/dropout_study2.c, "Why spatial dropout"
# in the README): MNIST and Fashion-MNIST upsampled x1, x2, x4 (28, 56, 112
# px); how much dropout noise survives the next convolution as neighbouring
# activations grow more correlated, and test accuracy and the train-test gap
# without dropout, with element-wise and with spatial dropout, paired over
# seeds, and the noise at every stage after the dropout. About 8 minutes on 2
# otherwise idle cores (26 with other work on them); `make study2 ARGS=--quick`
# about 1.
# Output in STUDY2_OUT: tables.md (every table the README quotes),
# results.jsonl, noise.dat, stages.dat, accuracy.dat, noise.png, stages.png,
# accuracy.png, maps.png.
STUDY2_OUT ?= build/study2
.PHONY: study2
study2: deps
	@command -v gnuplot >/dev/null 2>&1 || $(MAKE) --no-print-directory deps DEBS=gnuplot-nox
	@$(MAKE) --no-print-directory deps DEBS=dataset-fashion-mnist
	@$(MAKE) --no-print-directory mnist-data
	@$(MAKE) --no-print-directory $(BUILD)/examples/dropout_study2
	$(BUILD)/examples/dropout_study2 --data $(MNIST_DIR) --fashion $(FASHION_DIR) --out $(STUDY2_OUT) $(ARGS)
	gnuplot -e "dir='$(STUDY2_OUT)'" examples/plot_study2.gp
	@echo "tables: $(STUDY2_OUT)/tables.md; pictures: $(STUDY2_OUT)/noise.png $(STUDY2_OUT)/stages.png $(STUDY2_OUT)/accuracy.png $(STUDY2_OUT)/maps.png"
$(BUILD)/examples/dropout_study2: examples/dropout_study_stats.h examples/dropout_study_png.h \
  examples/dropout_study_maps.h examples/dropout_study_util.h
