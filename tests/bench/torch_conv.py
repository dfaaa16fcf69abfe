#!/usr/bin/python3
"""PyTorch counterpart of bench_conv.c: reads the convolutions bench_conv
timed (build/bench/conv.jsonl), times each one in PyTorch the same way
(conv + bias + ReLU), and prints one JSON object per line: PyTorch's
times, then nn/PyTorch speed ratios per case, then their geometric means.

make bench-conv runs it after bench_conv when python3-torch is installed.
Formats: channels_first is PyTorch's contiguous NCHW, channels_last is
torch.channels_last memory format; each nn row is compared with PyTorch in
the same format. fwd_bwd is the forward plus autograd's backward from a
fixed upstream gradient; a first layer's input needs no gradient, as in
bench_conv. "same" padding is Keras's (the odd row at the bottom); PyTorch
pads symmetrically, which gives the same output size and the same work.
"""
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def run(case, reps=10):
    n, h, w, c, f = case["batch"], case["height"], case["width"], case["in_channels"], case["filters"]
    k, s, d = case["kernel"], case["stride"], case["dilation"]
    pad = (k - 1) * d // 2 if case["padding"] == "same" else 0
    torch.set_num_threads(case["threads"])
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(f, c, k, k, generator=g) * 0.1
    bias = torch.zeros(f)
    if case["data_format"] == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        weight = weight.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(case["x_grad"])
    weight.requires_grad_(True)
    bias.requires_grad_(True)

    def conv():
        return F.relu(F.conv2d(x, weight, bias, stride=s, padding=pad, dilation=d))

    with torch.no_grad():
        shape = conv().shape
    if (shape[2], shape[3]) != (case["out_height"], case["out_width"]):
        raise SystemExit(f"torch_conv.py: {case['shape']}: PyTorch's output is {tuple(shape[2:])}, "
                         f"nn's ({case['out_height']}, {case['out_width']})")
    dy = torch.randn(*shape, generator=g)
    tf, tb = [], []
    for r in range(reps + 2):
        t0 = time.perf_counter()
        with torch.no_grad():
            conv()
        t1 = time.perf_counter()
        y = conv()
        y.backward(dy)
        t2 = time.perf_counter()
        if r >= 2:
            tf.append((t1 - t0) * 1e3)
            tb.append((t2 - t1) * 1e3)
    return statistics.median(tf), statistics.median(tb)


def geomean(v):
    return math.exp(sum(math.log(x) for x in v) / len(v)) if v else float("nan")


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "build/bench/conv.jsonl"
    try:
        with open(path) as fh:
            cases = [json.loads(line) for line in fh if '"layer"' in line]
    except OSError:
        raise SystemExit(f"torch_conv.py: {path} is missing: run build/bench/bench_conv first")
    speedups = {}
    for case in cases:
        fwd, fb = run(case)
        key = {k: case[k] for k in ("case", "shape", "data_format", "threads")}
        print(json.dumps({"framework": "torch " + torch.__version__, **key, "batch": case["batch"],
                          "x_grad": case["x_grad"], "fwd_ms": round(fwd, 3), "fwd_bwd_ms": round(fb, 3)}),
              flush=True)
        ratio = {"ratio": "nn/pytorch", **key, "fwd_speedup": round(fwd / case["fwd_ms"], 2),
                 "fwd_bwd_speedup": round(fb / case["fwd_bwd_ms"], 2)}
        print(json.dumps(ratio), flush=True)
        speedups.setdefault(case["threads"], []).append(ratio)
    for threads, rows in sorted(speedups.items()):
        for fmt in ("channels_last", "channels_first", "both"):
            sel = [r for r in rows if fmt == "both" or r["data_format"] == fmt]
            if not sel:
                continue
            fb = [r["fwd_bwd_speedup"] for r in sel]
            print(json.dumps({"geomean": "nn/pytorch", "threads": threads, "data_format": fmt, "rows": len(sel),
                              "fwd_speedup": round(geomean([r["fwd_speedup"] for r in sel]), 2),
                              "fwd_bwd_speedup": round(geomean(fb), 2), "fwd_bwd_min": min(fb),
                              "slowest": min(sel, key=lambda r: r["fwd_bwd_speedup"])["shape"]}), flush=True)


if __name__ == "__main__":
    main()
