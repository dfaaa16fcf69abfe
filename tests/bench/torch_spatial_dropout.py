#!/usr/bin/env python3
"""PyTorch twin of bench_spatial_dropout: F.dropout2d forward and backward on
the same shapes, formats (NCHW and torch.channels_last), thread counts and
cache cases, with torch's own copy (dst.copy_(x)) timed in the same run.

Prints one JSON object per line with torch's medians, nn's, and the ratios
torch / nn (above 1: nn is faster) for the forward, the backward and the two
together (fwd_bwd_torch_over_nn). So that a busy machine does not skew the
ratios, each case is timed in three rounds that alternate nn (the C
benchmark run for that case only) and torch, and each side reports the
median of its rounds' medians. The binary is NN_BENCH_BIN if set, else the newest
build*/**/bench/bench_spatial_dropout under the repository root. Without the
binary, nn's times come from the spatial_dropout.jsonl it last wrote (next to
itself, or NN_BENCH_JSONL).

Timing: backward is torch.autograd.grad(y, x, dy, retain_graph=True), which
returns a fresh dx = dy * mask * s, as nn's bwd_ms does (nn_spatial_dropout_apply).
"Flushed" writes a 96 MiB buffer before every timed repetition.
A benchmark aid only: nothing in the library or its tests needs torch.
"""
import glob
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = [(128, 32, 26, 26), (128, 64, 24, 24), (32, 256, 14, 14), (8, 64, 112, 112)]
THREADS = [1, 2]
RATE = 0.25
REPS = int(os.environ.get("NN_BENCH_REPS", "60"))
ROUNDS = 3
FLUSH_ELEMS = (96 << 20) // 4


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def newest(env, name):
    path = os.environ.get(env)
    if path:
        return path
    found = glob.glob(os.path.join(ROOT, "build*", "**", "bench", name), recursive=True)
    return max(found, key=os.path.getmtime) if found else None


def nn_case(binary, shape, fmt, threads, cache, reps):
    """nn's line for one case, timed now by the C benchmark."""
    # The C benchmark runs (R + 1) / 2 repetitions of a flushed case.
    r = reps if cache == "warm" else 2 * reps - 1
    cmd = [binary, "--reps", str(r), "--out", "-", "--shape", ",".join(map(str, shape)),
           "--format", fmt, "--threads", str(threads), "--cache", cache]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def nn_results():
    path = newest("NN_BENCH_JSONL", "spatial_dropout.jsonl")
    if not path:
        return None, {}
    out = {}
    with open(path) as f:
        for line in f:
            d = json.loads(line)
            out[(tuple(d["shape"]), d["data_format"], d["threads"], d["cache"])] = d
    return path, out


def median_ms(fn, reps, flush):
    times = []
    if flush is None:
        fn()
    for r in range(reps):
        if flush is not None:
            flush.fill_(float(r))
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    binary = newest("NN_BENCH_BIN", "bench_spatial_dropout")
    nn = {}
    if binary:
        print("torch_spatial_dropout: timing nn with %s, alternating with torch" % binary, file=sys.stderr)
    else:
        path, nn = nn_results()
        if path is None:
            print("torch_spatial_dropout: neither bench_spatial_dropout nor its results found; "
                  "printing torch times only", file=sys.stderr)
        else:
            print("torch_spatial_dropout: nn results from %s" % path, file=sys.stderr)
    torch.manual_seed(0)
    flush_buf = torch.empty(FLUSH_ELEMS, dtype=torch.float32)
    for shape in SHAPES:
        base = torch.randn(shape, dtype=torch.float32)
        dy_base = torch.randn(shape, dtype=torch.float32)
        for fmt in ("channels_first", "channels_last"):
            mf = torch.contiguous_format if fmt == "channels_first" else torch.channels_last
            x = base.contiguous(memory_format=mf).requires_grad_(True)
            dy = dy_base.contiguous(memory_format=mf)
            dst = torch.empty_like(x, memory_format=mf).detach()
            for threads in THREADS:
                torch.set_num_threads(threads)
                for cache in ("warm", "flushed"):
                    flush = flush_buf if cache == "flushed" else None
                    reps = REPS if cache == "warm" else (REPS + 1) // 2
                    holder = {}

                    def fwd():
                        holder["y"] = F.dropout2d(x, RATE, training=True)

                    def bwd():
                        torch.autograd.grad(holder["y"], x, dy, retain_graph=True)

                    def copy():
                        with torch.no_grad():
                            dst.copy_(x)

                    # Alternate nn and torch in ROUNDS rounds of reps/ROUNDS
                    # repetitions and keep the median of the rounds' medians,
                    # so both see the same machine.
                    t = {"fwd": [], "bwd": [], "copy": []}
                    rounds = []
                    per_round = max(1, reps // ROUNDS)
                    for _ in range(ROUNDS if binary else 1):
                        if binary:
                            rounds.append(nn_case(binary, shape, fmt, threads, cache, per_round))
                        for name, fn in (("fwd", fwd), ("bwd", bwd), ("copy", copy)):
                            t[name].append(median_ms(fn, per_round if binary else reps, flush))
                    fwd_ms, bwd_ms, copy_ms = (statistics.median(t[k]) for k in ("fwd", "bwd", "copy"))
                    if binary:
                        d = {k: statistics.median(r[k] for r in rounds) for k in ("fwd_ms", "bwd_ms", "copy_ms")}
                    else:
                        d = nn.get((tuple(shape), fmt, threads, cache))
                    rec = {"op": "torch_dropout2d", "torch": torch.__version__, "shape": list(shape),
                           "data_format": fmt, "threads": threads, "rate": RATE, "cache": cache,
                           "reps": reps, "fwd_ms": round(fwd_ms, 4), "bwd_ms": round(bwd_ms, 4),
                           "copy_ms": round(copy_ms, 4)}
                    if d:
                        rec.update({"nn_fwd_ms": d["fwd_ms"], "nn_bwd_ms": d["bwd_ms"],
                                    "nn_copy_ms": d["copy_ms"],
                                    "fwd_torch_over_nn": round(fwd_ms / d["fwd_ms"], 2),
                                    "bwd_torch_over_nn": round(bwd_ms / d["bwd_ms"], 2),
                                    "fwd_bwd_torch_over_nn": round((fwd_ms + bwd_ms) /
                                                                   (d["fwd_ms"] + d["bwd_ms"]), 2)})
                    print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
