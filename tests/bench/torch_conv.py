#!/usr/bin/python3
"""PyTorch counterpart of bench_conv.c: the same three convolutions (conv +
bias + ReLU), timed the same way, one JSON object per line.

make bench-conv runs it after bench_conv when python3-torch is installed.
Formats: channels_first is PyTorch's contiguous NCHW, channels_last is
torch.channels_last memory format. fwd_bwd is the forward plus
autograd's backward from a fixed upstream gradient; the first layer's input
needs no gradient, as in bench_conv.
"""
import json
import statistics
import time

import torch
import torch.nn.functional as F

CASES = [
    ("1->32 3x3 valid, 28x28 -> 26x26", 128, 28, 28, 1, 32, 0, False),
    ("32->64 3x3 valid, 26x26 -> 24x24", 128, 26, 26, 32, 64, 0, True),
    ("64->128 3x3 same, 56x56 -> 56x56", 32, 56, 56, 64, 128, 1, True),
]


def run(case, fmt, threads, reps=10):
    name, n, h, w, c, f, pad, x_grad = case
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(f, c, 3, 3, generator=g) * 0.1
    bias = torch.zeros(f)
    if fmt == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        weight = weight.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(x_grad)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    oh, ow = (h, w) if pad else (h - 2, w - 2)
    dy = torch.randn(n, f, oh, ow, generator=g)
    tf, tb = [], []
    for r in range(reps + 2):
        t0 = time.perf_counter()
        with torch.no_grad():
            F.relu(F.conv2d(x, weight, bias, padding=pad))
        t1 = time.perf_counter()
        y = F.relu(F.conv2d(x, weight, bias, padding=pad))
        y.backward(dy)
        t2 = time.perf_counter()
        if r >= 2:
            tf.append((t1 - t0) * 1e3)
            tb.append((t2 - t1) * 1e3)
    fwd, fb = statistics.median(tf), statistics.median(tb)
    gemm = 2.0 * n * oh * ow * 9 * c * f
    print(json.dumps({
        "framework": "torch " + torch.__version__, "layer": "conv2d", "shape": name, "batch": n,
        "x_grad": x_grad, "data_format": fmt, "threads": threads, "fwd_ms": round(fwd, 2),
        "fwd_bwd_ms": round(fb, 2), "fwd_gflops": round(gemm / (fwd * 1e6), 1),
        "fwd_bwd_gflops": round(gemm * (3 if x_grad else 2) / (fb * 1e6), 1)}), flush=True)


def main():
    for threads in (1, 2):
        for case in CASES:
            for fmt in ("channels_last", "channels_first"):
                run(case, fmt, threads)


if __name__ == "__main__":
    main()
