"""PyTorch twin of bench_train.c: the default MNIST network, same batch, data
and threads, timed the same way; prints one JSON object per line and the
ratios against nn's results in build/bench/train.jsonl.

Each configuration runs in its own process so peak RSS is its own. Two
configurations: Debian's defaults, and the best one found on this machine
(OPENBLAS_NUM_THREADS=1 plus a glibc malloc tuning that stops the allocator
from returning and re-faulting the large activation buffers every step)."""
import json
import os
import subprocess
import sys
import time

BATCH, STEPS, REPS = 128, 8, 7
BEST_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296",
}


def child(threads):
    import resource
    import numpy as np
    import torch
    import torch.nn as tnn

    torch.set_num_threads(threads)
    torch.manual_seed(42)
    path = ".cache/mnist/train-images-idx3-ubyte"
    if os.path.exists(path):
        raw = np.fromfile(path, dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)
        labels = np.fromfile(".cache/mnist/train-labels-idx1-ubyte", dtype=np.uint8, offset=8)
        x_all = torch.from_numpy(raw.astype(np.float32) / 255.0)
        y_all = torch.from_numpy(labels.astype(np.int64))
        data = "mnist"
    else:
        x_all = torch.rand(4096, 1, 28, 28)
        y_all = torch.randint(0, 10, (4096,))
        data = "noise"
    net = tnn.Sequential(
        tnn.Conv2d(1, 32, 3), tnn.ReLU(), tnn.Conv2d(32, 64, 3), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Dropout2d(0.25), tnn.Flatten(), tnn.Linear(9216, 128), tnn.ReLU(), tnn.Dropout(0.5),
        tnn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = tnn.CrossEntropyLoss()
    n = x_all.shape[0]
    offset = 0
    train_t, eval_t = [], []
    for r in range(-1, REPS):
        net.train()
        t0 = time.perf_counter()
        for _ in range(STEPS):
            if offset + BATCH > n:
                offset = 0
            x, y = x_all[offset:offset + BATCH], y_all[offset:offset + BATCH]
            opt.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            offset += BATCH
        if r >= 0:
            train_t.append(time.perf_counter() - t0)
        net.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            for s in range(STEPS):
                net(x_all[s * BATCH:(s + 1) * BATCH])
        if r >= 0:
            eval_t.append(time.perf_counter() - t0)
    med = lambda v: sorted(v)[len(v) // 2]
    print(json.dumps({
        "train_images_per_sec": round(STEPS * BATCH / med(train_t), 1),
        "eval_images_per_sec": round(STEPS * BATCH / med(eval_t), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "data": data}))


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
        return
    nn = {}
    try:
        with open("build/bench/train.jsonl") as f:
            for line in f:
                o = json.loads(line)
                if "train_images_per_sec" in o:
                    nn[o["threads"]] = o
    except OSError:
        print("note: build/bench/train.jsonl missing; run bench_train first for ratios")
    for config, extra in (("debian-default", {}), ("best", BEST_ENV)):
        for threads in (1, 2):
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), **extra)
            out = subprocess.run([sys.executable, __file__, "--child", str(threads)], env=env,
                                 capture_output=True, text=True, check=True).stdout
            t = json.loads(out.strip().splitlines()[-1])
            row = {"side": "pytorch", "config": config, "threads": threads, "batch": BATCH, **t}
            print(json.dumps(row), flush=True)
            if threads in nn:
                o = nn[threads]
                print(json.dumps({
                    "ratio": "nn/pytorch", "config": config, "threads": threads,
                    "train_speedup": round(o["train_images_per_sec"] / t["train_images_per_sec"], 2),
                    "eval_speedup": round(o["eval_images_per_sec"] / t["eval_images_per_sec"], 2),
                    "rss_fraction": round(o["peak_rss_mb"] / t["peak_rss_mb"], 3)}), flush=True)
    if 1 in nn and 2 in nn:
        print(json.dumps({"side": "nn", "thread_scaling_1_to_2":
                          round(nn[2]["train_images_per_sec"] / nn[1]["train_images_per_sec"], 2)}))


if __name__ == "__main__":
    main()
