#!/usr/bin/env bash
# The convolution's GEMM tiles (layers/conv_gemm.c, with the passes of
# layers/conv_core.c around them) at every vector width of layers/simd.h this
# machine runs: built with tests/standalone/conv_nchw_driver.c for SSE
# (x86-64, 4 floats), AVX2 (x86-64-v3, 8) and AVX-512 (x86-64-v4, 16), with
# OpenMP, each build checked against the plain loops of
# layers/conv_reference.c, channels_first against channels_last and 1
# thread against 2 (the library itself is built for one width,
# -march=native). The rest of the library comes from $BUILD/libnn.a. A width
# the CPU lacks is skipped with a message.
# Run from `make test` (it picks up CC and the sanitizer flags of `make asan`,
# EXTRA_CFLAGS and EXTRA_LDFLAGS, from the environment) or directly.
set -euo pipefail
cd "$(dirname "$0")/.."

name=test_conv_widths
fail() { echo "$name: FAIL: $*" >&2; exit 1; }
CC=${CC:-cc}
build=${BUILD:-build}
san_cflags=${EXTRA_CFLAGS:-}
san_ldflags=${EXTRA_LDFLAGS:-}
[ -f "$build/libnn.a" ] || fail "$build/libnn.a is missing: run make first"
libs=$(pkg-config --libs openblas cmocka zlib libcjson libpng 2>/dev/null || true)
tmp=$(mktemp -d /tmp/nn-conv-widths-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

[ "$(uname -m)" = x86_64 ] || { echo "$name: skipped (not x86-64)"; exit 0; }
ran=0
for level in x86-64:sse x86-64-v3:avx2 x86-64-v4:avx512f; do
    arch=${level%%:*} flag=${level##*:}
    if [ "$flag" != sse ] && ! grep -qw "$flag" /proc/cpuinfo; then
        echo "$name: skipped $arch (the CPU has no $flag)"
        continue
    fi
    # Word splitting of the flags is intended.
    # shellcheck disable=SC2086
    $CC -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -march="$arch" -fopenmp -fno-math-errno -Wall -Wextra \
        -Werror -I. $san_cflags layers/conv_core.c layers/conv_gemm.c layers/conv_winograd.c \
        layers/conv_reference.c tests/standalone/conv_nchw_driver.c -o "$tmp/$arch" \
        "$build/libnn.a" $san_ldflags $libs -lm || fail "$arch: does not build"
    "$tmp/$arch" || fail "$arch: the kernels differ from the reference"
    ran=$((ran + 1))
done
echo "$name: PASSED ($ran widths)"
