#!/usr/bin/env bash
# layers/dense_gemv.c at every vector width of layers/simd.h this machine
# runs: built with tests/standalone/dense_gemv_driver.c for SSE (x86-64,
# 4 floats), AVX2 (x86-64-v3, 8) and AVX-512 (x86-64-v4, 16), with OpenMP
# on 2 threads, each build checked bit for bit against the plain loops
# (the library itself is built for one width, -march=native). A width the
# CPU lacks is skipped with a message; SSE runs everywhere x86-64 does.
# Run from `make test` (it picks up CC and the sanitizer flags of `make asan`,
# EXTRA_CFLAGS and EXTRA_LDFLAGS, from the environment) or directly.
set -euo pipefail
cd "$(dirname "$0")/.."

name=test_dense_gemv_widths
fail() { echo "$name: FAIL: $*" >&2; exit 1; }
CC=${CC:-cc}
san_cflags=${EXTRA_CFLAGS:-}
san_ldflags=${EXTRA_LDFLAGS:-}
tmp=$(mktemp -d /tmp/nn-dense-gemv-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

[ "$(uname -m)" = x86_64 ] || { echo "$name: skipped (not x86-64)"; exit 0; }
ran=0
for level in x86-64:sse x86-64-v3:avx2 x86-64-v4:avx512f; do
    arch=${level%%:*} flag=${level##*:}
    if [ "$flag" != sse ] && ! grep -qw "$flag" /proc/cpuinfo; then
        echo "$name: skipped $arch (the CPU has no $flag)"
        continue
    fi
    # Word splitting of the sanitizer flags is intended.
    # shellcheck disable=SC2086
    $CC -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -march="$arch" -fopenmp -Wall -Wextra -Werror -I. \
        $san_cflags layers/dense_gemv.c tests/standalone/dense_gemv_driver.c -o "$tmp/$arch" \
        $san_ldflags || fail "$arch: does not build"
    OMP_NUM_THREADS=2 "$tmp/$arch" || fail "$arch: the kernel differs from the reference"
    ran=$((ran + 1))
done
echo "$name: PASSED ($ran widths)"
