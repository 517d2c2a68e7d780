#!/usr/bin/env python3
"""make_corpus.py - writes the fuzzers' seed corpora (tests/fuzz/corpus/)
and dictionaries (tests/fuzz/dict/) from valid messages.

    PYTHONPATH=build/python python3 tests/fuzz/make_corpus.py

Seeds are small valid inputs of each target, in the target's input format
(its selector bytes first: see each fuzz_*.c). Regression inputs found by
fuzzing live in the same folders under names starting with "crash-" or
"regress-"; this script never removes them. The seed files it writes have
descriptive names and are rewritten in place, so running it again gives
the same files.
"""
import json
import os
import struct
import sys

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor as FD

from fluxion.v1 import admin_pb2, cluster_pb2, dataset_pb2, model_pb2, training_pb2
from grpc_health.v1 import health_pb2
from grpcreflect.v1 import reflection_pb2 as refl_v1
from grpcreflect.v1alpha import reflection_pb2 as refl_v1a
from inference import grpc_service_pb2 as infer_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def msg_class(d):
    from google.protobuf import message_factory
    if hasattr(message_factory, "GetMessageClass"):
        return msg_class(d)
    return message_factory.MessageFactory(d.file.pool).GetPrototype(d)


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def fill(msg, depth=0):
    """Every field of msg set to a small valid value (nested to depth 3)."""
    for f in msg.DESCRIPTOR.fields:
        if f.containing_oneof is not None and msg.WhichOneof(f.containing_oneof.name):
            continue
        rep = f.label == FD.LABEL_REPEATED
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            kf, vf = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            key = "k" if kf.type == FD.TYPE_STRING else 1
            m = getattr(msg, f.name)
            if vf.message_type is not None:
                if depth < 3:
                    fill(m[key], depth + 1)
            else:
                m[key] = scalar(vf)
            continue
        if f.message_type is not None:
            if depth >= 3:
                continue
            sub = getattr(msg, f.name).add() if rep else getattr(msg, f.name)
            fill(sub, depth + 1)
            if not rep and not sub.ListFields():
                sub.SetInParent()
            continue
        v = scalar(f)
        if rep:
            getattr(msg, f.name).append(v)
        else:
            setattr(msg, f.name, v)
    return msg


def scalar(f):
    if f.type == FD.TYPE_STRING:
        return "name_" + f.name[:8]
    if f.type == FD.TYPE_BYTES:
        return b"\x00\x00\x80\x3f"
    if f.type == FD.TYPE_BOOL:
        return True
    if f.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return 0.5
    if f.type == FD.TYPE_ENUM:
        vals = f.enum_type.values
        return vals[1].number if len(vals) > 1 else vals[0].number
    return 1


# ------------------------------------------------------------------ specs

def node(name, op, inputs, **attrs):
    return {"name": name, "op": op, "inputs": inputs, "attrs": attrs}


def spec(inputs, nodes, outputs):
    return {"inputs": [{"name": n, "dtype": d, "shape": s} for n, d, s in inputs],
            "nodes": nodes,
            "outputs": [{"name": "out%d" % i, "source": s} for i, s in enumerate(outputs)]}


SPECS = {
    "mlp": spec([("x", "FP32", [-1, 4])],
                [node("fc1", "dense", ["x"], in_features=4, out_features=8, activation="relu"),
                 node("drop", "dropout", ["fc1"], p=0.1),
                 node("fc2", "dense", ["drop"], in_features=8, out_features=3)], ["fc2"]),
    "cnn": spec([("img", "FP32", [-1, 1, 8, 8])],
                [node("c1", "conv2d", ["img"], in_channels=1, out_channels=4, kernel_size=3, padding=1),
                 node("bn", "batchnorm2d", ["c1"], num_features=4),
                 node("act", "activation", ["bn"], activation="relu"),
                 node("mp", "maxpool2d", ["act"], kernel_size=2),
                 node("ap", "avgpool2d", ["mp"], kernel_size=2, stride=1),
                 node("gn", "groupnorm", ["ap"], num_groups=2, num_channels=4),
                 node("ct", "conv_transpose2d", ["gn"], in_channels=4, out_channels=2, kernel_size=2, stride=2),
                 node("aap", "adaptive_avgpool2d", ["ct"], output_size=2),
                 node("gap", "global_avgpool2d", ["ct"]),
                 node("fl", "flatten", ["aap"]),
                 node("fc", "dense", ["fl"], in_features=8, out_features=2)], ["fc", "gap"]),
    "conv1d": spec([("s", "FP32", [-1, 2, 10])],
                   [node("c", "conv1d", ["s"], in_channels=2, out_channels=3, kernel_size=3, dilation=2),
                    node("bn", "batchnorm1d", ["c"], num_features=3),
                    node("fl", "flatten", ["bn"]),
                    node("fc", "dense", ["fl"], in_features=18, out_features=1)], ["fc"]),
    "rnn": spec([("seq", "FP32", [-1, 5, 3])],
                [node("l", "lstm", ["seq"], input_size=3, hidden_size=4, num_layers=2, bidirectional=True),
                 node("g", "gru", ["seq"], input_size=3, hidden_size=4),
                 node("r", "rnn", ["seq"], input_size=3, hidden_size=2, nonlinearity="relu"),
                 node("cat", "concat", ["l", "g"], axis=2),
                 node("ln", "layernorm", ["cat"], normalized_shape=[12]),
                 node("sl", "slice", ["ln"], axis=1, start=-1),
                 node("rs", "reshape", ["sl"], shape=[0, -1])], ["rs", "l:1", "r:1"]),
    "attention": spec([("x", "FP32", [-1, 4, 8]), ("len", "INT64", [-1])],
                      [node("mha", "multihead_attention", ["x", "len"], embed_dim=8, num_heads=2, causal=True),
                       node("sdpa", "scaled_dot_product_attention", ["mha", "x", "x"]),
                       node("tr", "transpose", ["sdpa"], dim0=1, dim1=2),
                       node("pm", "permute", ["tr"], dims=[0, 2, 1]),
                       node("sm", "softmax", ["pm"], axis=-1),
                       node("lsm", "log_softmax", ["pm"], axis=-1)], ["sm", "lsm"]),
    "embedding": spec([("ids", "INT64", [-1, 5]), ("y", "INT64", [-1])],
                      [node("emb", "embedding", ["ids"], num_embeddings=10, embedding_dim=4, padding_idx=0),
                       node("m", "mean", ["emb"], axes=[1]),
                       node("fc", "dense", ["m"], in_features=4, out_features=3),
                       node("ce", "cross_entropy", ["fc", "y"])], ["fc", "ce"]),
    "pointwise": spec([("a", "FP32", [-1, 6]), ("b", "FP32", [-1, 6]), ("c", "INT32", [-1, 6])],
                      [node("s", "split", ["a"], axis=1, sizes=[2, 4]),
                       node("cat", "concat", ["s:1", "s:0"], axis=1),
                       node("ad", "add", ["cat", "b"]), node("sb", "sub", ["ad", "b"]),
                       node("mu", "mul", ["sb", "b"]), node("dv", "div", ["mu", "b"]),
                       node("ng", "neg", ["dv"]), node("ex", "exp", ["ng"]),
                       node("lg", "log", ["ex"]), node("ab", "abs", ["lg"]),
                       node("sq", "sqrt", ["ab"]), node("pw", "pow", ["sq"], exponent=2.0),
                       node("sc", "scale", ["pw"], value=0.5), node("as", "add_scalar", ["sc"], value=1.0),
                       node("re", "relu", ["as"]), node("lr", "leaky_relu", ["re"], negative_slope=0.1),
                       node("el", "elu", ["lr"], alpha=1.0), node("ge", "gelu", ["el"]),
                       node("sg", "sigmoid", ["ge"]), node("th", "tanh", ["sg"]),
                       node("cl", "clamp", ["th"], min=-1.0, max=1.0),
                       node("wh", "where", ["c", "cl", "a"]),
                       node("su", "sum", ["wh"], axes=[1], keepdim=True),
                       node("mx", "max", ["wh"], axes=[1]),
                       node("tb", "transpose", ["b"], dim0=0, dim1=1),
                       node("mm", "matmul", ["wh", "tb"]),
                       node("gr", "grad_reverse", ["cl"]),
                       node("mse", "mse_loss", ["gr", "b"], reduction="sum"),
                       node("bce", "bce_with_logits", ["a", "sg"]),
                       node("ces", "cross_entropy_soft", ["a", "sg"])], ["su", "mx", "mse", "bce", "ces"]),
    "index": spec([("x", "FP32", [-1, 4]), ("i", "INT64", [3]), ("g", "INT64", [-1, 4]), ("w", "FP32", [2, 4])],
                  [node("is", "index_select", ["x", "i"], axis=1),
                   node("ga", "gather", ["x", "g"], axis=1),
                   node("li", "linear", ["x", "w"])], ["is", "ga", "li"]),
    "ctc": spec([("lp", "FP32", [6, -1, 5]), ("t", "INT64", [-1, 3]), ("il", "INT64", [-1]),
                 ("tl", "INT64", [-1])],
                [node("ctc", "ctc_loss", ["lp", "t", "il", "tl"])], ["ctc"]),
}


def pb_spec(js):
    return json_format.ParseDict(js, model_pb2.ModelSpec())


def friendly_to_canonical(js):
    """The spec with attrs as AttrValue objects (what json_format reads)."""
    js = json.loads(json.dumps(js))
    for n in js["nodes"]:
        attrs = {}
        for k, v in n["attrs"].items():
            if isinstance(v, bool):
                attrs[k] = {"b": v}
            elif isinstance(v, int):
                attrs[k] = {"i": v}
            elif isinstance(v, float):
                attrs[k] = {"f": v}
            elif isinstance(v, str):
                attrs[k] = {"s": v}
            elif isinstance(v, list):
                attrs[k] = {"ints": {"values": v}}
        n["attrs"] = attrs
    return js


# --------------------------------------------------------------- targets

def rpc_seeds():
    services = {
        "admin": [admin_pb2.DESCRIPTOR.services_by_name[s] for s in admin_pb2.DESCRIPTOR.services_by_name],
        "cluster": list(cluster_pb2.DESCRIPTOR.services_by_name.values()),
        "dataset": list(dataset_pb2.DESCRIPTOR.services_by_name.values()),
        "health": list(health_pb2.DESCRIPTOR.services_by_name.values()),
        "infer": list(infer_pb2.DESCRIPTOR.services_by_name.values()),
        "model": list(model_pb2.DESCRIPTOR.services_by_name.values()),
        "reflection": list(refl_v1.DESCRIPTOR.services_by_name.values()),
        "training": list(training_pb2.DESCRIPTOR.services_by_name.values()),
    }
    for name, svcs in services.items():
        assert len(svcs) == 1, name
        for i, m in enumerate(svcs[0].methods):
            cls = msg_class(m.input_type)
            put("rpc_" + name, "%02d-%s-empty" % (i, m.name), bytes([i]))
            filled = fill(cls())
            if m.input_type.full_name == "fluxion.v1.CreateModelRequest":
                filled.spec.CopyFrom(json_format.ParseDict(friendly_to_canonical(SPECS["cnn"]),
                                                           model_pb2.ModelSpec()))
            put("rpc_" + name, "%02d-%s" % (i, m.name), bytes([i]) + filled.SerializeToString(deterministic=True))


def graph_seeds():
    for name, js in SPECS.items():
        put("graph", name + ".json", json.dumps(js, separators=(",", ":")))
        msg = json_format.ParseDict(friendly_to_canonical(js), model_pb2.ModelSpec())
        put("graph", name + ".pb", msg.SerializeToString(deterministic=True))


def pbjson_types():
    """fuzz_pbjson.c's type table, in its order."""
    out = []

    def add(d):
        if d not in out:
            out.append(d)
    add(model_pb2.CreateModelRequest.DESCRIPTOR)
    add(training_pb2.JobSpec.DESCRIPTOR)
    add(model_pb2.ModelSpec.DESCRIPTOR)
    for mod in (admin_pb2, cluster_pb2, dataset_pb2, model_pb2, training_pb2):
        for svc in mod.DESCRIPTOR.services_by_name.values():
            for m in svc.methods:
                add(m.input_type)
                add(m.output_type)
    return out


def pbjson_seeds():
    types = pbjson_types()
    sel = lambda i, to_json=False, flags=0: bytes([(0x80 if to_json else 0) | flags << 4 | (i >> 8 & 15), i & 255])
    for f in ("models/mlp.json", "models/linear.json", "models/two_heads.json"):
        with open(os.path.join(ROOT, "examples", f), "rb") as fh:
            put("pbjson", "create-" + os.path.basename(f), sel(0) + fh.read())
    with open(os.path.join(ROOT, "examples/jobs/mlp-blobs.json"), "rb") as fh:
        put("pbjson", "job-mlp-blobs.json", sel(1) + fh.read())
    put("pbjson", "spec-rnn.json", sel(2) + json.dumps(SPECS["rnn"]).encode())
    # a filled message of every 8th type both ways (keeps the corpus small)
    for i, d in enumerate(types):
        if i % 4:
            continue
        msg = fill(msg_class(d)())
        put("pbjson", "%03d-%s.json" % (i, d.name),
            sel(i, flags=i % 8) + json_format.MessageToJson(msg, indent=None).encode())
        put("pbjson", "%03d-%s.pb" % (i, d.name), sel(i, True, i % 8) + msg.SerializeToString(deterministic=True))


def inferjson_seeds():
    put("inferjson", "plain-meta.json", b"\x04" + b'{"x": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}')
    put("inferjson", "plain-raw.json", b"\x06" + b'{"x": [[1, 2, 3, 4]], "ids": [1, 2], "text": ["a", "bc"]}')
    put("inferjson", "kserve.json", b"\x00" + json.dumps({"inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
        {"name": "s", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
        {"name": "b", "shape": [1], "datatype": "BOOL", "data": [True]}],
        "outputs": [{"name": "y"}], "id": "r1"}).encode())
    r = infer_pb2.ModelInferResponse(model_name="m", model_version="1", id="r1")
    o = r.outputs.add(name="y", datatype="FP32", shape=[2, 2])
    r.raw_output_contents.append(struct.pack("<4f", 1, 2, 3, 4))
    o = r.outputs.add(name="i", datatype="INT64", shape=[2])
    r.raw_output_contents.append(struct.pack("<2q", 1, -2))
    o = r.outputs.add(name="s", datatype="BYTES", shape=[2])
    r.raw_output_contents.append(struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"bc")
    put("inferjson", "response-raw.pb", b"\x01" + r.SerializeToString(deterministic=True))
    r = infer_pb2.ModelInferResponse(model_name="m")
    o = r.outputs.add(name="y", datatype="FP32", shape=[3])
    o.contents.fp32_contents.extend([1, 2, 3])
    o = r.outputs.add(name="h", datatype="FP16", shape=[1])
    r.raw_output_contents.append(b"")
    put("inferjson", "response-typed.pb", b"\x01" + r.SerializeToString(deterministic=True))


def kserve_seeds():
    body = json.dumps({"id": "1", "inputs": [
        {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]},
        {"name": "n", "shape": [1], "datatype": "INT64", "data": [7], "parameters": {"p": 1}},
        {"name": "t", "shape": [1], "datatype": "BYTES", "data": ["hi"]}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        "parameters": {"binary_data_output": False, "priority": 1}}).encode()
    put("kserve", "infer.json", b"\x00\xff\xff" + body)
    js = json.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                                 "parameters": {"binary_data_size": 8}}]}).encode()
    put("kserve", "infer-binary", b"\x00" + struct.pack(">H", len(js)) + js + struct.pack("<2f", 1, 2))
    put("kserve", "index.json", b"\x01" + b'{"ready": true}')
    put("kserve", "load.json", b"\x02" + b'{"parameters": {"config": {"string_param": "{}"}}}')
    put("kserve", "unload.json", b"\x03" + b'{"parameters": {"unload_dependents": {"bool_param": true}}}')
    put("kserve", "empty", b"\x01")


def st_file(tensors, meta=None):
    hdr, data = {}, b""
    for name, dt, shape, raw in tensors:
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if meta:
        hdr["__metadata__"] = meta
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    put("safetensors", "f32.safetensors", st_file([("w", "F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4))]))
    put("safetensors", "mixed.safetensors", st_file([
        ("a.weight", "F32", [3], struct.pack("<3f", 1, 2, 3)),
        ("b.bias", "I64", [2], struct.pack("<2q", 1, 2)),
        ("c", "I32", [1, 1], struct.pack("<i", 5)),
        ("s", "F32", [], struct.pack("<f", 1))], {"format": "pt"}))
    put("safetensors", "empty-tensor.safetensors", st_file([("e", "F32", [0, 3], b"")]))
    # the weights of fuzz_safetensors.c's model (dense 4 -> 8 -> 3)
    put("safetensors", "mlp-weights.safetensors", st_file([
        ("fc1.weight", "F32", [8, 4], struct.pack("<32f", *range(32))),
        ("fc1.bias", "F32", [8], struct.pack("<8f", *range(8))),
        ("fc2.weight", "F32", [3, 8], struct.pack("<24f", *range(24))),
        ("fc2.bias", "F32", [3], struct.pack("<3f", 1, 2, 3))]))


def tbevents_seeds():
    put("tbevents", "loss", b"loss\0" + struct.pack("<qd", 1, 0.5))
    put("tbevents", "several", b"train/loss\0" + struct.pack("<qd", 10, 0.25) +
        b"val/accuracy\0" + struct.pack("<qd", 10, 0.9) + b"lr\0" + struct.pack("<qd", -1, float("nan")))


def dataset_seeds():
    def chunk(**kw):
        b = dataset_pb2.UploadDatasetChunk(**kw).SerializeToString(deterministic=True)
        return struct.pack("<H", len(b)) + b
    FP32, I64 = model_pb2.FP32, model_pb2.INT64
    x1 = dataset_pb2.TensorData(name="x", dtype=FP32, shape=[2, 2], data=struct.pack("<4f", 1, 2, 3, 4))
    y1 = dataset_pb2.TensorData(name="y", dtype=I64, shape=[2], data=struct.pack("<2q", 0, 1))
    x2 = dataset_pb2.TensorData(name="x", dtype=FP32, shape=[1, 2], data=struct.pack("<2f", 5, 6))
    y2 = dataset_pb2.TensorData(name="y", dtype=I64, shape=[1], data=struct.pack("<q", 1))
    put("dataset", "commit-two-chunks", b"\x01" + chunk(name="blobs", description="d", tensors=[x1, y1]) +
        chunk(tensors=[x2, y2]))
    put("dataset", "abort", b"\x00" + chunk(name="a", tensors=[x1]))
    put("dataset", "commit-mismatch", b"\x01" + chunk(name="m", tensors=[x1, y2]))


# ----------------------------------------------------------- dictionaries

def dictionaries():
    os.makedirs(os.path.join(HERE, "dict"), exist_ok=True)
    lines = ["# protobuf wire format: field keys (numbers 1-20, every wire type),",
             "# varints at the edges, lengths. Written by make_corpus.py."]
    for num in range(1, 21):
        for wt in (0, 1, 2, 5):
            key = num << 3 | wt
            enc = bytes([key]) if key < 128 else bytes([key & 127 | 128, key >> 7])
            lines.append('"%s"' % "".join("\\x%02x" % b for b in enc))
    for v in ("\\xff\\xff\\xff\\xff\\x0f", "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x01",
              "\\x80\\x80\\x80\\x80\\x10", "\\x80\\x01", "\\x7f", "\\x00", "\\xc0\\xbf", "\\xed\\xa0\\x80"):
        lines.append('"%s"' % v)
    with open(os.path.join(HERE, "dict", "protobuf.dict"), "w") as f:
        f.write("\n".join(lines) + "\n")

    words = set()
    from google.protobuf import descriptor_pool
    for mod in (admin_pb2, cluster_pb2, dataset_pb2, model_pb2, training_pb2, infer_pb2):
        def walk(d):
            for f in d.fields:
                words.add(f.name)
                words.add(f.json_name)
            for n in d.nested_types:
                walk(n)
            for e in d.enum_types:
                words.update(v.name for v in e.values)
        for d in mod.DESCRIPTOR.message_types_by_name.values():
            walk(d)
        for e in mod.DESCRIPTOR.enum_types_by_name.values():
            words.update(v.name for v in e.values)
    for s in SPECS.values():
        for n in s["nodes"]:
            words.add(n["op"])
            words.update(n["attrs"])
            words.update(v for v in n["attrs"].values() if isinstance(v, str))
    words.update(["FP32", "FP16", "BF16", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8",
                  "BOOL", "BYTES", "F32", "F16", "I64", "I32", "U8", "__metadata__", "data_offsets",
                  "binary_data", "binary_data_size", "binary_data_output", "mean", "sum", "none",
                  "adam", "sgd", "cross_entropy", "mse"])
    lines = ["# JSON: tokens, and the field names (proto and JSON spellings), enum",
             "# values, op names and attributes of the schemas. Written by make_corpus.py."]
    lines += ['"%s"' % t for t in ("{", "}", "[", "]", ":", ",", "true", "false", "null", "-1",
                                    "1e308", "-0", "0.5", "1e-400", "9223372036854775808",
                                    "\\\"", "\\\\u0000", "\\\\ud800", "\\\\n")]
    lines += ['"\\"%s\\""' % w for w in sorted(words) if w.isascii() and '"' not in w]
    with open(os.path.join(HERE, "dict", "json.dict"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    rpc_seeds()
    graph_seeds()
    pbjson_seeds()
    inferjson_seeds()
    kserve_seeds()
    safetensors_seeds()
    tbevents_seeds()
    dataset_seeds()
    dictionaries()


if __name__ == "__main__":
    sys.exit(main())
