#!/usr/bin/python3
"""Writes tests/fixtures/dag/*.txt: a two-branch network (shared stem, a
residual add, a concatenation with a branch from the model's input, global
average pooling, dense) run forward and backward in PyTorch 1.13, in float64,
for tests/test_dag.c, once per data format.

Run from the repository root:  /usr/bin/python3 tests/gen_dag_fixtures.py
The output is committed, so `make test` never needs PyTorch.

The conventions are those of tests/gen_conv_fixtures.py: inputs and weights
are drawn in float64 and rounded to float32 (the values the C test loads),
the references are computed from them in float64; kernels are stored in
Keras's (KH, KW, Cin, Cout) layout (PyTorch's weight is the permutation
(Cout, Cin, KH, KW)), dense kernels as (in, units); padding=same is
TensorFlow's, emulated with F.pad. Draws are repeated until no input of the
ReLU is within 1e-3 of zero, so a float32 rounding cannot flip its mask.

The network (nn spec; stem's output has two readers, and so has the input):
    input -> stem (conv 3x3 same) -> a (conv 3x3 same) -> relu_a --+
                                 \\-> b (conv 1x1) ----------------+-> res (add)
    input -> side (conv 3x3 same) ----------------------------------------+
    res, side -> cat (concatenate) -> gap (global_avgpool2d) -> out (dense)

File format (tokens separated by white space; '#' lines are comments):
    format channels_last|channels_first
    input RANK D1 .. DRANK          the per-sample input shape
    spec LINE                       one line of the model spec, in order
    array NAME RANK D1 .. DRANK     then D1*..*DRANK values, C order
Arrays: x (the input batch, in the data format), param:L.P (layer L's
parameter P in nn's layout), y (the model's output), dy (upstream gradient),
dx (the input's gradient), grad:L.P (the gradient of L.P).
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join("tests", "fixtures", "dag")
torch.set_default_dtype(torch.float64)

N, H, W, C = 2, 5, 6, 3
STEM, BR, SIDE, UNITS = 4, 4, 2, 3


def f32(a):
    """float64 tensor holding float32-representable values."""
    return torch.as_tensor(np.asarray(a, dtype=np.float32), dtype=torch.float64)


def randn(rng, *shape, scale=1.0):
    return f32(rng.standard_normal(shape) * scale)


def tf_same(n, k, s=1):
    """(before, after) padding of TensorFlow's 'same'."""
    out = -(-n // s)
    total = max((out - 1) * s + k - 1 + 1 - n, 0)
    return total // 2, total - total // 2


def conv(x, kern, bias, same):
    """x (N, C, H, W); kern in Keras's layout (KH, KW, Cin, Cout)."""
    if same:
        pt, pb = tf_same(x.shape[2], kern.shape[0])
        pl, pr = tf_same(x.shape[3], kern.shape[1])
        x = F.pad(x, (pl, pr, pt, pb))
    return F.conv2d(x, kern.permute(3, 2, 0, 1), bias)


def spec(fmt):
    d = "data_format=" + fmt
    return [
        "conv2d name=stem filters=%d kernel_size=3 padding=same %s" % (STEM, d),
        "conv2d name=a filters=%d kernel_size=3 padding=same %s" % (BR, d),
        "relu name=relu_a",
        "conv2d name=b inputs=stem filters=%d kernel_size=1 %s" % (BR, d),
        "add name=res inputs=relu_a,b",
        "conv2d name=side inputs=input filters=%d kernel_size=3 padding=same %s" % (SIDE, d),
        "concatenate name=cat inputs=res,side %s" % d,
        "global_avgpool2d name=gap %s" % d,
        "dense name=out units=%d" % UNITS,
    ]


def case(fmt):
    name = "two_branch_" + ("nhwc" if fmt == "channels_last" else "nchw")
    seed = sum(map(ord, name))
    while True:
        rng = np.random.default_rng(seed)
        x = randn(rng, N, C, H, W)
        p = {
            "stem.kernel": randn(rng, 3, 3, C, STEM, scale=1 / np.sqrt(9 * C)),
            "stem.bias": randn(rng, STEM, scale=0.3),
            "a.kernel": randn(rng, 3, 3, STEM, BR, scale=1 / np.sqrt(9 * STEM)),
            "a.bias": randn(rng, BR, scale=0.3),
            "b.kernel": randn(rng, 1, 1, STEM, BR, scale=1 / np.sqrt(STEM)),
            "b.bias": randn(rng, BR, scale=0.3),
            "side.kernel": randn(rng, 3, 3, C, SIDE, scale=1 / np.sqrt(9 * C)),
            "side.bias": randn(rng, SIDE, scale=0.3),
            "out.kernel": randn(rng, BR + SIDE, UNITS, scale=1 / np.sqrt(BR + SIDE)),
            "out.bias": randn(rng, UNITS, scale=0.3),
        }
        t = {k: v.clone().requires_grad_() for k, v in p.items()}
        xin = x.clone().requires_grad_()
        stem = conv(xin, t["stem.kernel"], t["stem.bias"], True)
        za = conv(stem, t["a.kernel"], t["a.bias"], True)
        if za.abs().min().item() < 1e-3:
            seed += 1000
            continue
        break
    res = F.relu(za) + conv(stem, t["b.kernel"], t["b.bias"], False)
    side = conv(xin, t["side.kernel"], t["side.bias"], True)
    cat = torch.cat([res, side], dim=1)
    gap = cat.mean(dim=(2, 3))
    y = gap @ t["out.kernel"] + t["out.bias"]
    dy = randn(rng, *y.shape)
    (y * dy).sum().backward()

    lay = (lambda a: a.permute(0, 2, 3, 1)) if fmt == "channels_last" else (lambda a: a)
    sample = (H, W, C) if fmt == "channels_last" else (C, H, W)
    path = os.path.join(OUT, name + ".txt")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("# generated by tests/gen_dag_fixtures.py (PyTorch %s)\n" % torch.__version__)
        f.write("format %s\n" % fmt)
        f.write("input %d %s\n" % (len(sample), " ".join(str(d) for d in sample)))
        for line in spec(fmt):
            f.write("spec %s\n" % line)

        def arr(aname, a):
            a = np.asarray(a.detach().numpy(), dtype=np.float32)
            f.write("array %s %d %s\n" % (aname, a.ndim, " ".join(str(d) for d in a.shape)))
            flat = a.reshape(-1)
            for i in range(0, flat.size, 8):
                f.write(" ".join("%.9g" % v for v in flat[i:i + 8]) + "\n")

        arr("x", lay(x))
        for k, v in p.items():
            arr("param:" + k, v)
        arr("y", y)
        arr("dy", dy)
        arr("dx", lay(xin.grad))
        for k, v in t.items():
            arr("grad:" + k, v.grad)
    os.replace(tmp, path)
    return name


def main():
    os.makedirs(OUT, exist_ok=True)
    for fmt in ("channels_last", "channels_first"):
        print("wrote", case(fmt))


if __name__ == "__main__":
    main()
