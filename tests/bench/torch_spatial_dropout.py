#!/usr/bin/env python3
"""PyTorch twin of bench_spatial_dropout: F.dropout2d forward and backward on
the same shapes, formats (NCHW and torch.channels_last), thread counts and
cache cases, with torch's own copy (dst.copy_(x)) timed in the same run.

Prints one JSON object per line with torch's medians and, when the C
benchmark's results are found, nn's times and the ratios torch / nn (above 1:
nn is faster). nn's results are read from NN_BENCH_JSONL if set, else from
the newest build*/**/bench/spatial_dropout.jsonl under the repository root
(bench_spatial_dropout writes it next to itself; `make bench-spatial_dropout`
runs the two back to back).

Timing: backward is torch.autograd.grad(y, x, dy, retain_graph=True), which
returns a fresh dx = dy * mask * s (nn's kernel adds into an existing dx).
"Flushed" writes a 96 MiB buffer before every timed repetition.
A benchmark aid only: nothing in the library or its tests needs torch.
"""
import glob
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = [(128, 32, 26, 26), (128, 64, 24, 24), (32, 256, 14, 14), (8, 64, 112, 112)]
THREADS = [1, 2]
RATE = 0.25
REPS = int(os.environ.get("NN_BENCH_REPS", "60"))
FLUSH_ELEMS = (96 << 20) // 4


def nn_results():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.environ.get("NN_BENCH_JSONL")
    if not path:
        found = glob.glob(os.path.join(root, "build*", "**", "bench", "spatial_dropout.jsonl"), recursive=True)
        if not found:
            return None, {}
        path = max(found, key=os.path.getmtime)
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
    path, nn = nn_results()
    if path is None:
        print("torch_spatial_dropout: no spatial_dropout.jsonl from bench_spatial_dropout found; "
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

                    fwd_ms = median_ms(fwd, reps, flush)
                    bwd_ms = median_ms(bwd, reps, flush)
                    copy_ms = median_ms(copy, reps, flush)
                    rec = {"op": "torch_dropout2d", "torch": torch.__version__, "shape": list(shape),
                           "data_format": fmt, "threads": threads, "rate": RATE, "cache": cache,
                           "reps": reps, "fwd_ms": round(fwd_ms, 4), "bwd_ms": round(bwd_ms, 4),
                           "copy_ms": round(copy_ms, 4)}
                    d = nn.get((tuple(shape), fmt, threads, cache))
                    if d:
                        rec.update({"nn_fwd_ms": d["fwd_ms"], "nn_bwd_ms": d["bwd_ms"],
                                    "nn_copy_ms": d["copy_ms"],
                                    "fwd_torch_over_nn": round(fwd_ms / d["fwd_ms"], 2),
                                    "bwd_torch_over_nn": round(bwd_ms / d["bwd_ms"], 2)})
                    print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
