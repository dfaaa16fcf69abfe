#!/usr/bin/env bash
# Thread-count invariance on each OpenBLAS x86 kernel family this CPU can
# run, not only the one OpenBLAS picks for it. OpenBLAS's own threading
# changes GEMM rounding with the thread count on its AVX2 kernels (Haswell,
# Zen), which layers/dense.c avoids by threading fixed output tiles of one
# serial call each; OPENBLAS_CORETYPE forces a family, and test_determinism
# and test_train_toy compare 1 and 2 threads bit for bit under each.
# Run from `make test` (BUILD from the environment, default build) or
# directly: tests/test_blas_kernels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}

flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
has() { [[ " $flags " == *" $1 "* ]]; }

ran=0
for ct in Sandybridge Haswell Zen SkylakeX; do
  case $ct in
    Sandybridge) has avx || continue ;;
    Haswell|Zen) { has avx2 && has fma; } || continue ;;
    SkylakeX) has avx512f || continue ;;
  esac
  for t in test_determinism test_train_toy; do
    if ! out=$(OPENBLAS_CORETYPE=$ct "$build/tests/$t" 2>&1); then
      echo "$out" | tail -20
      echo "test_blas_kernels: FAIL: $t with OPENBLAS_CORETYPE=$ct" >&2
      exit 1
    fi
  done
  ran=$((ran + 1))
  echo "test_blas_kernels: $ct: 1 and 2 threads bit-identical (test_determinism, test_train_toy)"
done
echo "test_blas_kernels: PASSED ($ran kernel families)"
