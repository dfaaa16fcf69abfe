#!/usr/bin/env bash
# The floor plan: every include and every symbol reference runs downward.
#
#   nn/      (model, registry, nn/io/ file formats, the umbrella nn/nn.h)
#   layers/  optim/   (side by side: neither uses the other)
#   tensor/  (tensors, status, random numbers, threads, the autograd tape)
#
# A folder may use its own floor and the floors below it, nothing else.
# Two checks:
#   1. includes: every #include "dir/..." or <dir/...> in the library's
#      sources names an allowed folder;
#   2. symbols: every undefined symbol of an object in $BUILD/obj/<folder>/
#      that another library object defines is defined on an allowed floor
#      (this catches an upward call made through a local declaration, which
#      the include check cannot see). Skipped, with a message, when the
#      objects have not been built.
# Run from `make test`, or directly: tests/test_floors.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
fail=0

# allowed FLOOR -> the floors its files may use
allowed() {
    case $1 in
        tensor) echo "tensor" ;;
        optim)  echo "optim tensor" ;;
        layers) echo "layers tensor" ;;
        nn)     echo "nn layers optim tensor" ;;
    esac
}

may_use() { # may_use FROM TO
    local f
    for f in $(allowed "$1"); do [ "$f" = "$2" ] && return 0; done
    return 1
}

# 1. Includes.
n_includes=0
for floor in tensor optim layers nn; do
    while IFS= read -r src; do
        while IFS=: read -r line target; do
            n_includes=$((n_includes + 1))
            to=${target%%/*}
            if ! may_use "$floor" "$to"; then
                echo "test_floors: FAIL: $src:$line includes $target: $floor/ may use only $(allowed "$floor")" >&2
                fail=1
            fi
        done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*["<](tensor|optim|layers|nn)/' "$src" |
                 sed -E 's@^([0-9]+):[^"<]*["<]([^">]*)[">].*@\1:\2@')
    done < <(find "$floor" -name '*.[ch]' | sort)
done
[ "$n_includes" -gt 0 ] || { echo "test_floors: FAIL: no includes found, the check is broken" >&2; exit 1; }
echo "test_floors: $n_includes includes checked"

# 2. Symbols.
if ! ls "$BUILD"/obj/tensor/*.o >/dev/null 2>&1; then
    echo "test_floors: symbol check skipped: no objects in $BUILD/obj (run make first)"
    exit $fail
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# Only the objects of sources that exist (a moved file leaves its old object).
for floor in tensor optim layers nn; do
    find "$floor" -name '*.c' | sort | while IFS= read -r src; do
        obj=$BUILD/obj/${src%.c}.o
        [ -f "$obj" ] || { echo "test_floors: FAIL: $obj missing (run make first)" >&2; exit 1; }
        nm --defined-only -g "$obj" | awk -v f="$floor" 'NF == 3 && $2 ~ /[TDBRCVW]/ { print $3, f }' >> "$tmp/defs"
        nm -u "$obj" | awk -v o="$src" -v f="$floor" '$1 == "U" { print $2, f, o }' >> "$tmp/uses"
    done
done
sort -u "$tmp/defs" > "$tmp/defs.sorted"
sort "$tmp/uses" > "$tmp/uses.sorted"
# sym  user-floor  user-source  defining-floor
join "$tmp/uses.sorted" "$tmp/defs.sorted" > "$tmp/refs"
n_refs=$(wc -l < "$tmp/refs")
while read -r sym from src to; do
    if ! may_use "$from" "$to"; then
        echo "test_floors: FAIL: $src uses $sym from $to/: $from/ may use only $(allowed "$from")" >&2
        fail=1
    fi
done < "$tmp/refs"
[ "$n_refs" -gt 0 ] || { echo "test_floors: FAIL: no references between objects found, the check is broken" >&2; exit 1; }
echo "test_floors: $n_refs references between library objects checked"
[ $fail = 0 ] && echo "test_floors: every include and symbol reference runs downward"
exit $fail
