#!/usr/bin/python3
"""Cross-check of models built from a ModelSpec (server/graph.c) against PyTorch.

Usage: check_graph_torch.py PATH/TO/test_graph

`test_graph --export DIR` builds each model below from its spec, randomises
its weights and writes DIR/<model>.weights.safetensors (the graph's
parameters under their "<node>.<param>" names) and DIR/<model>.io.safetensors
(the inputs, and the outputs as "out.<name>"). Here the same models are
written as ordinary torch.nn modules whose attribute names are the node
names, the weights are loaded with load_state_dict (so the names and layouts
must be PyTorch's), and the outputs are recomputed and compared.

The safetensors files are read with struct + json + numpy only, following
the format's description (8-byte little-endian header length, JSON header,
raw data). Exits 77 (skipped) when torch or numpy is missing.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:
    print("skipping: %s" % e)
    sys.exit(77)

DTYPES = {"F32": "<f4", "I32": "<i4", "I64": "<i8"}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        arr = np.frombuffer(data[b:end], dtype=DTYPES[e["dtype"]]).reshape(e["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


# ------------------------------------------------------------------ models
# Attribute names are the spec's node names (tests/unit/test_graph.c).

class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, io):
        return {"y": self.fc2(F.relu(self.fc1(io["x"])))}


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=(1, 2), padding=1, bias=False)
        self.pool2 = nn.AvgPool2d(2, stride=1)
        self.fc = nn.Linear(18, 5)

    def forward(self, io):
        h = self.pool1(F.relu(self.bn1(self.conv1(io["img"]))))
        h = torch.flatten(self.pool2(self.conv2(h)), 1)
        return {"logits": self.fc(h)}


class LSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True)

    def forward(self, io):
        x, lengths = io["x"], io["len"].long()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                   enforce_sorted=False)
        out, (h_n, c_n) = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                  total_length=x.shape[1])
        return {"out": out, "h_n": h_n, "c_n": c_n}


class MHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.ln = nn.LayerNorm(8)

    def forward(self, io):
        x, lengths = io["x"], io["len"]
        mask = torch.arange(x.shape[1])[None, :] >= lengths[:, None]
        a, _ = self.attn(x, x, x, key_padding_mask=mask, need_weights=False)
        return {"y": self.ln(a + x)}


class Misc(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 6, padding_idx=0)
        self.gru = nn.GRU(6, 5, batch_first=True)
        self.conv = nn.Conv1d(5, 4, 3, padding=1)
        self.gn = nn.GroupNorm(2, 4)

    def forward(self, io):
        h, _ = self.gru(self.emb(io["tok"]))
        h = self.gn(self.conv(h.transpose(1, 2)))
        pooled = h.mean(dim=2)
        return {"pooled": pooled, "loss": F.mse_loss(pooled, io["target"])}


MODELS = {"mlp": MLP, "cnn": CNN, "lstm": LSTM, "mha": MHA, "misc": Misc}


def check_model(name, cls, d):
    weights = read_safetensors(os.path.join(d, name + ".weights.safetensors"))
    io = read_safetensors(os.path.join(d, name + ".io.safetensors"))
    model = cls()
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # The engine keeps no batch counter; everything else must match by name.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        return "%s: missing %s, unexpected %s" % (name, missing, unexpected)
    model.eval()
    inputs = {k: v for k, v in io.items() if not k.startswith("out.")}
    with torch.no_grad():
        want = model(inputs)
    errors = []
    for out_name, ref in want.items():
        got = io.get("out." + out_name)
        if got is None:
            errors.append("%s: output %s was not exported" % (name, out_name))
        elif tuple(got.shape) != tuple(ref.shape):
            errors.append("%s: output %s shape %s, torch %s" % (name, out_name,
                                                                tuple(got.shape),
                                                                tuple(ref.shape)))
        elif not torch.allclose(got, ref.float(), rtol=1e-4, atol=1e-5):
            err = (got - ref).abs().max().item()
            errors.append("%s: output %s differs from torch by %g" % (name, out_name, err))
        else:
            print("ok   %s.%s %s" % (name, out_name, tuple(got.shape)))
    return "\n".join(errors)


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([sys.argv[1], "--export", d], capture_output=True, text=True)
        if r.returncode != 0:
            print("FAIL: test_graph --export: %s%s" % (r.stdout, r.stderr), file=sys.stderr)
            return 1
        failures = [m for m in (check_model(n, c, d) for n, c in MODELS.items()) if m]
    for f in failures:
        print("FAIL: " + f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
