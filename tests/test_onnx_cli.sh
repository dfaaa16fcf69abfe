#!/usr/bin/env bash
# The ONNX paths that run from the command line, as the README shows them:
# examples/mnist's --export-onnx after a short run (on small random IDX
# files), whose file the ONNX checker accepts (when Debian's python3-onnx is
# installed) and examples/onnx_round_trip reads back; onnx_round_trip on a
# PyTorch 1.13 export (tests/fixtures/onnx/cnn.onnx) and on its own output,
# which must print the same outputs; and on ONNX's two-input Add node test
# (when libonnx-testdata is installed), which becomes a model with two
# inputs. Run from `make test` (BUILD from the environment, default build).
# Takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
python=${NN_PYTHON:-/usr/bin/python3}
fail() { echo "test_onnx_cli: FAIL: $*" >&2; exit 1; }
mnist=$build/examples/mnist rt=$build/examples/onnx_round_trip
for p in "$mnist" "$rt"; do [ -x "$p" ] || fail "$p is not built (make $p)"; done
tmp=$(mktemp -d /tmp/nn-onnx-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

. tests/idx_set.sh
mkdir -p "$tmp/data"
idx_set "$tmp/data/train" 64 8 random
idx_set "$tmp/data/t10k" 32 8 random
printf 'conv2d filters=4 kernel_size=3 activation=relu\nspatial_dropout2d rate=0.25\nflatten\ndense units=10\n' >"$tmp/net.txt"
"$mnist" --data "$tmp/data" --model "$tmp/net.txt" --threads 1 --quiet --epochs 1 --batch 16 \
    --export-onnx "$tmp/mnist.onnx" >"$tmp/mnist.out" 2>&1 || { cat "$tmp/mnist.out"; fail "mnist --export-onnx exited with an error"; }
[ -s "$tmp/mnist.onnx" ] || fail "mnist --export-onnx wrote no file"
checked="the ONNX checker skipped: python3-onnx missing"
if "$python" -c "import onnx" 2>/dev/null; then
    "$python" tests/onnx_check.py "$tmp/mnist.onnx" >/dev/null || fail "the checker refused mnist's export"
    checked="the ONNX checker accepted it"
fi
out=$("$rt" "$tmp/mnist.onnx" "$tmp/mnist2.onnx") || fail "onnx_round_trip refused mnist's export"
grep -q "^outputs of sample 0:" <<<"$out" || fail "onnx_round_trip printed no outputs"

out=$("$rt" tests/fixtures/onnx/cnn.onnx "$tmp/a.onnx") || fail "onnx_round_trip refused cnn.onnx"
again=$("$rt" "$tmp/a.onnx" "$tmp/b.onnx") || fail "onnx_round_trip refused its own export"
a=$(grep "^outputs of sample 0:" <<<"$out") b=$(grep "^outputs of sample 0:" <<<"$again")
[ -n "$a" ] && [ "$a" = "$b" ] || fail "the re-export computes other outputs: '$a' against '$b'"

add=${NN_ONNX_TESTDATA:-/usr/share/libonnx-testdata/data/node}/test_add/model.onnx
two="ONNX's test_add skipped (libonnx-testdata missing)"
if [ -f "$add" ]; then
    out=$("$rt" "$add" "$tmp/add.onnx") || fail "onnx_round_trip refused test_add (two inputs)"
    n=$(grep -c "(InputLayer)" <<<"$out" || true)
    [ "$n" = 2 ] || { echo "$out"; fail "test_add: expected 2 InputLayer rows, saw $n"; }
    "$rt" "$tmp/add.onnx" "$tmp/add2.onnx" >/dev/null || fail "onnx_round_trip refused its two-input export"
    two="ONNX's two-input test_add became a two-input model and came back"
fi
echo "test_onnx_cli: mnist --export-onnx wrote a file ($checked) that onnx_round_trip read; cnn.onnx round-tripped with the same outputs; $two"
