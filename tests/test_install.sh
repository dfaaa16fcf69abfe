#!/usr/bin/env bash
# Installation test: nn as a library, used the way a user uses it.
#  1. `make install` into a temporary prefix; the expected files are there,
#     the shared library has the right soname, nn.pc has the right version.
#  2. tests/install/hello.c is copied out of the tree and built with only
#     `pkg-config --cflags --libs nn` against the shared library (run with
#     LD_LIBRARY_PATH) and, with `pkg-config --static`, against libnn.a.
#     Both must run, print the version nn.pc announces, agree line by line,
#     and write .npy/.safetensors files (numpy reads the .npy when it is
#     installed). examples/mnist_min.c is built the same way (shared) and
#     trains one epoch on a tiny MNIST-format set the test writes.
#  3. DESTDIR staging puts the files under DESTDIR and nn.pc names the real
#     prefix.
#  4. `make uninstall` leaves no file or link behind in either prefix.
# Run from `make test` (it picks up BUILD and the sanitizer flags of `make
# asan` from the environment) or directly: tests/test_install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/idx_set.sh   # idx_set: the tiny data set of the example run below

fail() { echo "test_install: FAIL: $*" >&2; exit 1; }

tmp=$(mktemp -d /tmp/nn-install-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
CC=${CC:-cc}
# Set by `make asan` on its command line, so present in our environment.
san_cflags=${EXTRA_CFLAGS:-}
san_ldflags=${EXTRA_LDFLAGS:-}

version=$(sed -n 's/^#define NN_VERSION_STRING "\(.*\)"/\1/p' nn/nn.h)
major=${version%%.*}
[ -n "$version" ] || fail "cannot read NN_VERSION_STRING from nn/nn.h"

run_make() {
    local log=$tmp/make.log
    if ! make --no-print-directory -j2 "$@" >"$log" 2>&1; then
        cat "$log" >&2
        fail "make $* failed"
    fi
}

# 1. Install.
run_make install PREFIX="$prefix"
for f in include/nn/nn/nn.h include/nn/nn/io/npy.h include/nn/nn/io/safetensors.h \
         include/nn/tensor/tensor.h include/nn/layers/layer.h include/nn/optim/optim.h lib/libnn.a "lib/libnn.so.$version" lib/pkgconfig/nn.pc; do
    [ -f "$prefix/$f" ] || fail "make install did not install $f"
done
# Every header under the one folder include/nn/, nothing beside it.
others=$(find "$prefix/include" -mindepth 1 -maxdepth 1 ! -name nn)
[ -z "$others" ] || fail "make install put headers outside include/nn/: $others"
[ "$(readlink "$prefix/lib/libnn.so.$major")" = "libnn.so.$version" ] ||
    fail "lib/libnn.so.$major does not point to libnn.so.$version"
[ "$(readlink "$prefix/lib/libnn.so")" = "libnn.so.$major" ] ||
    fail "lib/libnn.so does not point to libnn.so.$major"
soname=$(readelf -d "$prefix/lib/libnn.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libnn.so.$major" ] || fail "soname is '$soname', expected libnn.so.$major"

export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
[ "$(pkg-config --modversion nn)" = "$version" ] ||
    fail "pkg-config --modversion nn gives '$(pkg-config --modversion nn)', nn/nn.h says $version"

# The compiler is pointed at include/nn and nowhere else: the installed
# headers include none of the libraries libnn links against.
[ "$(pkg-config --cflags nn | xargs)" = "-I$prefix/include/nn" ] ||
    fail "pkg-config --cflags nn gives '$(pkg-config --cflags nn)', expected -I$prefix/include/nn"

# 2. Build hello.c out of the tree, shared and static.
mkdir -p "$tmp/src" "$tmp/out_shared" "$tmp/out_static"
cp tests/install/hello.c "$tmp/src/"
cd "$tmp/src"
# pkg-config's output is meant to be split into words.
# shellcheck disable=SC2046,SC2086
$CC -std=c11 -Wall -Wextra -Werror $san_cflags hello.c -o hello_shared \
    $(pkg-config --cflags --libs nn) $san_ldflags || fail "shared build of hello.c failed"
# -l:libnn.a picks the archive where -lnn would pick libnn.so.
static_libs=$(pkg-config --static --libs nn | sed 's/-lnn\b/-l:libnn.a/')
# shellcheck disable=SC2046,SC2086
$CC -std=c11 -Wall -Wextra -Werror $san_cflags hello.c -o hello_static \
    $(pkg-config --cflags nn) $static_libs $san_ldflags || fail "static build of hello.c failed"
readelf -d hello_shared | grep -q "NEEDED.*\[libnn.so.$major\]" ||
    fail "hello_shared does not load libnn.so.$major"
if readelf -d hello_static | grep -q "NEEDED.*libnn"; then
    fail "hello_static still needs a shared libnn"
fi

LD_LIBRARY_PATH=$prefix/lib ./hello_shared "$tmp/out_shared" >shared.txt 2>&1 ||
    { cat shared.txt >&2; fail "hello_shared failed"; }
./hello_static "$tmp/out_static" >static.txt 2>&1 || { cat static.txt >&2; fail "hello_static failed"; }
cat shared.txt
[ "$(head -n 1 shared.txt)" = "nn $version" ] || fail "hello_shared printed '$(head -n 1 shared.txt)'"
grep -q "identical predictions" shared.txt || fail "hello_shared: no safetensors round trip line"
diff shared.txt static.txt >/dev/null || { diff shared.txt static.txt >&2; fail "shared and static builds disagree"; }
cmp "$tmp/out_shared/logits.npy" "$tmp/out_static/logits.npy" || fail "the two builds wrote different logits.npy"

if /usr/bin/python3 -c "import numpy" 2>/dev/null; then
    sum=$(sed -n 's/^logits (6, 3), sum \(.*\)$/\1/p' shared.txt)
    /usr/bin/python3 - "$tmp/out_shared/logits.npy" "$sum" <<'EOF' || fail "numpy could not read nn's .npy"
import sys, numpy as np
a = np.load(sys.argv[1])
assert a.dtype == np.float32 and a.shape == (6, 3), (a.dtype, a.shape)
assert abs(float(a.astype(np.float64).sum()) - float(sys.argv[2])) < 1e-5, (a.sum(), sys.argv[2])
print("numpy reads logits.npy: float32 (6, 3), same sum")
EOF
else
    echo "skipped the numpy check: python3-numpy is not installed"
fi

# examples/mnist_min.c, built the same way, runs one epoch on a tiny
# MNIST-format set written here (64 training, 16 test images; image i is
# filled with byte 16 * (i % 10) and labelled i % 10), so it needs no
# download and takes about a second. It reads examples/mnist_cnn.txt from
# the directory it runs in.
mkdir -p "$tmp/mnist_tiny" examples
idx_set "$tmp/mnist_tiny/train" 64 28 class
idx_set "$tmp/mnist_tiny/t10k" 16 28 class
cp "$OLDPWD/examples/mnist_min.c" .        # $OLDPWD: the repository root
cp "$OLDPWD/examples/mnist_cnn.txt" examples/
# shellcheck disable=SC2046,SC2086
$CC -std=c11 -Wall -Wextra -Werror $san_cflags mnist_min.c -o mnist_min \
    $(pkg-config --cflags --libs nn) $san_ldflags || fail "shared build of mnist_min.c failed"
LD_LIBRARY_PATH=$prefix/lib ./mnist_min "$tmp/mnist_tiny" --epochs=1 >mnist_min.txt 2>&1 ||
    { cat mnist_min.txt >&2; fail "mnist_min failed"; }
cat mnist_min.txt
grep -q "^epoch 1/1 " mnist_min.txt || fail "mnist_min printed no epoch line"
grep -q "^test accuracy .*, image 0: label 0, predicted [0-9]$" mnist_min.txt ||
    fail "mnist_min printed no result line"
[ -s mnist_min.safetensors ] || fail "mnist_min wrote no mnist_min.safetensors"
cd - >/dev/null

# 3. DESTDIR staging.
stage=$tmp/stage
run_make install DESTDIR="$stage" PREFIX=/opt/nn-test
for f in include/nn/nn/nn.h lib/libnn.a "lib/libnn.so.$version"; do
    [ -f "$stage/opt/nn-test/$f" ] || fail "DESTDIR install did not stage $f under $stage/opt/nn-test"
done
grep -qx "prefix=/opt/nn-test" "$stage/opt/nn-test/lib/pkgconfig/nn.pc" ||
    fail "nn.pc under DESTDIR does not name the real prefix /opt/nn-test"

# 4. Uninstall both.
run_make uninstall PREFIX="$prefix"
run_make uninstall DESTDIR="$stage" PREFIX=/opt/nn-test
left=$(find "$prefix" "$stage" \( -type f -o -type l \) -print)
[ -z "$left" ] || fail "make uninstall left files behind: $left"
echo "test_install: PASSED (install, pkg-config shared and static builds, DESTDIR, uninstall)"
