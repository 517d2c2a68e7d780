#!/usr/bin/python3
"""Defines a small model on a running fluxiond over RPC, asks it for
predictions with ModelInfer, and prints them.

    /usr/bin/python3 clients/python/examples/define_and_infer.py --server 127.0.0.1:7070

Needs fluxion_client: installed (pip install clients/python), or from the
source tree with the generated stubs (BUILD/python) and clients/python on
PYTHONPATH; when neither is importable, it falls back to BUILD=build in the
source tree and to clients/python.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))            # clients/python/examples
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))  # the source tree
try:
    import fluxion_client  # noqa: F401  (installed, or on PYTHONPATH)
except ImportError:
    for p in (os.path.join(ROOT, "build", "python"), os.path.dirname(HERE)):
        if os.path.isdir(p) and p not in sys.path:
            sys.path.append(p)

import numpy as np  # noqa: E402

from fluxion_client import AlreadyExists, Client, FluxionError  # noqa: E402

# A classifier for 4 features and 3 classes: two dense layers and a softmax.
# Attributes are plain Python values; outputs name the node they come from.
SPEC = {
    "inputs": [{"name": "features", "dtype": "FP32", "shape": [-1, 4]}],
    "nodes": [
        {"name": "hidden", "op": "dense", "inputs": ["features"],
         "attrs": {"in_features": 4, "out_features": 16, "activation": "relu"}},
        {"name": "logits", "op": "dense", "inputs": ["hidden"],
         "attrs": {"in_features": 16, "out_features": 3}},
        {"name": "probs", "op": "softmax", "inputs": ["logits"], "attrs": {"axis": -1}},
    ],
    "outputs": [{"name": "logits", "source": "logits"},
                {"name": "probabilities", "source": "probs"}],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default="127.0.0.1:7070", help="fluxiond address HOST:PORT")
    ap.add_argument("--name", default="example-classifier", help="model name to define")
    ap.add_argument("--seed", type=int, default=42, help="weight initialization seed")
    ap.add_argument("--replace", action="store_true", help="delete a model of that name first")
    ap.add_argument("--wait", type=float, default=10.0,
                    help="seconds to wait for the server to accept the connection")
    args = ap.parse_args()

    with Client(args.server, timeout=30) as client:
        try:
            client.wait_ready(timeout=args.wait)
        except Exception:
            sys.exit("cannot reach fluxiond at %s" % args.server)
        if args.replace:
            try:
                client.delete_model(args.name)
            except FluxionError:
                pass
        try:
            model = client.create_model(args.name, SPEC, seed=args.seed,
                                        description="define_and_infer.py example")
            print("defined %s: version %d, %d parameters" % (model.name, model.latest_version,
                                                            model.num_parameters))
        except AlreadyExists:
            model = client.get_model(args.name)
            print("using the existing %s (version %d)" % (model.name, model.latest_version))

        meta = client.model_metadata(args.name)
        for t in meta.inputs:
            print("input  %-14s %s %s" % (t.name, t.datatype, list(t.shape)))
        for t in meta.outputs:
            print("output %-14s %s %s" % (t.name, t.datatype, list(t.shape)))

        features = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
        outputs = client.infer(args.name, {"features": features}, raw=True)
        np.set_printoptions(precision=4, suppress=True)
        for name, value in outputs.items():
            print("%s %s:\n%s" % (name, value.shape, value))
        print("predicted classes:", outputs["probabilities"].argmax(axis=1).tolist())


if __name__ == "__main__":
    try:
        main()
    except FluxionError as e:
        sys.exit("fluxiond refused: %s" % e)
