#!/usr/bin/env bash
# Crash safety of checkpoints: a training run that saves a checkpoint after
# every (tiny) epoch is killed with SIGKILL at random moments, KILLS times
# (default 50). After every kill the checkpoint on disk, if one was written
# yet, must load: the MNIST program resumes from it with --eval-only, which
# runs every check of the loader (size, CRC, network, optimizer, training
# state). Kills that land while a save is writing its temporary file leave
# that file behind (PATH.tmp.<pid>.<n>, named after the killed process) and
# are counted: they show that the kills do hit writes. The next save to the
# same checkpoint removes such leftovers of dead processes. Finally the run
# resumes from the last checkpoint and trains on; after that clean save no
# temporary file of a dead process may be left, and one of a live process
# must be kept.
#
# Data: a tiny MNIST-shaped set (8x8 images, IDX files) made here, and a
# small network with spatial dropout and dropout, so an epoch takes a few
# milliseconds and saves come many times a second.
# Run from `make test` (BUILD from the environment, default build) or
# directly: tests/test_kill_save.sh [KILLS]. Takes about 15-30 s.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD:-build}
mnist=$build/examples/mnist
kills=${1:-50}
fail() { echo "test_kill_save: FAIL: $*" >&2; exit 1; }
[ -x "$mnist" ] || fail "$mnist is not built (make $mnist)"

tmp=$(mktemp -d /tmp/nn-kill-save-XXXXXX)
pid=
sleeper=
cleanup() {
    if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
    if [ -n "$sleeper" ]; then kill "$sleeper" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# ---- the data: IDX files, big-endian header, then bytes -------------------
. tests/idx_set.sh
mkdir -p "$tmp/data"
idx_set "$tmp/data/train" 96 8 random
idx_set "$tmp/data/t10k" 32 8 random

cat >"$tmp/net.txt" <<'EOF'
conv2d filters=4 kernel_size=3 activation=relu
spatial_dropout2d rate=0.25
flatten
dropout rate=0.25
dense units=10
EOF

ckpt=$tmp/run.ckpt
common=(--data "$tmp/data" --model "$tmp/net.txt" --threads 1 --quiet)

loads() { # the checkpoint passes every check of the loader
    "$mnist" "${common[@]}" --resume "$ckpt" --eval-only >"$tmp/check.out" 2>&1
}

temps() { # temporary files of the checkpoint (of any process)
    compgen -G "$ckpt.tmp.*" || true
}

start=$SECONDS
checked=0 missing=0 torn_writes=0 last_dead=
for ((k = 1; k <= kills; k++)); do
    "$mnist" "${common[@]}" --epochs 100000 --batch 32 --lr-decay 1 --save "$ckpt" >/dev/null 2>&1 &
    pid=$!
    # 20 to 400 ms: some kills land before the first save, most during the
    # run of saves; the per-pid temporary file shows when one hit a write.
    sleep "0.$(printf %03d $((20 + RANDOM % 380)))"
    kill -9 "$pid" 2>/dev/null || fail "kill $k: the training run had already exited"
    wait "$pid" 2>/dev/null || true
    # Left in place: the next run's first save must clear it.
    if compgen -G "$ckpt.tmp.$pid.*" >/dev/null; then torn_writes=$((torn_writes + 1)); fi
    last_dead=$pid
    pid=
    if [ ! -e "$ckpt" ]; then
        missing=$((missing + 1))
        continue
    fi
    loads || { cat "$tmp/check.out" >&2; fail "kill $k: the checkpoint does not load"; }
    checked=$((checked + 1))
done
[ "$checked" -gt 0 ] || fail "no kill came after a save"

# Before the final save: at least one leftover of a dead writer (the last
# killed run's, planted if that kill missed a write) and one of a live
# process, which must survive.
if [ -z "$(temps)" ]; then echo partial >"$ckpt.tmp.$last_dead.0"; fi
stale_before=$(temps | wc -l)
sleep 300 &
sleeper=$!
echo partial >"$ckpt.tmp.$sleeper.0"

# The last checkpoint is a run that can go on: two more epochs from it.
base=("${common[@]:0:6}") # without --quiet, for the "resuming" line
epochs=$("$mnist" "${base[@]}" --resume "$ckpt" --eval-only | sed -n 's/^resuming .* after epoch \([0-9]*\)$/\1/p')
[ -n "$epochs" ] || fail "cannot read the epoch count of the final checkpoint"
"$mnist" "${common[@]}" --resume "$ckpt" --epochs $((epochs + 2)) --save "$ckpt" >"$tmp/resume.out" 2>&1 ||
    { cat "$tmp/resume.out" >&2; fail "resuming the final checkpoint (epoch $epochs) failed"; }
after=$("$mnist" "${base[@]}" --resume "$ckpt" --eval-only | sed -n 's/^resuming .* after epoch \([0-9]*\)$/\1/p')
[ "$after" = $((epochs + 2)) ] || fail "resumed run saved epoch '$after', expected $((epochs + 2))"
[ -e "$ckpt.tmp.$sleeper.0" ] || fail "the save removed the temporary file of a live process"
rm -f "$ckpt.tmp.$sleeper.0"
kill "$sleeper" 2>/dev/null || true
sleeper=
left=$(temps)
[ -z "$left" ] || fail "temporary files left after the final clean save: $left"
echo "test_kill_save: $kills SIGKILLs in $((SECONDS - start)) s: the checkpoint loaded after" \
     "$checked of them ($missing came before the first save); $torn_writes landed during a" \
     "write and left only a temporary file behind; the last one (epoch $epochs) resumed to epoch $after," \
     "and that save removed the $stale_before stale temporary file(s) and kept a live process's"
