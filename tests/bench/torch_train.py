"""PyTorch twin of bench_train.c: the default MNIST network and the residual
network of examples/fashion_resnet.txt, same batch, data and threads, timed
the same way; prints one JSON object per line and, per network, the ratios
against nn's results in build/bench/train.jsonl (matched by network and
thread count).

Each configuration runs in its own process so peak RSS is its own. Two
configurations: Debian's defaults, and the best one found on this machine
(OPENBLAS_NUM_THREADS=1 plus a glibc malloc tuning that stops the allocator
from returning and re-faulting the large activation buffers every step; for
the residual network also the memory layout that is fastest for it, see
RESNET_BEST_LAYOUT)."""
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


FASHION = "/usr/share/datasets/fashion-mnist"
# PyTorch 1.13's layout for the residual network in the "best" configuration.
# torch.channels_last (NHWC, nn's layout) beat the default contiguous NCHW on
# this machine with the best environment, measured on the earlier 480k-parameter
# version of the network: training 730 vs 544 images/s on 1 thread, 1100 vs
# 1017 on 2. "contiguous" selects NCHW.
RESNET_BEST_LAYOUT = "channels_last"
RESNET_SPEC = "examples/fashion_resnet.txt"


def load_idx_gz(path, offset):
    import gzip
    import numpy as np
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load_data(network):
    """Training images as float tensors (N, 1, 28, 28) and labels, as
    bench_train.c picks them: Fashion-MNIST for the residual network when it
    is installed, else the MNIST cache, else noise."""
    import numpy as np
    import torch
    fashion = FASHION + "/train-images-idx3-ubyte.gz"
    path = ".cache/mnist/train-images-idx3-ubyte"
    if network == "fashion_resnet" and os.path.exists(fashion):
        raw = load_idx_gz(fashion, 16).reshape(-1, 1, 28, 28)
        labels = load_idx_gz(FASHION + "/train-labels-idx1-ubyte.gz", 8)
        data = "fashion-mnist"
    elif os.path.exists(path):
        raw = np.fromfile(path, dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)
        labels = np.fromfile(".cache/mnist/train-labels-idx1-ubyte", dtype=np.uint8, offset=8)
        data = "mnist"
    else:
        return torch.rand(4096, 1, 28, 28), torch.randint(0, 10, (4096,)), "noise"
    return torch.from_numpy(raw.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64)), data


def spec_layers(path):
    """The layers of an nn spec file: (type, {key: value}) per line, comments
    and blank lines skipped."""
    layers = []
    with open(path) as f:
        for line in f:
            words = line.split("#", 1)[0].split()
            if words:
                layers.append((words[0], dict(w.split("=", 1) for w in words[1:])))
    return layers


def from_spec(path):
    """The network of an nn spec file as a PyTorch module, for the layer types
    and keys the example networks use (conv2d, batchnorm, relu, maxpool2d,
    spatial_dropout2d, dropout, add, flatten, global_avgpool2d, dense, and the
    activation= key). Keras's "same" padding for odd kernels at stride 1 is
    PyTorch's k // 2; batchnorm's defaults are Keras's (epsilon 1e-3,
    momentum 0.99, which is PyTorch's 0.01). Input (N, 1, 28, 28). The
    parameter count, batchnorm's running statistics included, is what nn's
    summary prints, so a twin that differs from the spec is noticed."""
    import torch
    import torch.nn as tnn

    class Twin(tnn.Module):
        def __init__(self):
            super().__init__()
            self.mods = tnn.ModuleList()
            self.plan = []  # (type, input indices, activation) per layer; index 0 is the input
            shapes = [(1, 28, 28)]
            names = {"input": 0}
            counts = {}  # nn's default names: the type and its running count, conv2d_1, conv2d_2, ...
            for kind, kv in spec_layers(path):
                counts[kind] = counts.get(kind, 0) + 1
                ins = [names[x] for x in kv["inputs"].split(",")] if "inputs" in kv else [len(shapes) - 1]
                c, h, w = shapes[ins[0]] if len(shapes[ins[0]]) == 3 else (shapes[ins[0]][0], 1, 1)
                mod, out = tnn.Identity(), shapes[ins[0]]
                if kind == "conv2d":
                    k, f = int(kv["kernel_size"]), int(kv["filters"])
                    assert kv.get("padding", "valid") == "same" or k == 1, "padding=same or 1x1 only"
                    mod = tnn.Conv2d(c, f, k, padding=k // 2, bias=kv.get("use_bias", "true") == "true")
                    out = (f, h, w)
                elif kind == "batchnorm":
                    mod = tnn.BatchNorm2d(c, eps=float(kv.get("epsilon", 1e-3)),
                                          momentum=1 - float(kv.get("momentum", 0.99)))
                elif kind == "maxpool2d":
                    p = int(kv.get("pool_size", 2))
                    mod, out = tnn.MaxPool2d(p), (c, h // p, w // p)
                elif kind == "spatial_dropout2d":
                    mod = tnn.Dropout2d(float(kv["rate"]))
                elif kind == "dropout":
                    mod = tnn.Dropout(float(kv["rate"]))
                elif kind == "flatten":
                    mod, out = tnn.Flatten(), (c * h * w,)
                elif kind == "global_avgpool2d":
                    mod, out = tnn.Sequential(tnn.AdaptiveAvgPool2d(1), tnn.Flatten()), (c,)
                elif kind == "dense":
                    mod, out = tnn.Linear(shapes[ins[0]][0], int(kv["units"])), (int(kv["units"]),)
                elif kind not in ("relu", "add"):
                    raise SystemExit(f"torch_train.py: {path}: layer type {kind} is not translated")
                act = "relu" if kind == "relu" else kv.get("activation", "linear")
                if act not in ("relu", "linear"):
                    raise SystemExit(f"torch_train.py: {path}: activation {act} is not translated")
                self.mods.append(mod)
                self.plan.append((kind, ins, act == "relu"))
                shapes.append(out)
                names[kv.get("name", f"{kind}_{counts[kind]}")] = len(shapes) - 1

        def forward(self, x):
            vals = [x]
            for mod, (kind, ins, relu) in zip(self.mods, self.plan):
                y = sum(vals[i] for i in ins) if kind == "add" else mod(vals[ins[0]])
                vals.append(torch.relu(y) if relu else y)
            return vals[-1]

    return Twin()


def param_count(net):
    return sum(p.numel() for p in net.parameters()) + sum(
        b.numel() for name, b in net.named_buffers() if not name.endswith("num_batches_tracked"))


def child(network, threads, layout):
    import resource
    import torch
    import torch.nn as tnn

    torch.set_num_threads(threads)
    torch.manual_seed(42)
    x_all, y_all, data = load_data(network)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    if network == "mnist_cnn":
        net = tnn.Sequential(
            tnn.Conv2d(1, 32, 3), tnn.ReLU(), tnn.Conv2d(32, 64, 3), tnn.ReLU(), tnn.MaxPool2d(2),
            tnn.Dropout2d(0.25), tnn.Flatten(), tnn.Linear(9216, 128), tnn.ReLU(), tnn.Dropout(0.5),
            tnn.Linear(128, 10))
    else:
        net = from_spec(RESNET_SPEC).to(memory_format=fmt)
    # Adam as nn's benchmark runs it (nn's epsilon is Keras's 1e-7); the
    # MNIST twin keeps PyTorch's default 1e-8, as it always has.
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-8 if network == "mnist_cnn" else 1e-7)
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
            x, y = x_all[offset:offset + BATCH].contiguous(memory_format=fmt), y_all[offset:offset + BATCH]
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
                net(x_all[s * BATCH:(s + 1) * BATCH].contiguous(memory_format=fmt))
        if r >= 0:
            eval_t.append(time.perf_counter() - t0)
    med = lambda v: sorted(v)[len(v) // 2]
    print(json.dumps({
        "train_images_per_sec": round(STEPS * BATCH / med(train_t), 1),
        "eval_images_per_sec": round(STEPS * BATCH / med(eval_t), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "data": data, "params": param_count(net),
        **({} if network == "mnist_cnn" else {"layout": layout})}))


def main():
    if len(sys.argv) > 4 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    nn = {}
    try:
        with open("build/bench/train.jsonl") as f:
            for line in f:
                o = json.loads(line)
                if "train_images_per_sec" in o:
                    nn[o.get("network", "mnist_cnn"), o["threads"]] = o
    except OSError:
        print("note: build/bench/train.jsonl missing; run bench_train first for ratios")
    # A network name as argument runs only that network's rows.
    networks = [a for a in sys.argv[1:] if a in ("mnist_cnn", "fashion_resnet")] or ["mnist_cnn", "fashion_resnet"]
    for network in networks:
        for config, extra in (("debian-default", {}), ("best", BEST_ENV)):
            layout = RESNET_BEST_LAYOUT if config == "best" and network == "fashion_resnet" else "contiguous"
            for threads in (1, 2):
                env = dict(os.environ, OMP_NUM_THREADS=str(threads), **extra)
                out = subprocess.run([sys.executable, __file__, "--child", network, str(threads), layout],
                                     env=env, capture_output=True, text=True, check=True).stdout
                t = json.loads(out.strip().splitlines()[-1])
                row = {"side": "pytorch", "network": network, "config": config, "threads": threads,
                       "batch": BATCH, **t}
                print(json.dumps(row), flush=True)
                if (network, threads) in nn:
                    o = nn[network, threads]
                    if "params" in t and o.get("params", t["params"]) != t["params"]:
                        raise SystemExit(f"torch_train.py: the PyTorch twin of {network} has {t['params']} "
                                         f"parameters, nn's has {o['params']}: they are not the same network")
                    print(json.dumps({
                        "ratio": "nn/pytorch", "network": network, "config": config, "threads": threads,
                        "train_speedup": round(o["train_images_per_sec"] / t["train_images_per_sec"], 2),
                        "eval_speedup": round(o["eval_images_per_sec"] / t["eval_images_per_sec"], 2),
                        "rss_fraction": round(o["peak_rss_mb"] / t["peak_rss_mb"], 3)}), flush=True)
        if (network, 1) in nn and (network, 2) in nn:
            print(json.dumps({"side": "nn", "network": network, "thread_scaling_1_to_2":
                              round(nn[network, 2]["train_images_per_sec"] /
                                    nn[network, 1]["train_images_per_sec"], 2)}))


if __name__ == "__main__":
    main()
