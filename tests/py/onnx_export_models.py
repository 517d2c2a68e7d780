#!/usr/bin/python3
"""Exports small PyTorch models to ONNX with reference inputs and outputs,
for tests/integration/test_onnx_import*.py (run with Debian's
/usr/bin/python3, whose python3-torch is the exporter).

    /usr/bin/python3 tests/py/onnx_export_models.py OUTDIR [NAME ...]

For each model NAME and opset K it writes OUTDIR/NAME_opK.onnx, the
inputs OUTDIR/NAME_opK.in.<input>.npy and PyTorch's outputs
OUTDIR/NAME_opK.out.<output>.npy, and OUTDIR/manifest.json listing them
({"NAME_opK": {"inputs": [...], "outputs": [...]}}). Models are in eval
mode, seeded, with a dynamic batch dimension. Add a model: a function
returning (module, example inputs as a tuple, input names, output names)
in MODELS; onnx-layers adds its layers' models the same way.
"""
import json
import os
import sys

import numpy as np
import torch
from torch import nn

OPSETS = (13, 17)


class MLP(nn.Module):
    """Gemm + activations, the PyTorch view(x.size(0), -1) reshape chain
    (Shape/Gather/Unsqueeze/Concat), scalar arithmetic, softmax."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.fc2 = nn.Linear(16, 16)
        self.out = nn.Linear(16, 5)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        x = x.view(x.size(0), -1)  # [N, 3, 4] -> [N, 12]
        h = torch.relu(self.fc1(x))
        h = self.drop(h)
        h = torch.tanh(self.fc2(h)) * 0.5 + 1.0
        h = nn.functional.leaky_relu(h, 0.2) - torch.sigmoid(h) / 4.0
        return torch.log_softmax(self.out(h), dim=-1)


class TwoHead(nn.Module):
    """A shared trunk, two heads (two outputs), concat and split, a MatMul
    with a bias on 3-D input (MatMul + Add), a mean and a clamp."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(6, 8)
        self.seq = nn.Linear(8, 8)
        self.cls = nn.Linear(16, 3)
        self.reg = nn.Linear(8, 2)

    def forward(self, x):
        # x [N, T=4, 6]
        t = nn.functional.elu(self.trunk(x))
        s = self.seq(t)                       # MatMul + Add on 3-D
        a, b = torch.split(s, [3, 5], dim=-1)
        s = torch.cat([b, a], dim=-1)
        pooled = s.mean(dim=1)                # [N, 8]
        last = t[:, -1, :]                    # Gather on a run-time tensor
        cls = torch.softmax(self.cls(torch.cat([pooled, last], dim=1)), dim=1)
        reg = torch.clamp(self.reg(pooled.transpose(0, 1).transpose(0, 1)), -0.5, 0.5)
        return cls, reg


class Ops(nn.Module):
    """Elementwise ops between run-time tensors, exp/log/sqrt/pow, sums and
    maxima, flatten, permute, slice with a step, unsqueeze/squeeze. (No
    Where: the engine has no comparison op to make its condition.)"""

    def forward(self, x, y):
        # x [N, 2, 3, 4], y [N, 2, 3, 4]
        z = x * y + x / (y.abs() + 1.0) - torch.exp(-x.abs())
        z = z + torch.sqrt(y.abs() + 0.1) + torch.log(x.abs() + 1.0) + torch.pow(x, 2.0)
        p = z.permute(0, 3, 1, 2)             # [N, 4, 2, 3]
        s = p[:, 1:4:2, :, :]                 # [N, 2, 2, 3]
        m = s.sum(dim=(2, 3), keepdim=True)   # [N, 2, 1, 1]
        m = m.squeeze(-1).squeeze(-1).unsqueeze(1)  # [N, 1, 2]
        mx = torch.amax(z, dim=-1)            # [N, 2, 3]
        flat = torch.flatten(mx, 1)           # [N, 6]
        out = torch.cat([flat, m.flatten(1)], dim=1)
        return nn.functional.elu(out, 0.7) + nn.functional.relu(-out)


class NormAttention(nn.Module):
    """A pre-norm self-attention block with a residual and an MLP: layer
    norm (decomposed at opset 13: ReduceMean/Sub/Pow/Sqrt/Div and the
    affine Mul/Add of constant tensors), heads by view/transpose on a
    dynamic batch and sequence, q k^T / sqrt(d), softmax, GELU (tanh)."""

    def __init__(self, e=8, heads=2):
        super().__init__()
        self.heads, self.d = heads, e // heads
        self.ln = nn.LayerNorm(e)
        self.q = nn.Linear(e, e)
        self.k = nn.Linear(e, e)
        self.v = nn.Linear(e, e)
        self.o = nn.Linear(e, e)
        self.ff = nn.Linear(e, e)
        with torch.no_grad():  # not the identity affine of a fresh LayerNorm
            self.ln.weight.uniform_(0.5, 1.5)
            self.ln.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        n, t, e = x.size(0), x.size(1), x.size(2)
        h = self.ln(x)
        q = self.q(h).view(n, t, self.heads, self.d).transpose(1, 2)
        k = self.k(h).view(n, t, self.heads, self.d).transpose(1, 2)
        v = self.v(h).view(n, t, self.heads, self.d).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-2, -1) / (self.d ** 0.5), dim=-1) @ v
        a = a.transpose(1, 2).reshape(n, t, e)
        x = x + self.o(a)
        return x + nn.functional.gelu(self.ff(x), approximate="tanh")


class Embed(nn.Module):
    """Int64 token ids: Gather on a constant table (an embedding layer),
    a mean over the sequence, a Gemm."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, ids):
        return self.head(self.emb(ids).mean(dim=1))


class Gelu(nn.Module):
    """nn.GELU between two Linears on wide inputs (the tails): exact, torch
    1.13 exports it as Div -> Erf -> Add -> Mul -> Mul; approximate='tanh'
    as Mul/Pow/Add/Tanh."""

    def __init__(self, approximate):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(self.act(3.0 * self.fc1(x)))


def gelu_exact():
    torch.manual_seed(6)
    return Gelu("none"), (torch.randn(5, 6),), ["x"], ["y"]


def gelu_tanh():
    torch.manual_seed(7)
    return Gelu("tanh"), (torch.randn(5, 6),), ["x"], ["y"]


def mlp():
    torch.manual_seed(1)
    return MLP(), (torch.randn(5, 3, 4),), ["x"], ["logp"]


def two_head():
    torch.manual_seed(2)
    return TwoHead(), (torch.randn(3, 4, 6),), ["x"], ["cls", "reg"]


def ops():
    torch.manual_seed(3)
    return Ops(), (torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4)), ["x", "y"], ["out"]


def norm_attention():
    torch.manual_seed(4)
    return NormAttention(), (torch.randn(2, 5, 8),), ["x"], ["y"]


def embed():
    torch.manual_seed(5)
    return Embed(), (torch.randint(0, 11, (4, 7)),), ["ids"], ["y"]


MODELS = {"embed": embed, "mlp": mlp, "two_head": two_head, "ops": ops, "norm_attention": norm_attention,
          "gelu_exact": gelu_exact, "gelu_tanh": gelu_tanh}
# Opsets per model where not OPSETS: at 17 LayerNorm is LayerNormalization,
# a layer converter of import_layers.c (onnx-layers adds 17 when it lands).
MODEL_OPSETS = {"norm_attention": (13,)}


def export(outdir, name, opset, manifest):
    model, inputs, in_names, out_names = MODELS[name]()
    model.eval()
    tag = "%s_op%d" % (name, opset)
    path = os.path.join(outdir, tag + ".onnx")
    dyn = {n: {0: "batch"} for n in in_names + out_names}
    if name == "norm_attention":  # the sequence length is dynamic too
        dyn = {n: {0: "batch", 1: "seq"} for n in in_names + out_names}
    torch.onnx.export(model, inputs, path, input_names=in_names, output_names=out_names,
                      dynamic_axes=dyn, opset_version=opset, do_constant_folding=True)
    with torch.no_grad():
        outs = model(*inputs)
    if not isinstance(outs, (tuple, list)):
        outs = (outs,)
    for n, t in zip(in_names, inputs):
        np.save(os.path.join(outdir, "%s.in.%s.npy" % (tag, n)), t.numpy())
    for n, t in zip(out_names, outs):
        np.save(os.path.join(outdir, "%s.out.%s.npy" % (tag, n)), t.numpy())
    manifest[tag] = {"model": name, "opset": opset, "inputs": in_names, "outputs": out_names}


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip())
        return 2
    outdir = argv[1]
    names = argv[2:] or sorted(MODELS)
    os.makedirs(outdir, exist_ok=True)
    manifest = {}
    for name in names:
        if name not in MODELS:
            print("unknown model %r (known: %s)" % (name, ", ".join(sorted(MODELS))))
            return 2
        for opset in MODEL_OPSETS.get(name, OPSETS):
            export(outdir, name, opset, manifest)
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
