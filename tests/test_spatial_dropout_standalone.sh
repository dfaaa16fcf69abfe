#!/usr/bin/env bash
# The spatial dropout kernels travel alone: layers/spatial_dropout_kernels.h
# and .c are copied into an empty directory with tests/standalone/sd_driver.c
# and built there the way a user would build them, with -std=c11 -Wall
# -Wextra -Werror, no -I into the repository, no libnn, no OpenBLAS: once
# with -fopenmp (and -march=native, the library's vector width) and once
# without OpenMP (at the compiler's default vector width). For each build:
#  1. the pair includes no header but its own and the C library's;
#  2. nm: no object references an nn_ or tensor_ symbol that the pair does
#     not define, and the pair defines no global symbol outside nn_sd_;
#  3. the driver runs and checks the fast kernels against the references,
#     rate 0, the drop fraction, an error code and its message.
# Run from `make test` (it picks up CC and the sanitizer flags of `make asan`,
# EXTRA_CFLAGS and EXTRA_LDFLAGS, from the environment) or directly:
# tests/test_spatial_dropout_standalone.sh
set -euo pipefail
cd "$(dirname "$0")/.."

name=test_spatial_dropout_standalone
fail() { echo "$name: FAIL: $*" >&2; exit 1; }

tmp=$(mktemp -d /tmp/nn-sd-standalone-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
CC=${CC:-cc}
san_cflags=${EXTRA_CFLAGS:-}
san_ldflags=${EXTRA_LDFLAGS:-}

cp layers/spatial_dropout_kernels.h layers/spatial_dropout_kernels.c tests/standalone/sd_driver.c "$tmp/"
cd "$tmp"

# 1. Includes: only the pair's own header and <...> headers of the C library
#    (and OpenMP's).
bad=$(grep -hE '^[[:space:]]*#[[:space:]]*include' spatial_dropout_kernels.h spatial_dropout_kernels.c |
      grep -vE '#[[:space:]]*include[[:space:]]*("spatial_dropout_kernels\.h"|<(stdarg|stdint|stdio|string|omp)\.h>)' || true)
[ -z "$bad" ] || fail "the pair includes more than the C library: $bad"

build() { # build LABEL FLAGS...
    local label=$1
    shift
    mkdir -p "$label"
    # Word splitting of the flags is intended.
    # shellcheck disable=SC2086
    $CC -std=c11 -O2 -Wall -Wextra -Werror "$@" $san_cflags -c spatial_dropout_kernels.c \
        -o "$label/kernels.o" || fail "$label: spatial_dropout_kernels.c does not compile alone"
    # shellcheck disable=SC2086
    $CC -std=c11 -O2 -Wall -Wextra -Werror "$@" $san_cflags -c sd_driver.c -o "$label/driver.o" ||
        fail "$label: sd_driver.c does not compile"

    # 2. Symbols.
    local defined undefined stray foreign
    defined=$(nm --defined-only -g "$label/kernels.o" | awk 'NF == 3 { print $3 }' | sort -u)
    [ -n "$defined" ] || fail "$label: nm finds no symbol in kernels.o"
    foreign=$(printf '%s\n' "$defined" | grep -v '^nn_sd_' || true)
    [ -z "$foreign" ] || fail "$label: the pair defines global symbols outside nn_sd_: $foreign"
    undefined=$(nm -u "$label/kernels.o" "$label/driver.o" | awk '$1 == "U" { print $2 }' |
                grep -E '^(nn_|tensor_)' | sort -u)
    stray=$(comm -23 <(printf '%s\n' "$undefined" | sed '/^$/d') <(printf '%s\n' "$defined"))
    [ -z "$stray" ] || fail "$label: the objects reference nn symbols the pair does not define: $stray"
    nm -u "$label/driver.o" | grep -q ' nn_sd_forward_reference$' ||
        fail "$label: nm does not see the driver's calls into the pair; the symbol check is broken"

    # shellcheck disable=SC2086
    $CC "$@" "$label/driver.o" "$label/kernels.o" -o "$label/sd_driver" $san_ldflags -lm ||
        fail "$label: the driver does not link with the pair alone"

    # 3. Behaviour.
    "./$label/sd_driver" || fail "$label: the driver found a difference (see above)"
}

build openmp -fopenmp -march=native
build plain
echo "$name: PASSED (the pair builds and runs alone, with and without OpenMP)"
