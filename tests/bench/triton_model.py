"""The Triton peer of serve_table.sh: the mlp (784-512 relu-256 relu-10) in
torch under no_grad, in Triton's Python backend (model.py of a model
repository; serve_table.sh copies it there and fills in the two paths).

It loads the weights the fluxiond mlp serves (`fluxion model export`, names
"fc1.weight" ..., nn.Linear's [out,in] layout), so both servers compute the
same function. One torch thread: the instance is KIND_CPU count 1.
"""
import json
import struct
import sys

SITE_PACKAGES = "@SITE_PACKAGES@"  # the benchmark venv's torch and numpy
WEIGHTS = "@WEIGHTS@"
sys.path.insert(0, SITE_PACKAGES)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    out = {}
    for name, t in header.items():
        if name != "__metadata__" and t["dtype"] == "F32":
            b, e = t["data_offsets"]
            out[name] = np.frombuffer(body[b:e], dtype=np.float32).reshape(t["shape"]).copy()
    return out


class TritonPythonModel:
    def initialize(self, args):
        torch.set_num_threads(1)
        self.net = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                                 nn.Linear(256, 10)).eval()
        w = load_safetensors(WEIGHTS)
        with torch.no_grad():
            for name, lin in (("fc1", self.net[0]), ("fc2", self.net[2]), ("fc3", self.net[4])):
                key = next(k for k in w if k.endswith(name + ".weight"))
                lin.weight.copy_(torch.from_numpy(w[key]))
                lin.bias.copy_(torch.from_numpy(w[key[:-len("weight")] + "bias"]))

    def execute(self, requests):
        xs = [pb_utils.get_input_tensor_by_name(r, "x").as_numpy() for r in requests]
        with torch.no_grad():
            y = self.net(torch.from_numpy(np.concatenate(xs))).numpy()
        out, at = [], 0
        for x in xs:
            out.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("logits", y[at:at + len(x)])]))
            at += len(x)
        return out
