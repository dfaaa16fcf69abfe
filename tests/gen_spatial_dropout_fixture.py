#!/usr/bin/env python3
"""Writes tests/fixtures/spatial_dropout/torch.txt: PyTorch 1.13's
F.dropout2d forward and backward on small NCHW inputs, with the mask torch
drew, for tests/test_spatial_dropout.c to compare against bit for bit.

nn keeps the rate as a float32, so each case gives torch the double value of
that float32; torch then scales kept maps by 1.0f / (float)(1.0 - p), which
nn reproduces. Inputs are standard normal (no zeros, no Inf/NaN): on dropped
maps torch gives x * 0 (-0.0 for negative x, NaN for Inf), which nn
deliberately does not copy, so the test compares those by value only.

Floats are written as hex (float.hex of the float32 value), exact both ways.
Run from the repository root: /usr/bin/python3 tests/gen_spatial_dropout_fixture.py
"""
import os
import struct

import torch
import torch.nn.functional as F


def f32(v):
    return struct.unpack("f", struct.pack("f", v))[0]


def hexes(t):
    return " ".join(float(v).hex() for v in t.detach().reshape(-1).tolist())


def main():
    torch.manual_seed(20240601)
    # 0.04: a rate where TF's scale (float)(1.0 / (1.0 - p)) is 1 ulp off torch's.
    cases = [((3, 5, 4, 3), 0.3), ((2, 7, 3, 5), 0.1), ((4, 6, 2, 2), 0.75), ((8, 16, 2, 3), 0.04)]
    lines = ["# PyTorch %s F.dropout2d, written by tests/gen_spatial_dropout_fixture.py" % torch.__version__,
             "cases %d" % len(cases)]
    for shape, rate in cases:
        p = f32(rate)
        x = torch.randn(shape, dtype=torch.float32, requires_grad=True)
        y = F.dropout2d(x, p, training=True)
        n, c = shape[0], shape[1]
        kept = (y.detach().reshape(n, c, -1) != 0).any(dim=2)
        # Every map is all-zero or all-nonzero (x has no zeros): check it.
        nonzero = (y.detach().reshape(n, c, -1) != 0)
        assert bool((nonzero.all(dim=2) == kept).all())
        dy = torch.randn(shape, dtype=torch.float32)
        (dx,) = torch.autograd.grad(y, x, dy)
        lines.append("shape %d %d %d %d" % shape)
        lines.append("rate " + float(p).hex())
        lines.append("mask " + " ".join("1" if k else "0" for k in kept.reshape(-1).tolist()))
        lines.append("x " + hexes(x))
        lines.append("y " + hexes(y))
        lines.append("dy " + hexes(dy))
        lines.append("dx " + hexes(dx))
    path = os.path.join("tests", "fixtures", "spatial_dropout", "torch.txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    print("wrote", path)


if __name__ == "__main__":
    main()
