"""Models defined over RPC equal their PyTorch twins: an MLP, a CNN
(conv2d + batchnorm + pool + flatten + dense) and an LSTM. Weights move both
ways through safetensors with the same parameter names. Skipped (77) when
torch is not installed."""
import sys

import fxtest
from fxtest import np

try:
    import torch
    from torch import nn
except ImportError:
    print("skipped: torch is not installed for this python")
    sys.exit(fxtest.SKIP)

torch.manual_seed(0)
torch.set_num_threads(1)
ATOL = 1e-4


def dense(name, src, n_in, n_out, act=None):
    attrs = {"in_features": n_in, "out_features": n_out}
    if act:
        attrs["activation"] = act
    return {"name": name, "op": "dense", "inputs": [src], "attrs": attrs}


MLP_SPEC = {
    "inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 6]}],
    "nodes": [dense("fc1", "x", 6, 16, "relu"), dense("fc2", "fc1", 16, 16, "tanh"),
              dense("fc3", "fc2", 16, 4), {"name": "p", "op": "softmax", "inputs": ["fc3"]}],
    "outputs": [{"name": "logits", "source": "fc3"}, {"name": "probs", "source": "p"}],
}


class TorchMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        logits = self.fc3(torch.tanh(self.fc2(torch.relu(self.fc1(x)))))
        return {"logits": logits, "probs": torch.softmax(logits, dim=-1)}


CNN_SPEC = {
    "inputs": [{"name": "image", "dtype": "FP32", "shape": [-1, 3, 12, 12]}],
    "nodes": [
        {"name": "conv1", "op": "conv2d", "inputs": ["image"],
         "attrs": {"in_channels": 3, "out_channels": 8, "kernel_size": 3, "padding": 1}},
        {"name": "bn1", "op": "batchnorm2d", "inputs": ["conv1"], "attrs": {"num_features": 8}},
        {"name": "act1", "op": "relu", "inputs": ["bn1"]},
        {"name": "pool", "op": "maxpool2d", "inputs": ["act1"], "attrs": {"kernel_size": 2}},
        {"name": "conv2", "op": "conv2d", "inputs": ["pool"],
         "attrs": {"in_channels": 8, "out_channels": 4, "kernel_size": [3, 2],
                   "stride": [1, 2], "activation": "relu"}},
        {"name": "flat", "op": "flatten", "inputs": ["conv2"]},
        dense("fc", "flat", 4 * 4 * 3, 5),
    ],
    "outputs": [{"name": "scores", "source": "fc"}, {"name": "features", "source": "pool"}],
}


class TorchCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 4, (3, 2), stride=(1, 2))
        self.fc = nn.Linear(4 * 4 * 3, 5)

    def forward(self, image):
        pool = torch.max_pool2d(torch.relu(self.bn1(self.conv1(image))), 2)
        h = torch.relu(self.conv2(pool))
        return {"scores": self.fc(torch.flatten(h, 1)), "features": pool}


LSTM_SPEC = {
    "inputs": [{"name": "seq", "dtype": "FP32", "shape": [-1, 7, 5]}],
    "nodes": [
        {"name": "lstm", "op": "lstm", "inputs": ["seq"],
         "attrs": {"input_size": 5, "hidden_size": 6, "num_layers": 2}},
        dense("head", "lstm", 6, 2),
    ],
    "outputs": [{"name": "out", "source": "lstm"}, {"name": "h_n", "source": "lstm:1"},
                {"name": "c_n", "source": "lstm:2"}, {"name": "head", "source": "head"}],
}


class TorchLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 6, num_layers=2, batch_first=True)
        self.head = nn.Linear(6, 2)

    def forward(self, seq):
        out, (h_n, c_n) = self.lstm(seq)
        return {"out": out, "h_n": h_n, "c_n": c_n, "head": self.head(out)}


GRU_SPEC = {
    "inputs": [{"name": "seq", "dtype": "FP32", "shape": [-1, 6, 3]},
               {"name": "lengths", "dtype": "INT64", "shape": [-1]}],
    "nodes": [{"name": "gru", "op": "gru", "inputs": ["seq", "lengths"],
               "attrs": {"input_size": 3, "hidden_size": 4, "bidirectional": True}}],
    "outputs": [{"name": "out", "source": "gru"}, {"name": "h_n", "source": "gru:1"}],
}


class TorchGRU(nn.Module):
    """Variable-length sequences: PyTorch packs them; outputs past each
    length are zero, h_n is taken at each sample's last valid step."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 4, bidirectional=True, batch_first=True)

    def forward(self, seq, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(seq, lengths, batch_first=True,
                                                   enforce_sorted=False)
        out, h_n = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                  total_length=seq.shape[1])
        return {"out": out, "h_n": h_n}


BLOCK_SPEC = {
    "inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 5, 8]},
               {"name": "lengths", "dtype": "INT64", "shape": [-1]}],
    "nodes": [
        {"name": "attn", "op": "multihead_attention", "inputs": ["x", "lengths"],
         "attrs": {"embed_dim": 8, "num_heads": 2}},
        {"name": "res1", "op": "add", "inputs": ["x", "attn"]},
        {"name": "ln", "op": "layernorm", "inputs": ["res1"], "attrs": {"normalized_shape": [8]}},
        dense("ff1", "ln", 8, 16, "gelu"),
        dense("ff2", "ff1", 16, 8),
        {"name": "res2", "op": "add", "inputs": ["ln", "ff2"]},
    ],
    "outputs": [{"name": "out", "source": "res2"}, {"name": "attn", "source": "attn"}],
}


class TorchBlock(nn.Module):
    """A transformer encoder block (post-norm) with padded keys masked."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.ln = nn.LayerNorm(8)
        self.ff1, self.ff2 = nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x, lengths):
        mask = torch.arange(x.shape[1])[None, :] >= lengths[:, None]
        attn, _ = self.attn(x, x, x, key_padding_mask=mask, need_weights=False)
        ln = self.ln(x + attn)
        ff = self.ff2(nn.functional.gelu(self.ff1(ln), approximate="tanh"))
        return {"out": ln + ff, "attn": attn}


GELU_SPEC = {
    "inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 6]}],
    "nodes": [dense("fc1", "x", 6, 16),
              {"name": "wide", "op": "scale", "inputs": ["fc1"], "attrs": {"value": 3.0}},
              {"name": "exact", "op": "gelu", "inputs": ["wide"], "attrs": {"approximate": "none"}},
              {"name": "approx", "op": "gelu", "inputs": ["wide"], "attrs": {"approximate": "tanh"}},
              {"name": "er", "op": "erf", "inputs": ["approx"]},
              {"name": "sum", "op": "add", "inputs": ["exact", "er"]},
              dense("fc2", "sum", 16, 3)],
    "outputs": [{"name": "y", "source": "fc2"}, {"name": "exact", "source": "exact"}],
}


class TorchGelu(nn.Module):
    """nn.GELU() (exact) and its tanh form, torch.erf, on wide inputs."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 3)

    def forward(self, x):
        h = 3.0 * self.fc1(x)
        exact = nn.GELU()(h)
        er = torch.erf(nn.GELU(approximate="tanh")(h))
        return {"y": self.fc2(exact + er), "exact": exact}


def state_arrays(module):
    """The module's state_dict as numpy, without PyTorch's batch counter."""
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def load_arrays(module, arrays):
    """Loads {name: array} strictly (the counter is kept from the module)."""
    state = module.state_dict()
    theirs = {k for k in state if not k.endswith("num_batches_tracked")}
    if set(arrays) != theirs:
        raise AssertionError("parameter names differ: daemon-only %s, torch-only %s"
                             % (sorted(set(arrays) - theirs), sorted(theirs - set(arrays))))
    for k, v in arrays.items():
        state[k] = torch.from_numpy(v.copy())
    module.load_state_dict(state, strict=True)


class TorchTest(fxtest.DaemonTest):

    def check(self, name, spec, module, inputs, seed):
        """Daemon weights -> torch: same outputs; then torch weights ->
        daemon (ImportWeights): same outputs again."""
        self.c.create_model(name, spec, seed=seed)
        module.eval()
        load_arrays(module, self.c.export_arrays(name))
        self.compare(name, module, inputs)
        # Perturb every tensor in torch (running statistics too), import.
        rng = np.random.default_rng(seed)
        with torch.no_grad():
            for k, v in module.state_dict().items():
                if k.endswith("running_var"):
                    v.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, v.shape).astype(np.float32)))
                elif v.dtype == torch.float32:
                    v.add_(torch.from_numpy(0.1 * rng.standard_normal(v.shape).astype(np.float32)))
        self.assertEqual(self.c.import_weights(name, state_arrays(module)).version, 2)
        self.compare(name, module, inputs)

    def compare(self, name, module, inputs):
        with torch.no_grad():
            want = module(**{k: torch.from_numpy(v) for k, v in inputs.items()})
        for raw in (False, True):
            got = self.c.infer(name, inputs, raw=raw)
            self.assertEqual(set(got), set(want))
            for k in want:
                w = want[k].numpy()
                self.assertEqual(got[k].shape, w.shape, k)
                np.testing.assert_allclose(got[k], w, rtol=1e-4, atol=ATOL, err_msg=k)

    def test_mlp(self):
        self.check("mlp", MLP_SPEC, TorchMLP(), {"x": fxtest.randn(1, 9, 6)}, seed=1)

    def test_cnn(self):
        self.check("cnn", CNN_SPEC, TorchCNN(), {"image": fxtest.randn(2, 4, 3, 12, 12)}, seed=2)
        m = self.c.get_model("cnn")
        trainable = {p.name: p.trainable for p in m.parameters}
        self.assertFalse(trainable["bn1.running_mean"])
        self.assertFalse(trainable["bn1.running_var"])
        self.assertTrue(trainable["bn1.weight"])

    def test_lstm(self):
        self.check("lstm", LSTM_SPEC, TorchLSTM(), {"seq": fxtest.randn(3, 4, 7, 5)}, seed=3)

    def test_bidirectional_gru_with_lengths(self):
        inputs = {"seq": fxtest.randn(4, 5, 6, 3),
                  "lengths": np.array([6, 1, 3, 5, 2], dtype=np.int64)}
        self.check("gru", GRU_SPEC, TorchGRU(), inputs, seed=4)
        for bad in ([7, 1, 3, 5, 2], [0, 1, 3, 5, 2], [-1, 1, 3, 5, 2]):
            with self.subTest(lengths=bad):
                self.assertCode(fxtest.C.INVALID_ARGUMENT, self.c.infer, "gru",
                                dict(inputs, lengths=np.array(bad, dtype=np.int64)),
                                contains="gru")

    def test_attention_block(self):
        inputs = {"x": fxtest.randn(5, 3, 5, 8), "lengths": np.array([5, 2, 4], dtype=np.int64)}
        self.check("block", BLOCK_SPEC, TorchBlock(), inputs, seed=5)

    def test_gelu_exact_and_erf(self):
        self.check("gelu", GELU_SPEC, TorchGelu(), {"x": fxtest.randn(6, 7, 6)}, seed=6)


if __name__ == "__main__":
    fxtest.main()
