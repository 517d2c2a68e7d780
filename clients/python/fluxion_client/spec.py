"""ModelSpec from the human form: a dict such as

    {"inputs":  [{"name": "x", "dtype": "FP32", "shape": [-1, 4]}],
     "nodes":   [{"name": "fc", "op": "dense", "inputs": ["x"],
                  "attrs": {"in_features": 4, "out_features": 2}}],
     "outputs": [{"name": "y", "source": "fc"}]}

Attribute values are plain Python values; their type picks the AttrValue
field: bool -> b, int -> i, float -> f, str -> s, a list of ints -> ints,
a list with a float -> floats, a list of str -> strings. An output may also
be given as a plain string ("fc": name and source alike).
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, Mapping, Union

from ._stubs import model_pb2

# A model spec: the human form (a dict) or a ModelSpec message.
SpecLike = Union[Mapping[str, Any], "model_pb2.ModelSpec"]

_DTYPES = {"FP32": model_pb2.FP32, "INT32": model_pb2.INT32, "INT64": model_pb2.INT64}


def attr_value(value: Any, where: str = "attr") -> model_pb2.AttrValue:
    """An AttrValue for a plain Python value."""
    av = model_pb2.AttrValue()
    if isinstance(value, model_pb2.AttrValue):
        av.CopyFrom(value)
    elif isinstance(value, bool):
        av.b = value
    elif isinstance(value, numbers.Integral):
        av.i = int(value)
    elif isinstance(value, numbers.Real):
        av.f = float(value)
    elif isinstance(value, str):
        av.s = value
    elif isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value) and value:
            av.strings.values.extend(value)
        elif all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
            av.ints.values.extend(int(v) for v in value)  # [] too: an empty int list
        elif all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
            av.floats.values.extend(float(v) for v in value)
        else:
            raise TypeError("%s: a list must hold only ints, only numbers or only strings: %r"
                            % (where, value))
    else:
        raise TypeError("%s: %r (%s) has no AttrValue form" % (where, value, type(value).__name__))
    return av


def tensor_spec(d: Mapping[str, Any]) -> model_pb2.TensorSpec:
    """A TensorSpec from {"name", "dtype" (default FP32), "shape"}."""
    ts = model_pb2.TensorSpec(name=d["name"], shape=[int(s) for s in d.get("shape", [])])
    dtype = d.get("dtype", "FP32")
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError("input %r: dtype %r is not one of %s" % (d["name"], dtype,
                                                                      ", ".join(_DTYPES)))
        dtype = _DTYPES[dtype]
    ts.dtype = dtype
    return ts


def model_spec(spec: SpecLike) -> model_pb2.ModelSpec:
    """A ModelSpec message for a dict in the human form (a ModelSpec is
    returned unchanged)."""
    if isinstance(spec, model_pb2.ModelSpec):
        return spec
    unknown = set(spec) - {"inputs", "nodes", "outputs"}
    if unknown:
        raise ValueError("spec: unknown keys %s (inputs, nodes, outputs)" % sorted(unknown))
    ms = model_pb2.ModelSpec()
    for d in spec.get("inputs", []):
        ms.inputs.append(tensor_spec(d))
    for d in spec.get("nodes", []):
        node = ms.nodes.add(name=d["name"], op=d["op"], inputs=list(d.get("inputs", [])))
        for key, value in d.get("attrs", {}).items():
            node.attrs[key].CopyFrom(attr_value(value, "node %r attr %r" % (d["name"], key)))
    for d in spec.get("outputs", []):
        if isinstance(d, str):
            d = {"name": d, "source": d}
        ms.outputs.add(name=d["name"], source=d.get("source", d["name"]))
    return ms


def attr_to_python(av: model_pb2.AttrValue) -> Any:
    """The plain Python value of an AttrValue (the inverse of attr_value)."""
    which = av.WhichOneof("value")
    if which in ("ints", "floats", "strings"):
        return list(getattr(av, which).values)
    return getattr(av, which) if which else None


def spec_to_dict(ms: model_pb2.ModelSpec) -> Dict[str, Any]:
    """The human form of a ModelSpec message."""
    names = {v: k for k, v in _DTYPES.items()}
    return {
        "inputs": [{"name": t.name, "dtype": names.get(t.dtype, "FP32"), "shape": list(t.shape)}
                   for t in ms.inputs],
        "nodes": [{"name": n.name, "op": n.op, "inputs": list(n.inputs),
                   "attrs": {k: attr_to_python(v) for k, v in sorted(n.attrs.items())}}
                  for n in ms.nodes],
        "outputs": [{"name": o.name, "source": o.source} for o in ms.outputs],
    }
