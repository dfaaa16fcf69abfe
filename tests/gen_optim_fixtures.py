#!/usr/bin/python3
"""Writes tests/fixtures/optim/*.txt: parameter trajectories of torch.optim.SGD,
Adam and AdamW (PyTorch 1.13, float32) for test_optim.c.

Run from the repository root:  /usr/bin/python3 tests/gen_optim_fixtures.py
The output is committed, so `make test` never needs PyTorch.

Hyperparameters are passed to torch as the float32 values a C caller would
pass (0.999f is 0.99900001287...), so the comparison tests the update rule,
not the rounding of the decimal constants. Parameters start at |w| in
[0.5, 2] and the script checks that they stay away from 0, so the C test can
use a purely relative tolerance.

File format (one token stream, '#' lines are comments):
    optimizer sgd|adam|adamw
    lr L  momentum M  nesterov 0|1  beta1 B1  beta2 B2  eps E  weight_decay D
    n N  steps S
    w0 <N values>
    then S times:  step k lr L  grad <N values>  w <N values>
Floats are printed with 9 significant digits: they read back as the same
float32.
"""
import os
import sys

import numpy as np
import torch

N = 12
STEPS = 8
OUT = os.path.join("tests", "fixtures", "optim")


def f32(x):
    return float(np.float32(x))


def fmt(values):
    return " ".join("%.9g" % float(v) for v in values)


def gradients(rng):
    """STEPS gradient vectors of mixed scale: most entries O(1), one tiny
    (Adam's eps regime), one exactly zero, one large."""
    g = rng.standard_normal((STEPS, N)).astype(np.float32) * np.float32(0.5)
    g[:, 3] *= np.float32(1e-6)
    g[:, 7] = 0.0
    g[:, 9] *= np.float32(40.0)
    return g


def make(name, kind, lr, momentum=0.0, nesterov=False, betas=(0.9, 0.999), eps=1e-8,
         weight_decay=0.0, lr_schedule=None):
    rng = np.random.default_rng(sum(map(ord, name)))
    signs = np.where(rng.random(N) < 0.5, -1.0, 1.0)
    w0 = (signs * rng.uniform(0.5, 2.0, N)).astype(np.float32)
    grads = gradients(rng)
    lr, momentum, eps, weight_decay = f32(lr), f32(momentum), f32(eps), f32(weight_decay)
    b1, b2 = f32(betas[0]), f32(betas[1])

    p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    if kind == "sgd":
        opt = torch.optim.SGD([p], lr=lr, momentum=momentum, nesterov=nesterov,
                              weight_decay=weight_decay)
    elif kind == "adam":
        opt = torch.optim.Adam([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay)

    lines = [
        "# %s: torch.optim.%s, torch %s, float32" % (name, type(opt).__name__, torch.__version__),
        "# written by tests/gen_optim_fixtures.py; do not edit",
        "optimizer %s" % kind,
        "lr %.9g momentum %.9g nesterov %d beta1 %.9g beta2 %.9g eps %.9g weight_decay %.9g"
        % (lr, momentum, int(nesterov), b1, b2, eps, weight_decay),
        "n %d steps %d" % (N, STEPS),
        "w0 " + fmt(w0),
    ]
    smallest = np.abs(w0).min()
    for k in range(STEPS):
        step_lr = lr
        if lr_schedule is not None:
            step_lr = f32(lr_schedule(k))
            for group in opt.param_groups:
                group["lr"] = step_lr
        p.grad = torch.from_numpy(grads[k].copy())
        opt.step()
        w = p.detach().numpy().copy()
        smallest = min(smallest, np.abs(w).min())
        lines.append("step %d lr %.9g" % (k + 1, step_lr))
        lines.append("grad " + fmt(grads[k]))
        lines.append("w " + fmt(w))
    if smallest < 0.05:
        sys.exit("%s: a parameter came within %g of 0; pick other data" % (name, smallest))
    with open(os.path.join(OUT, name + ".txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s (min |w| %.3f)" % (name, smallest))


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    make("sgd_plain", "sgd", lr=0.01)
    make("sgd_momentum", "sgd", lr=0.01, momentum=0.9)
    make("sgd_nesterov", "sgd", lr=0.01, momentum=0.9, nesterov=True)
    make("sgd_weight_decay", "sgd", lr=0.01, momentum=0.9, weight_decay=0.1)
    make("sgd_lr_schedule", "sgd", lr=0.01, momentum=0.9,
         lr_schedule=lambda k: 0.01 if k < 4 else 0.0025)
    make("adam", "adam", lr=0.01)
    make("adam_weight_decay", "adam", lr=0.01, weight_decay=0.1)
    make("adam_betas", "adam", lr=0.02, betas=(0.5, 0.9), eps=1e-6)
    make("adamw", "adamw", lr=0.01, weight_decay=0.1)
    make("adamw_lr_schedule", "adamw", lr=0.01, weight_decay=0.05,
         lr_schedule=lambda k: 0.01 * 0.7 ** k)


if __name__ == "__main__":
    main()
