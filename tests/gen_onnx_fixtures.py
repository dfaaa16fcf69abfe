#!/usr/bin/python3
"""Writes tests/fixtures/onnx/: small networks exported by PyTorch 1.13's
torch.onnx.export, with an input batch and PyTorch's logits, for
tests/test_onnx.c (nn_onnx_load must give the same logits within 1e-5).

Run from the repository root:  /usr/bin/python3 tests/gen_onnx_fixtures.py
The output is committed, so `make test` never needs PyTorch.

Files, per network NAME:
    NAME.onnx         the exported model (opset 13)
    NAME.input.f32    the input batch, raw little-endian float32, NCHW
    NAME.logits.f32   PyTorch's output for it, float32
    NAME.shape        the input shape, "N,C,H,W"
Networks (random weights from a fixed seed; batchnorm statistics drawn away
from 0 and 1 so that using them matters):
    cnn          conv, batchnorm, relu, maxpool, conv, elu, avgpool,
                 flatten, linear, gelu, dropout, linear; batchnorm kept as a
                 BatchNormalization node
    cnn_folded   the same network exported the default way, which folds the
                 batchnorm into the convolution before it
    resnet       a residual block (conv, batchnorm, relu, conv, add), a 1x1
                 branch joined with torch.cat, leaky relu, adaptive average
                 pooling, flatten, linear, tanh, linear, softmax
    mlp          linear, sigmoid, linear on flat input
    view_flatten    conv, then x.view(x.size(0), -1): Shape, Gather,
                    Unsqueeze, Concat with [-1], Reshape
    reshape_fixed   conv, then x.reshape(x.size(0), -1) exported without a
                    dynamic batch: a Reshape to the constant (2, -1)
    view_k          global average pooling, then x.view(-1, 6): a Reshape to
                    the constant (-1, 6)
Refused on purpose (the test checks the message names node and operator):
    bad_reshape  x.view(-1, 16) of 32 values per sample: splits samples
    bad_reshape3 x.view(x.size(0), 2, -1): a rank-3 target
    bad_pads     a stride-2 conv with PyTorch's symmetric padding, which is
                 not TensorFlow's "same" (nn's only padding besides none)
"""
import os

import numpy as np
import torch
import torch.nn as nn

OUT = os.path.join("tests", "fixtures", "onnx")
torch.manual_seed(17)


def randomise_bn(bn):
    with torch.no_grad():
        c = bn.num_features
        bn.weight.copy_(torch.rand(c) + 0.5)
        bn.bias.copy_(torch.randn(c) * 0.2)
        bn.running_mean.copy_(torch.randn(c) * 0.3)
        bn.running_var.copy_(torch.rand(c) + 0.5)


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8, eps=1e-3)
        self.c2 = nn.Conv2d(8, 16, 3)
        self.f1 = nn.Linear(16 * 2 * 2, 32)
        self.f2 = nn.Linear(32, 10)
        randomise_bn(self.bn)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn(self.c1(x))), 2)
        x = nn.functional.avg_pool2d(nn.functional.elu(self.c2(x)), 2)
        x = torch.flatten(x, 1)
        x = nn.functional.dropout(nn.functional.gelu(self.f1(x)), 0.5, self.training)
        return self.f2(x)


class Resnet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.side = nn.Conv2d(8, 4, 1)
        self.f1 = nn.Linear(12, 16)
        self.f2 = nn.Linear(16, 10)
        randomise_bn(self.bn)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = self.b(torch.relu(self.bn(self.a(x))))
        x = torch.relu(x + y)
        x = torch.cat([x, self.side(x)], 1)
        x = nn.functional.leaky_relu(x, 0.1)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        x = torch.tanh(self.f1(x))
        return torch.softmax(self.f2(x), 1)


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.f1 = nn.Linear(20, 12)
        self.f2 = nn.Linear(12, 3)

    def forward(self, x):
        return self.f2(torch.sigmoid(self.f1(x)))


class ViewFlatten(nn.Module):
    """conv, a view to (N, -1) by the form given, linear."""

    def __init__(self, form):
        super().__init__()
        self.form = form
        self.c = nn.Conv2d(1, 2, 3)
        self.f = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        x = torch.relu(self.c(x))
        if self.form == "view":
            x = x.view(x.size(0), -1)
        elif self.form == "reshape":
            x = x.reshape(x.size(0), -1)
        elif self.form == "split":  # refused: each sample's 32 values become 2 rows
            return x.view(-1, 16)
        else:  # "rank3", refused
            return x.view(x.size(0), 2, -1)
        return self.f(x)


class ViewK(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 6, 3)
        self.f = nn.Linear(6, 3)

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(torch.tanh(self.c(x)), 1)
        return self.f(x.view(-1, 6))


class BadPads(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 2, 3, stride=2, padding=1)

    def forward(self, x):
        return torch.flatten(self.c(x), 1)


def export(name, model, shape, dynamic=True, **kw):
    model.eval()
    x = torch.rand(*shape)
    with torch.no_grad():
        y = model(x)
    path = os.path.join(OUT, name)
    torch.onnx.export(model, x, path + ".onnx", opset_version=13, input_names=["x"],
                      output_names=["logits"],
                      dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}} if dynamic else None, **kw)
    x.numpy().astype("<f4").tofile(path + ".input.f32")
    y.numpy().astype("<f4").tofile(path + ".logits.f32")
    with open(path + ".shape", "w") as f:
        f.write(",".join(str(d) for d in shape) + "\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    cnn = Cnn()
    export("cnn", cnn, (4, 1, 12, 12), training=torch.onnx.TrainingMode.PRESERVE)
    export("cnn_folded", cnn, (4, 1, 12, 12))
    export("resnet", Resnet(), (3, 1, 10, 10), training=torch.onnx.TrainingMode.PRESERVE)
    export("mlp", Mlp(), (5, 20))
    export("view_flatten", ViewFlatten("view"), (3, 1, 6, 6))
    export("reshape_fixed", ViewFlatten("reshape"), (2, 1, 6, 6), dynamic=False)
    export("view_k", ViewK(), (4, 1, 5, 5))
    export("bad_reshape", ViewFlatten("split"), (2, 1, 6, 6))
    export("bad_reshape3", ViewFlatten("rank3"), (2, 1, 6, 6))
    export("bad_pads", BadPads(), (2, 1, 6, 6))


if __name__ == "__main__":
    main()


# ---- hand-made graphs (onnx.helper), for the error paths, MatMul + Add and
# merges that read the graph input ----

def helper_files():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def model(nodes, inits, in_shape, out_shape, name):
        g = helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 7
        onnx.save(m, os.path.join(OUT, name + ".onnx"))
        return m

    rng = np.random.default_rng(5)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    model([helper.make_node("MatMul", ["x", "w"], ["t"], name="mm"),
           helper.make_node("Add", ["t", "b"], ["u"], name="bias"),
           helper.make_node("Relu", ["u"], ["y"], name="act")],
          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
          ["N", 6], ["N", 4], "matmul_add")
    x.astype("<f4").tofile(os.path.join(OUT, "matmul_add.input.f32"))
    np.maximum(x @ w + b, 0).astype("<f4").tofile(os.path.join(OUT, "matmul_add.logits.f32"))
    with open(os.path.join(OUT, "matmul_add.shape"), "w") as f:
        f.write("3,6\n")

    # an operator nn does not have
    model([helper.make_node("Sub", ["x", "x"], ["y"], name="minus")], [], ["N", 6], ["N", 6],
          "bad_op")
    # an attribute value nn does not have: a grouped convolution
    wg = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    model([helper.make_node("Conv", ["x", "w"], ["y"], name="grouped", group=2)],
          [numpy_helper.from_array(wg, "w")], ["N", 2, 5, 5], ["N", 4, 3, 3], "bad_group")
    # a dtype nn does not read: a float64 weight
    model([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")],
          [numpy_helper.from_array(w.astype(np.float64), "w")], ["N", 6], ["N", 4], "bad_dtype")
    # a cycle: a reads b's output, b reads a's
    model([helper.make_node("Relu", ["v"], ["u"], name="a"),
           helper.make_node("Relu", ["u"], ["v"], name="b"),
           helper.make_node("Relu", ["x"], ["y"], name="c")], [], ["N", 6], ["N", 6], "bad_cycle")
    # a huge declared size with little data
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20],
                    raw_data=b"\0" * 16)
    model([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")], [t], ["N", 6], ["N", 4],
          "bad_huge")

    # Add and Concat reading the graph input itself: y = [x + relu(x), x]
    x2 = rng.standard_normal((3, 6)).astype(np.float32)
    model([helper.make_node("Relu", ["x"], ["r"], name="act"),
           helper.make_node("Add", ["x", "r"], ["s"], name="skip"),
           helper.make_node("Concat", ["s", "x"], ["y"], name="cat", axis=1)],
          [], ["N", 6], ["N", 12], "add_input")
    x2.astype("<f4").tofile(os.path.join(OUT, "add_input.input.f32"))
    np.concatenate([x2 + np.maximum(x2, 0), x2], 1).astype("<f4").tofile(
        os.path.join(OUT, "add_input.logits.f32"))
    with open(os.path.join(OUT, "add_input.shape"), "w") as f:
        f.write("3,6\n")


if __name__ == "__main__":
    helper_files()
