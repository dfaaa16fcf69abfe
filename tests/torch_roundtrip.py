#!/usr/bin/python3
"""Cross-check of an nn .safetensors export against PyTorch.

Usage: torch_roundtrip.py DIR
DIR holds what tests/test_safetensors.c wrote:
    model.safetensors  the parameters, with the model spec in __metadata__
    inputs.npy         a batch in the model's input layout
    logits.npy         nn's eval-mode logits for that batch
This script reads the safetensors file with json + struct only (no
safetensors package), rebuilds the network in PyTorch from the spec, loads
the weights with the documented layout changes, runs the batch and compares
the logits. It writes:
    torch_logits.npy   PyTorch's logits (numpy.save), read back by the C test
    numpy_inputs.npy   inputs.npy loaded and saved again by numpy, which the
                       C test compares byte for byte with nn's own file
Layouts (see nn/io/safetensors.h): dense kernel (in, units) -> Linear.weight
(units, in); conv2d kernel (KH, KW, Cin, Cout) -> Conv2d.weight (Cout, Cin,
KH, KW). The PyTorch side runs NCHW; when the nn model is channels_last its
input is permuted to NCHW on entry and back to NHWC before flatten, so the
flattened features come in nn's (H, W, C) order.
Exit status: 0 when the logits agree or when numpy/torch is missing (it then
prints "skipped: ..."), 1 on a mismatch or an unusable file.
Supported layer types: conv2d, maxpool2d, avgpool2d, batchnorm (on (N, C) or
images), relu, flatten, dense, dropout, spatial_dropout2d (the dropouts are the
identity in eval mode).
"""
import json
import os
import struct
import sys


def fail(msg):
    print("torch_roundtrip: FAIL: " + msg)
    sys.exit(1)


try:
    import numpy as np
except ImportError:
    print("skipped: numpy is not installed for /usr/bin/python3 (python3-numpy)")
    sys.exit(0)


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        fail("%s: shorter than 8 bytes" % path)
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        fail("%s: header length %d runs past the end" % (path, n))
    if (8 + n) % 8:
        fail("%s: data does not start at a multiple of 8 (header length %d)" % (path, n))
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = blob[8 + n:]
    tensors, end = {}, 0
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if e["dtype"] != "F32":
            fail("%s: %s has dtype %s" % (path, name, e["dtype"]))
        begin, stop = e["data_offsets"]
        if begin != end:
            fail("%s: %s starts at %d, the previous tensor ended at %d" % (path, name, begin, end))
        count = int(np.prod(e["shape"])) if e["shape"] else 1
        if stop - begin != 4 * count:
            fail("%s: %s: offsets hold %d bytes, shape %s needs %d"
                 % (path, name, stop - begin, e["shape"], 4 * count))
        tensors[name] = np.frombuffer(data[begin:stop], dtype="<f4").reshape(e["shape"]).copy()
        end = stop
    if end != len(data):
        fail("%s: %d data bytes after the last tensor" % (path, len(data) - end))
    return meta, tensors


def parse_spec(text):
    layers = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        cfg = dict(w.split("=", 1) for w in words[1:])
        layers.append((words[0], cfg))
    return layers


def pair(value):
    parts = [int(v) for v in value.split(",")]
    return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def same_padding(size, k, s, d):
    """Keras/TensorFlow 'same': output ceil(size/s), the odd pad at the end."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def main():
    if len(sys.argv) != 2:
        fail("usage: torch_roundtrip.py DIR")
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("skipped: PyTorch is not installed for /usr/bin/python3 (python3-torch)")
        sys.exit(0)
    torch.set_num_threads(1)
    d = sys.argv[1]
    meta, params = read_safetensors(os.path.join(d, "model.safetensors"))
    inputs = np.load(os.path.join(d, "inputs.npy"))
    logits_nn = np.load(os.path.join(d, "logits.npy"))
    np.save(os.path.join(d, "numpy_inputs.npy"), inputs)
    if inputs.dtype != np.float32 or logits_nn.dtype != np.float32:
        fail("numpy read dtypes %s and %s, expected float32" % (inputs.dtype, logits_nn.dtype))
    in_shape = tuple(int(v) for v in meta["nn_input_shape"].split(","))
    if inputs.shape[1:] != in_shape:
        fail("inputs.npy has shape %s, the model was built for %s" % (inputs.shape, in_shape))

    used = set()

    def param(name, shape):
        if name not in params:
            fail("%s is not in the file" % name)
        if tuple(params[name].shape) != tuple(shape):
            fail("%s has shape %s, expected %s" % (name, params[name].shape, shape))
        used.add(name)
        return torch.from_numpy(params[name])

    x = torch.from_numpy(inputs)
    fmt = None  # the nn layout of image tensors: channels_last or channels_first
    counts = {}
    ignored = {"seed", "rate", "inplace", "data_format"}
    for kind, cfg in parse_spec(meta["nn_spec"]):
        counts[kind] = counts.get(kind, 0) + 1
        name = "%s_%d" % (kind, counts[kind])
        if kind in ("conv2d", "maxpool2d", "avgpool2d", "spatial_dropout2d"):
            f = cfg.get("data_format")
            if f not in ("channels_last", "channels_first"):
                fail("%s: data_format %r" % (name, f))
            if fmt is None:
                fmt = f
                if fmt == "channels_last":
                    x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW, once, on entry
            elif f != fmt:
                fail("%s: mixed data formats are not handled here" % name)
        if kind == "conv2d":
            kh, kw = pair(cfg["kernel_size"])
            sh, sw = pair(cfg.get("strides", "1"))
            dh, dw = pair(cfg.get("dilation_rate", "1"))
            filters, cin = int(cfg["filters"]), x.shape[1]
            w = param(name + ".kernel", (kh, kw, cin, filters)).permute(3, 2, 0, 1)
            b = param(name + ".bias", (filters,)) if cfg.get("use_bias", "true") == "true" else None
            if cfg.get("padding", "valid") == "same":
                t, bo = same_padding(x.shape[2], kh, sh, dh)
                l, r = same_padding(x.shape[3], kw, sw, dw)
                x = F.pad(x, (l, r, t, bo))
            x = F.conv2d(x, w.contiguous(), b, stride=(sh, sw), dilation=(dh, dw))
            if cfg.get("activation", "linear") == "relu":
                x = F.relu(x)
            extra = set(cfg) - {"filters", "kernel_size", "strides", "dilation_rate", "use_bias",
                                "padding", "activation"} - ignored
        elif kind in ("maxpool2d", "avgpool2d"):
            ph, pw = pair(cfg.get("pool_size", "2"))
            sh, sw = pair(cfg.get("strides", cfg.get("pool_size", "2")))
            pads = (0, 0, 0, 0)
            if cfg.get("padding", "valid") == "same":
                t, bo = same_padding(x.shape[2], ph, sh, 1)
                l, r = same_padding(x.shape[3], pw, sw, 1)
                pads = (l, r, t, bo)
            if kind == "maxpool2d":
                x = F.max_pool2d(F.pad(x, pads, value=float("-inf")), (ph, pw), stride=(sh, sw))
            else:
                # Keras averages over the window's elements inside the input:
                # divide the padded window sums by the count of real elements.
                ones = F.pad(torch.ones_like(x[:, :1]), pads)
                x = (F.avg_pool2d(F.pad(x, pads), (ph, pw), stride=(sh, sw))
                     / F.avg_pool2d(ones, (ph, pw), stride=(sh, sw)))
            extra = set(cfg) - {"pool_size", "strides", "padding"} - ignored
        elif kind == "batchnorm":
            if x.dim() not in (2, 4):
                fail("%s: batchnorm on rank-%d input is not handled here" % (name, x.dim()))
            if x.dim() == 4 and cfg.get("data_format") != fmt:
                fail("%s: data_format %r differs from the model's %r" % (name, cfg.get("data_format"), fmt))
            c = x.shape[1]
            gamma = param(name + ".gamma", (c,)) if cfg.get("scale", "true") == "true" else None
            beta = param(name + ".beta", (c,)) if cfg.get("center", "true") == "true" else None
            mean = param(name + ".moving_mean", (c,))
            var = param(name + ".moving_variance", (c,))
            x = F.batch_norm(x, mean, var, gamma, beta, training=False, eps=float(cfg["epsilon"]))
            act = cfg.get("activation", "linear")
            if act == "relu":
                x = F.relu(x)
            elif act != "linear":
                fail("%s: batchnorm activation=%s is not handled here" % (name, act))
            extra = set(cfg) - {"momentum", "epsilon", "center", "scale", "activation"} - ignored
        elif kind in ("dropout", "spatial_dropout2d"):
            extra = set(cfg) - ignored  # eval mode: the identity
        elif kind == "relu":
            x = F.relu(x)
            extra = set(cfg)
        elif kind == "flatten":
            if x.dim() == 4 and fmt == "channels_last":
                x = x.permute(0, 2, 3, 1)  # NCHW -> NHWC: features in (H, W, C) order
            x = x.reshape(x.shape[0], -1)
            extra = set(cfg)
        elif kind == "dense":
            units = int(cfg["units"])
            w = param(name + ".kernel", (x.shape[1], units)).t()
            b = param(name + ".bias", (units,)) if cfg.get("use_bias", "true") == "true" else None
            x = F.linear(x, w, b)
            if cfg.get("activation", "linear") == "relu":
                x = F.relu(x)
            extra = set(cfg) - {"units", "use_bias", "activation"}
        else:
            fail("layer type %r is not handled by this script" % kind)
        if extra:
            fail("%s: config keys %s are not handled by this script" % (name, sorted(extra)))
    if set(params) != used:
        fail("tensors never used: %s" % sorted(set(params) - used))

    logits = x.detach().numpy()
    np.save(os.path.join(d, "torch_logits.npy"), logits.astype(np.float32))
    if logits.shape != logits_nn.shape:
        fail("PyTorch logits have shape %s, nn's %s" % (logits.shape, logits_nn.shape))
    err = float(np.max(np.abs(logits - logits_nn)))
    scale = float(np.max(np.abs(logits_nn)))
    agree = int(np.sum(np.argmax(logits, 1) == np.argmax(logits_nn, 1)))
    print("torch_roundtrip: %d samples, max |torch - nn| = %.3g (logits up to %.3g), "
          "arg-max agrees on %d" % (logits.shape[0], err, scale, agree))
    if not err <= 1e-4 * (1.0 + scale):
        fail("logits differ by %.3g" % err)


if __name__ == "__main__":
    main()
