"""PyTorch models with convolutions, pooling, normalisations and recurrent
layers exported to ONNX for tests/integration/test_onnx_layers.py. Run
with Debian's /usr/bin/python3 (torch 1.13):

    onnx_layers_models.py OUT_DIR

writes, for every model NAME and opset K it is exported at, OUT_DIR/NAME_opK.onnx
and OUT_DIR/NAME.npz holding the test inputs ("in:<input>") and PyTorch's
outputs for them ("out:<output>"), and refusals the importer must give:
OUT_DIR/bad_NAME.onnx with OUT_DIR/bad.txt listing "NAME word..." (words
the error must name). Shapes are fixed except in the *_dynamic models
(any batch size); weights and batch-norm statistics are random so that a
transposed or misordered weight shows."""
import os
import sys
import warnings

import numpy as np
import torch
from torch import nn

warnings.filterwarnings("ignore")
torch.manual_seed(0)
torch.set_num_threads(1)


def randomize(module, seed):
    """Weights and running statistics far from their initial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dtype == torch.float32:
                t.add_(0.3 * torch.randn(t.shape, generator=g))
    return module.eval()


class CNN(nn.Module):
    """BatchNorm on the input, Conv + BatchNorm + ReLU + MaxPool, a grouped
    strided conv, AvgPool. (The exporter folds a BatchNorm that follows a
    Conv into the conv's weights: bn0 is the one that stays a
    BatchNormalization.)"""

    def __init__(self):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(3)
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, (3, 2), stride=(1, 2), groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 2 * 1, 5)

    def forward(self, image):
        h = torch.max_pool2d(torch.relu(self.bn1(self.conv1(self.bn0(image)))), 2)
        h = nn.functional.avg_pool2d(torch.relu(self.bn2(self.conv2(h))), 2)
        return self.fc(torch.flatten(h, 1))


class Residual(nn.Module):
    """A ResNet basic block, global average pooling, a head; and a
    transposed conv + padded max pool branch."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.head, self.bn_head = nn.Linear(4, 3), nn.BatchNorm1d(3)
        self.up = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.bn2(self.conv2(h)) + x)
        pooled = nn.functional.adaptive_avg_pool2d(h, 1)
        return self.bn_head(self.head(torch.flatten(pooled, 1))), self.pool(self.up(h))


class PackedRNN(nn.Module):
    """A batch-first recurrent layer over padded sequences of given lengths
    (packed: PyTorch exports sequence_lens)."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn
        self.export = True   # the exporter needs sorted lengths; the reference does not

    def forward(self, seq, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(seq, lengths, batch_first=True,
                                                   enforce_sorted=self.export)
        out, state = self.rnn(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                  total_length=seq.shape[1])
        if isinstance(state, tuple):
            return (out,) + state
        return out, state


class PackedBiLSTM(nn.Module):
    """Two bidirectional layers over packed sequences from given initial
    states (h0, c0 [layers * 2, N, H])."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(5, 3, num_layers=2, bidirectional=True, batch_first=True)
        self.export = True

    def forward(self, seq, lengths, h0, c0):
        packed = nn.utils.rnn.pack_padded_sequence(seq, lengths, batch_first=True,
                                                   enforce_sorted=self.export)
        out, (h_n, c_n) = self.rnn(packed, (h0, c0))
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                  total_length=seq.shape[1])
        return out, h_n, c_n


class TimeMajorRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(4, 5, nonlinearity="relu")

    def forward(self, seq):
        return self.rnn(seq)


class AttentionBlock(nn.Module):
    """Self-attention + residual + LayerNorm + feed-forward (post-norm)."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.ln1, self.ln2 = nn.LayerNorm(8), nn.LayerNorm(8)
        self.ff1, self.ff2 = nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x):
        a, _ = self.attn(x, x, x, need_weights=False)
        h = self.ln1(x + a)
        return self.ln2(h + self.ff2(torch.relu(self.ff1(h))))


class Pooling(nn.Module):
    """Padded average pools (PyTorch writes count_include_pad=True as Pad +
    AveragePool), a ceil_mode max pool whose size ceil does not change.
    (nn.ZeroPad2d exports its pads as shape arithmetic that is not folded.)"""

    def __init__(self):
        super().__init__()
        # padding on one axis only (the engine once read [1, 0] as [1, 1])
        self.conv = nn.Conv2d(3, 3, 3, padding=(1, 0))
        self.max_h = nn.MaxPool2d(3, stride=2, padding=(0, 1))
        self.avg = nn.AvgPool2d(3, stride=1, padding=1)
        self.avg_excl = nn.AvgPool2d(2, padding=1, count_include_pad=False)
        self.max = nn.MaxPool2d(3, stride=2, ceil_mode=True)

    def forward(self, x):
        return self.avg(x), self.avg_excl(x), self.max(x), self.max_h(self.conv(x))


class Conv1dNet(nn.Module):
    """BatchNorm1d over [N, C, L], a dilated padded Conv1d, LayerNorm over
    two trailing dims (without affine weights, torch 1.13 writes an invalid
    LayerNormalization at opset 17)."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.conv = nn.Conv1d(3, 4, 3, padding=2, dilation=2, stride=2)
        self.ln = nn.LayerNorm([4, 5])

    def forward(self, x):
        return self.ln(self.conv(self.bn(x)))


class GroupNormNet(nn.Module):
    """GroupNorm (PyTorch 1.13: Reshape, InstanceNormalization with unit
    scale, Reshape, Mul and Add by [C, 1, 1] weights), without affine
    weights, and an affine InstanceNorm."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)
        self.gn = nn.GroupNorm(3, 6)
        self.gn_plain = nn.GroupNorm(2, 6, affine=False)
        self.inorm = nn.InstanceNorm2d(6, affine=True)

    def forward(self, x):
        h = self.gn(self.conv(x))
        return h, self.inorm(self.gn_plain(h))


def rng_inputs(seed, **shapes):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def models():
    """Dicts: name, module, inputs (for the export), test (test inputs, if
    other), names (inputs), outputs, opsets, dynamic (input -> axes of any
    size, as torch.onnx.export's dynamic_axes; the batch)."""
    lens_export = np.array([7, 5, 2], dtype=np.int64)
    lens_test = np.array([3, 7, 1], dtype=np.int64)
    seq = rng_inputs(3, seq=(3, 7, 5))["seq"]
    yield dict(name="cnn", module=randomize(CNN(), 1), inputs=rng_inputs(1, image=(2, 3, 12, 12)),
               names=["image"], outputs=["scores"], opsets=(13, 17))
    # exported for any batch size, tested with another one
    yield dict(name="cnn_dynamic", module=randomize(CNN(), 11),
               inputs=rng_inputs(11, image=(2, 3, 12, 12)), test=rng_inputs(12, image=(3, 3, 12, 12)),
               names=["image"], outputs=["scores"], opsets=(17,),
               dynamic={"image": {0: "n"}, "scores": {0: "n"}})
    yield dict(name="residual", module=randomize(Residual(), 2), inputs=rng_inputs(2, x=(2, 4, 6, 6)),
               names=["x"], outputs=["logits", "upsampled"], opsets=(13, 17))
    yield dict(name="lstm", module=PackedRNN(randomize(nn.LSTM(5, 6, num_layers=2, batch_first=True), 3)),
               inputs={"seq": seq, "lengths": lens_export}, test={"seq": seq, "lengths": lens_test},
               names=["seq", "lengths"], outputs=["out", "h_n", "c_n"], opsets=(13, 17))
    yield dict(name="lstm_dynamic",
               module=PackedRNN(randomize(nn.LSTM(5, 6, batch_first=True), 13)),
               inputs={"seq": seq, "lengths": lens_export},
               test={"seq": seq[:2], "lengths": np.array([4, 7], dtype=np.int64)},
               names=["seq", "lengths"], outputs=["out", "h_n", "c_n"], opsets=(17,),
               dynamic={"seq": {0: "n"}, "lengths": {0: "n"}, "out": {0: "n"}, "h_n": {1: "n"},
                        "c_n": {1: "n"}})
    states = rng_inputs(14, h0=(4, 3, 3), c0=(4, 3, 3))
    yield dict(name="bilstm", module=randomize(PackedBiLSTM(), 14),
               inputs=dict(states, seq=seq, lengths=lens_export),
               test=dict(states, seq=seq, lengths=lens_test),
               names=["seq", "lengths", "h0", "c0"], outputs=["out", "h_n", "c_n"], opsets=(13,))
    yield dict(name="gru", module=PackedRNN(randomize(nn.GRU(5, 4, bidirectional=True, batch_first=True), 4)),
               inputs={"seq": seq, "lengths": lens_export}, test={"seq": seq, "lengths": lens_test},
               names=["seq", "lengths"], outputs=["out", "h_n"], opsets=(13, 17))
    yield dict(name="rnn", module=randomize(TimeMajorRNN(), 5), inputs=rng_inputs(5, seq=(6, 2, 4)),
               names=["seq"], outputs=["out", "h_n"], opsets=(13,))
    yield dict(name="attention", module=randomize(AttentionBlock(), 6), inputs=rng_inputs(6, x=(2, 5, 8)),
               names=["x"], outputs=["y"], opsets=(13, 17))
    yield dict(name="pooling", module=randomize(Pooling(), 10), inputs=rng_inputs(9, x=(2, 3, 7, 7)),
               names=["x"], outputs=["avg", "avg_excl", "max", "one_axis"], opsets=(13, 17))
    yield dict(name="conv1d", module=randomize(Conv1dNet(), 8), inputs=rng_inputs(8, x=(2, 3, 9)),
               names=["x"], outputs=["y"], opsets=(17,))
    yield dict(name="groupnorm", module=randomize(GroupNormNet(), 7),
               inputs=rng_inputs(7, x=(2, 3, 5, 4)), names=["x"], outputs=["gn", "inorm"],
               opsets=(13, 17))


class CeilPool(nn.Module):
    def forward(self, x):
        return torch.max_pool2d(x, 2, ceil_mode=True)


class StatefulLSTM(nn.Module):
    """Initial states without lengths: the engine takes lengths first."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(2, 3)

    def forward(self, x, h0, c0):
        return self.rnn(x, (h0, c0))[0]


class DilatedPool(nn.Module):
    def forward(self, x):
        return torch.max_pool2d(x, 2, dilation=2)


def bad_models():
    """Models the importer must refuse: (name, module, inputs, words the
    error names)."""
    x = rng_inputs(8, x=(1, 2, 7, 7))
    yield ("ceil_pool", CeilPool(), x, ["MaxPool", "ceil_mode"])
    yield ("dilated_pool", DilatedPool(), x, ["MaxPool", "dilations"])
    yield ("conv3d", nn.Conv3d(2, 2, 3).eval(), rng_inputs(8, x=(1, 2, 4, 4, 4)),
           ["Conv", "3-D"])
    yield ("lstm_state", StatefulLSTM().eval(), rng_inputs(8, x=(4, 1, 2), h0=(1, 1, 3), c0=(1, 1, 3)),
           ["LSTM", "sequence_lens"])


def export(module, inputs, names, outputs, path, opset, dynamic=None):
    args = tuple(torch.from_numpy(inputs[k]) for k in names)
    torch.onnx.export(module, args, path, opset_version=opset, input_names=names,
                      output_names=outputs, do_constant_folding=True, dynamic_axes=dynamic)


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for m in models():
        module, names, outputs = m["module"], m["names"], m["outputs"]
        for opset in m["opsets"]:
            export(module, m["inputs"], names, outputs,
                   os.path.join(out_dir, "%s_op%d.onnx" % (m["name"], opset)), opset,
                   m.get("dynamic"))
        test_inputs = m.get("test") or m["inputs"]
        if hasattr(module, "export"):
            module.export = False
        with torch.no_grad():
            got = module(*(torch.from_numpy(test_inputs[k]) for k in names))
        if isinstance(got, torch.Tensor):
            got = (got,)
        arrays = {"in:" + k: v for k, v in test_inputs.items()}
        arrays.update({"out:" + k: v.numpy() for k, v in zip(outputs, got)})
        np.savez(os.path.join(out_dir, m["name"] + ".npz"), **arrays)
    with open(os.path.join(out_dir, "bad.txt"), "w") as f:
        for name, module, inputs, words in bad_models():
            export(module, inputs, list(inputs), ["y"], os.path.join(out_dir, "bad_%s.onnx" % name),
                   13)
            f.write("%s %s\n" % (name, " ".join(words)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: onnx_layers_models.py OUT_DIR")
    main(sys.argv[1])
