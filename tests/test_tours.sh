#!/usr/bin/env bash
# The README's tours run and hold what they print: examples/tour.c (the API
# tour) and examples/tour_dropout.c (spatial dropout, step by step), which
# checks its own claims (masks per map, eval mode the identity, backward
# reusing the forward's mask) and exits 1 when one fails. Run from `make
# test` (BUILD from the environment, default build). Takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
fail() { echo "test_tours: FAIL: $*" >&2; exit 1; }
for t in tour tour_dropout; do
    [ -x "$build/examples/$t" ] || fail "$build/examples/$t is not built (make $build/examples/$t)"
done
out=$("$build/examples/tour") || fail "tour exited with an error"
grep -q "as expected:" <<<"$out" || fail "tour: the error example printed nothing"
out=$("$build/examples/tour_dropout") || { echo "$out"; fail "tour_dropout exited with an error"; }
grep -q "^all checks held$" <<<"$out" || { echo "$out"; fail "tour_dropout: a check failed"; }
n=$(grep -c "^  \[ok\]" <<<"$out" || true)
[ "$n" -ge 7 ] || { echo "$out"; fail "tour_dropout: expected at least 7 checks, saw $n"; }
echo "test_tours: tour and tour_dropout ran; $n checks of tour_dropout held"
