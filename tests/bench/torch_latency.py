#!/usr/bin/python3
"""PyTorch counterpart of bench_latency.c: batch-1 prediction latency of the
networks bench_latency timed (build/bench/latency.jsonl, its 1-thread idle
rows), in PyTorch 1.13 on one thread, timed the same way: 200 warm-up calls,
then 10,000 calls (as many as nn's row made) timed one by one, p50 and p99
in microseconds. One JSON object per line: PyTorch's times per memory
format, then per network the ratios torch/nn of p50 and p99 against
PyTorch's faster format (by p50), which the line names.

The twins: examples/fashion_resnet.txt through torch_train.from_spec, whose
parameter count is checked against nn's; examples/mnist_cnn.txt (valid
padding, which from_spec does not translate) written out as
torch_train.child builds it. Both in eval mode under torch.inference_mode(),
input (1, 1, 28, 28) either contiguous NCHW ("channels_first") or
torch.channels_last, with the module converted to the same format.

make bench-latency runs it after bench_latency when python3-torch is
installed."""
import json
import os
import sys
import time

import torch
import torch.nn as tnn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_train import from_spec, param_count  # noqa: E402

WARMUP = 200


def mnist_twin():
    return tnn.Sequential(
        tnn.Conv2d(1, 32, 3), tnn.ReLU(), tnn.Conv2d(32, 64, 3), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Dropout2d(0.25), tnn.Flatten(), tnn.Linear(9216, 128), tnn.ReLU(), tnn.Dropout(0.5),
        tnn.Linear(128, 10))


def twin(spec):
    if os.path.basename(spec) == "mnist_cnn.txt":
        return mnist_twin()
    return from_spec(spec)


def time_calls(net, x, calls):
    """p50 and p99 in microseconds of `calls` timed forwards, after WARMUP."""
    t = []
    with torch.inference_mode():
        for i in range(-WARMUP, calls):
            t0 = time.perf_counter()
            net(x)
            t1 = time.perf_counter()
            if i >= 0:
                t.append((t1 - t0) * 1e6)
    t.sort()
    pct = lambda p: t[min(int(p / 100.0 * calls), calls - 1)]  # as bench_latency_pct
    return pct(50.0), pct(99.0)


def main():
    rows = []
    try:
        with open("build/bench/latency.jsonl") as f:
            for line in f:
                o = json.loads(line)
                if o.get("threads") == 1 and o.get("load") == "idle" and "p50_us" in o:
                    rows.append(o)
    except OSError:
        raise SystemExit("torch_latency.py: build/bench/latency.jsonl is missing; run "
                         "build/bench/bench_latency first")
    torch.set_num_threads(1)
    torch.manual_seed(42)
    for o in rows:
        net = twin(o["model"]).eval()
        if param_count(net) != o["params"]:
            raise SystemExit(f"torch_latency.py: the PyTorch twin of {o['model']} has "
                             f"{param_count(net)} parameters, nn's has {o['params']}: they are not "
                             "the same network")
        best = None
        for name, fmt in (("channels_first", torch.contiguous_format),
                          ("channels_last", torch.channels_last)):
            net = net.to(memory_format=fmt)
            x = torch.rand(1, 1, 28, 28).contiguous(memory_format=fmt)
            p50, p99 = time_calls(net, x, o["calls"])
            row = {"side": "pytorch", "model": o["model"], "batch": 1, "threads": 1,
                   "format": name, "calls": o["calls"], "p50_us": round(p50, 1),
                   "p99_us": round(p99, 1)}
            print(json.dumps(row), flush=True)
            if best is None or p50 < best["p50_us"]:
                best = row
        print(json.dumps({
            "ratio": "pytorch/nn", "model": o["model"], "threads": 1,
            "pytorch_format": best["format"], "pytorch_p50_us": best["p50_us"],
            "pytorch_p99_us": best["p99_us"], "nn_p50_us": o["p50_us"], "nn_p99_us": o["p99_us"],
            "p50_ratio": round(best["p50_us"] / o["p50_us"], 2),
            "p99_ratio": round(best["p99_us"] / o["p99_us"], 2)}), flush=True)


if __name__ == "__main__":
    main()
