#!/usr/bin/env bash
# Training over MPI ranks (nn/mpi.h, nn/shard.h) with the MNIST program
# under OpenMPI's mpirun, on a tiny MNIST-shaped set (8x8 images) and a
# network with batch normalisation, spatial dropout and dropout:
#  1. exact mode, 1, 2 and 4 ranks (oversubscribed), 2 epochs with a short
#     last batch: the checkpoints are the same bytes, and the JSON logs the
#     same apart from the timings; one process without mpirun (--shard)
#     gives them too;
#  2. a run saved after epoch 1 by 2 ranks and resumed by 4 gives those
#     bytes as well;
#  3. fast mode runs, twice the same bytes at 2 ranks, and the same bytes
#     with its sums after backward (NN_MPI_OVERLAP=0) as during it, in one
#     bucket (this network is small) or in one per parameter
#     (NN_MPI_BUCKET_BYTES=1): at 2 ranks each element is a + b either way;
#  4. faults: a checkpoint that rank 0 cannot write ends every rank, with
#     a message naming rank 0, in bounded time; a rank killed with SIGKILL
#     mid-training ends the job in bounded time and the last checkpoint
#     loads.
# Skipped (exit 0, with a message) when mpirun is missing or the program was
# built without MPI (make mpi). Run from `make test` or directly.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD:-build}
mnist=$build/examples/mnist
fail() { echo "test_mpi: FAIL: $*" >&2; exit 1; }
[ -x "$mnist" ] || fail "$mnist is not built (make $mnist)"
if ! command -v mpirun >/dev/null 2>&1; then
    echo "test_mpi: skipped: mpirun is not installed (make mpi installs OpenMPI)"; exit 0
fi
if ! "$mnist" --help | grep -q -- --allreduce || ! grep -q MPI_Init "$mnist" 2>/dev/null; then
    echo "test_mpi: skipped: $mnist was built without MPI (make mpi)"; exit 0
fi

# What a root user in a container needs (see the README).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}detect_leaks=0
mpirun=(mpirun --oversubscribe --bind-to none --mca btl self,vader --mca btl_vader_single_copy_mechanism none)
run() { # np, then the program's flags
    local np=$1
    shift
    "${mpirun[@]}" -np "$np" "$mnist" "$@"
}

tmp=$(mktemp -d /tmp/nn-mpi-XXXXXX)
job=
cleanup() {
    if [ -n "$job" ]; then kill -9 "$job" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

. tests/idx_set.sh
mkdir -p "$tmp/data"
idx_set "$tmp/data/train" 100 8 random
idx_set "$tmp/data/t10k" 40 8 random
cat >"$tmp/net.txt" <<'EOF'
conv2d filters=4 kernel_size=3 padding=same use_bias=false
batchnorm activation=relu
spatial_dropout2d rate=0.25
flatten
dropout rate=0.25
dense units=10
EOF
common=(--data "$tmp/data" --model "$tmp/net.txt" --threads 1 --quiet --batch 32 --shift 1)
untimed() { sed -E 's/, "seconds": .*$//' "$1"; }
start=$SECONDS

# ---- 1. exact mode: 1, 2, 4 ranks, and one process without MPI ----
for np in 1 2 4; do
    run "$np" "${common[@]}" --shard 8 --epochs 2 --save "$tmp/c$np.ckpt" --log "$tmp/l$np.jsonl" \
        >"$tmp/out$np" 2>&1 || { cat "$tmp/out$np" >&2; fail "exact mode with $np ranks"; }
done
"$mnist" "${common[@]}" --shard 8 --epochs 2 --save "$tmp/c0.ckpt" --log "$tmp/l0.jsonl" \
    >"$tmp/out0" 2>&1 || { cat "$tmp/out0" >&2; fail "exact mode in one process without mpirun"; }
for np in 0 2 4; do
    cmp -s "$tmp/c1.ckpt" "$tmp/c$np.ckpt" || fail "exact mode: the checkpoint of $np ranks differs from 1 rank's"
    [ "$(untimed "$tmp/l1.jsonl")" = "$(untimed "$tmp/l$np.jsonl")" ] ||
        fail "exact mode: the log of $np ranks differs from 1 rank's"
done
[ "$(wc -l <"$tmp/l1.jsonl")" = 3 ] || fail "expected 2 epoch lines and a final one in the log"
# The plain one-process run (no shards) is a different computation.
"$mnist" "${common[@]}" --epochs 2 --save "$tmp/plain.ckpt" >/dev/null 2>&1 || fail "plain run"
! cmp -s "$tmp/c1.ckpt" "$tmp/plain.ckpt" || fail "shards of 8 gave the bytes of whole batches"

# ---- 2. saved by 2 ranks, resumed by 4 ----
run 2 "${common[@]}" --shard 8 --epochs 1 --save "$tmp/r.ckpt" >"$tmp/out" 2>&1 ||
    { cat "$tmp/out" >&2; fail "epoch 1 with 2 ranks"; }
run 4 "${common[@]}" --shard 8 --epochs 2 --resume "$tmp/r.ckpt" --save "$tmp/r.ckpt" >"$tmp/out" 2>&1 ||
    { cat "$tmp/out" >&2; fail "resuming with 4 ranks"; }
cmp -s "$tmp/c1.ckpt" "$tmp/r.ckpt" || fail "2 ranks then 4 differ from 2 epochs on 1 rank"

# ---- 3. fast mode: reproducible at a fixed rank count ----
for k in a b; do
    run 2 "${common[@]}" --allreduce fast --epochs 2 --save "$tmp/f$k.ckpt" >"$tmp/out" 2>&1 ||
        { cat "$tmp/out" >&2; fail "fast mode"; }
done
cmp -s "$tmp/fa.ckpt" "$tmp/fb.ckpt" || fail "fast mode at 2 ranks is not reproducible"
"${mpirun[@]}" -np 2 -x NN_MPI_OVERLAP=0 "$mnist" "${common[@]}" --allreduce fast --epochs 2 \
    --save "$tmp/fp.ckpt" >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; fail "fast mode without overlap"; }
cmp -s "$tmp/fa.ckpt" "$tmp/fp.ckpt" || fail "fast mode's sums during backward differ from after it"
"${mpirun[@]}" -np 2 -x NN_MPI_BUCKET_BYTES=1 "$mnist" "${common[@]}" --allreduce fast --epochs 2 \
    --save "$tmp/fs.ckpt" >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; fail "fast mode, bucket per parameter"; }
cmp -s "$tmp/fa.ckpt" "$tmp/fs.ckpt" || fail "fast mode's sums in a bucket per parameter differ"

# ---- 4. faults ----
# Rank 0 cannot write its checkpoint: every rank ends, rank 0 named.
t0=$SECONDS
if timeout 60 "${mpirun[@]}" -np 2 "$mnist" "${common[@]}" --epochs 3 \
        --save "$tmp/missing/dir/c.ckpt" >"$tmp/out" 2>&1; then
    fail "a failed save on rank 0 did not fail the job"
fi
[ $((SECONDS - t0)) -lt 60 ] || fail "a failed save on rank 0 left the job running"
grep -q "rank 0 of 2" "$tmp/out" || { cat "$tmp/out" >&2; fail "the message does not name rank 0"; }

# SIGKILL of rank 1 mid-training: mpirun ends the job; the checkpoint loads.
ckpt=$tmp/k.ckpt
"${mpirun[@]}" -np 2 "$mnist" "${common[@]}" --epochs 100000 --lr-decay 1 --save "$ckpt" \
    >"$tmp/kill.out" 2>&1 &
job=$!
for ((i = 0; i < 200; i++)); do [ -e "$ckpt" ] && break; sleep 0.05; done
[ -e "$ckpt" ] || fail "no checkpoint after 10 s"
sleep 0.3
victim=
for p in $(pgrep -P "$job" || true); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1; then victim=$p; fi
done
[ -n "$victim" ] || fail "cannot find rank 1 among mpirun's children"
kill -9 "$victim"
t0=$SECONDS
for ((i = 0; i < 600; i++)); do kill -0 "$job" 2>/dev/null || break; sleep 0.05; done
kill -0 "$job" 2>/dev/null && fail "the job still runs 30 s after rank 1 was killed"
if wait "$job"; then fail "the job exited 0 after a rank was killed"; fi
job=
ended=$((SECONDS - t0))
"$mnist" "${common[@]}" --resume "$ckpt" --eval-only >"$tmp/check.out" 2>&1 ||
    { cat "$tmp/check.out" >&2; fail "the last checkpoint does not load after the kill"; }

echo "test_mpi: exact mode gave the same checkpoint bytes and log for 1, 2 and 4 ranks and one" \
     "process, and after a resume from 2 ranks to 4; fast mode reproducible at 2 ranks, with its" \
     "sums during backward (one bucket or one per parameter) or after it; a failed" \
     "save on rank 0 and a SIGKILL of rank 1 ended the job (the latter in ${ended} s) with the" \
     "checkpoint whole ($((SECONDS - start)) s)"
