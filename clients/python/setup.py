"""Build hook of fluxion-client: generates the gRPC stubs into the package.

Why generated at build time rather than committed: proto/ changes often
(several services are added per release) and committed stubs would go stale
at every change; a build hook cannot, and needs no regeneration step.

Where the .proto files come from, first found:
  $FLUXION_PROTO_DIR; ./proto (an sdist: the sdist command below copies
  them in); ../../proto (the source tree: `pip install clients/python`).
A pip older than 21.3 copies the project to a temporary directory before
building, where ../../proto is out of reach: the error says so.

What is generated, into fluxion_client/_proto/ (never the source tree, but
for editable installs):
  - protoc's *_pb2.py, *_pb2.pyi and grpc's *_pb2_grpc.py for every .proto;
  - imports between them rewritten to be package-relative, so that nothing
    is importable as a top-level `inference`, `fluxion` or `grpc_health`
    module (which other packages, e.g. grpcio-health-checking, provide);
  - their descriptors added to a private descriptor pool
    (fluxion_client._proto._pool.POOL), not protobuf's default one: a
    process that also imports NVIDIA's tritonclient (the same `inference.*`
    messages under another file name) or grpcio-health-checking would
    otherwise fail with "duplicate symbol".

Dependencies: generated code checks at import time that the protobuf
runtime is at least the gencode's version (same major) and grpcio at least
grpcio-tools' version, so their lower bounds are taken from the
grpcio-tools in the build environment.
"""
import os
import re
import shutil
import sys
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "fluxion_client"
SUBPACKAGE = "_proto"
# The floors when no grpcio-tools is importable (metadata only, e.g. egg_info
# run by hand): the oldest releases whose generated code this package runs.
FLOOR_GRPCIO = "1.66.0"
FLOOR_PROTOBUF = "5.27.2"


def proto_dir():
    """The directory holding fluxion/v1/*.proto and the rest."""
    for cand in (os.environ.get("FLUXION_PROTO_DIR"), os.path.join(HERE, "proto"),
                 os.path.join(HERE, "..", "..", "proto")):
        if cand and os.path.isdir(os.path.join(cand, "fluxion", "v1")):
            return os.path.abspath(cand)
    sys.exit("fluxion-client: the .proto files are not in ./proto nor ../../proto (%s). Build "
             "from the source tree with pip >= 21.3 (older pips copy the project away from "
             "proto/), from an sdist, or set FLUXION_PROTO_DIR." % HERE)


def list_protos(root):
    out = []
    for d, _, files in os.walk(root):
        out += [os.path.relpath(os.path.join(d, f), root) for f in files if f.endswith(".proto")]
    return sorted(p.replace(os.sep, "/") for p in out)


# ------------------------------------------------------------------ rewriting

_FROM = re.compile(r"^(?P<ind>\s*)from (?P<pkg>[\w.]+) import (?P<name>\w+)(?P<rest>.*)$")
_IMPORT = re.compile(r"^(?P<ind>\s*)import (?P<name>\w+)(?P<rest>( as \w+)?)$")
_GOOGLE = re.compile(r"^from google\.protobuf import (\w+_pb2) as (\w+)$")
_ADD = "_descriptor_pool.Default().AddSerializedFile("


def rewrite(text, module, modules, is_pb2):
    """A generated file with its imports of sibling stubs made package-
    relative and (for *_pb2.py) its descriptors sent to the private pool.
    module: its dotted name under _proto ("fluxion.v1.model_pb2"); modules:
    every generated module's dotted name."""
    dots = "." * (module.count(".") + 1)   # from fluxion/v1/x_pb2.py, "..." is _proto
    out = []
    google = []
    for line in text.split("\n"):
        m = _FROM.match(line)
        if m and m.group("pkg") + "." + m.group("name") in modules:
            line = "%sfrom %s%s import %s%s" % (m.group("ind"), dots, m.group("pkg"),
                                               m.group("name"), m.group("rest"))
        else:
            m = _IMPORT.match(line)
            if m and m.group("name") in modules:
                line = "%sfrom %s import %s%s" % (m.group("ind"), dots, m.group("name"),
                                                  m.group("rest"))
        g = _GOOGLE.match(line)
        if g:
            google.append(g.group(2))
        out.append(line)
    text = "\n".join(out)
    if is_pb2:
        if text.count(_ADD) != 1:
            raise SystemExit("fluxion-client: %s: expected one '%s' in protoc's output; this "
                             "protoc generates another form (update setup.py)" % (module, _ADD))
        adopt = "".join("_fx_pool.adopt(%s.DESCRIPTOR)\n" % g for g in google)
        text = text.replace("DESCRIPTOR = " + _ADD,
                            "from %s import _pool as _fx_pool\n%sDESCRIPTOR = "
                            "_fx_pool.POOL.AddSerializedFile(" % (dots, adopt))
    return text


_POOL_PY = '''"""The descriptor pool of fluxion_client's generated stubs: a private one,
so that other packages' copies of the same messages (tritonclient's
inference.*, grpcio-health-checking's grpc.health.v1.*) never clash with
ours in protobuf's default pool."""
from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()


def adopt(fd):
    """Adds a file of another pool (a well-known type we import) and its
    dependencies to POOL, once."""
    try:
        POOL.FindFileByName(fd.name)
        return
    except KeyError:
        pass
    for dep in fd.dependencies:
        adopt(dep)
    POOL.AddSerializedFile(fd.serialized_pb)
'''


def generate(out_dir):
    """Generates fluxion_client/_proto into out_dir (the package directory)."""
    from grpc_tools import protoc
    import grpc_tools

    src = proto_dir()
    protos = list_protos(src)
    target = os.path.join(out_dir, SUBPACKAGE)
    tmp = tempfile.mkdtemp(prefix="fluxion-stubs-")
    try:
        wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
        args = ["grpc_tools.protoc", "-I" + src, "-I" + wkt, "--python_out=" + tmp,
                "--pyi_out=" + tmp, "--grpc_python_out=" + tmp] + protos
        if protoc.main(args) != 0:
            raise SystemExit("fluxion-client: protoc failed on %s" % src)
        files = []
        for d, _, names in os.walk(tmp):
            files += [os.path.relpath(os.path.join(d, n), tmp) for n in names]
        modules = {os.path.splitext(f)[0].replace(os.sep, ".") for f in files if
                   f.endswith(".py")}
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.makedirs(target)
        for rel in sorted(files):
            with open(os.path.join(tmp, rel), encoding="utf-8") as f:
                text = f.read()
            module = os.path.splitext(rel)[0].replace(os.sep, ".")
            if rel.endswith((".py", ".pyi")):
                text = rewrite(text, module, modules, rel.endswith("_pb2.py"))
            dest = os.path.join(target, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "w", encoding="utf-8") as f:
                f.write(text)
        for d, _, _ in os.walk(target):
            init = os.path.join(d, "__init__.py")
            if not os.path.exists(init):
                with open(init, "w", encoding="utf-8") as f:
                    f.write("" if d != target else
                            '"""Generated from proto/ at build time (setup.py)."""\n')
        with open(os.path.join(target, "_pool.py"), "w", encoding="utf-8") as f:
            f.write(_POOL_PY)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildPy(build_py):
    """build_py, then the stubs into the built package."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            out = os.path.join(HERE, PACKAGE)   # editable: next to the sources
        else:
            out = os.path.join(self.build_lib, PACKAGE)
        generate(out)


class Sdist(sdist):
    """An sdist carries the .proto files (./proto) so that it builds alone."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        src = proto_dir()
        for rel in list_protos(src):
            dest = os.path.join(base_dir, "proto", rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(os.path.join(src, rel), dest)


def _version(dist):
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def dependencies():
    """grpcio >= the generator's version, protobuf >= its gencode version
    and of the same major (the generated code checks both at import)."""
    tools = _version("grpcio-tools")
    grpcio, proto_floor = FLOOR_GRPCIO, FLOOR_PROTOBUF
    if tools:
        grpcio = tools
        proto_floor = _gencode_version() or proto_floor
    major = int(proto_floor.split(".")[0])
    return ["grpcio>=%s" % grpcio, "protobuf>=%s,<%d" % (proto_floor, major + 1),
            "numpy>=1.21"]


def _gencode_version():
    """The protobuf Python version protoc writes into generated code
    ("# Protobuf Python Version: 6.31.1"), found by generating a tiny file."""
    try:
        from grpc_tools import protoc
    except ImportError:
        return None
    tmp = tempfile.mkdtemp(prefix="fluxion-gencode-")
    try:
        with open(os.path.join(tmp, "v.proto"), "w") as f:
            f.write('syntax = "proto3";\npackage fluxion_version_probe;\n')
        if protoc.main(["grpc_tools.protoc", "-I" + tmp, "--python_out=" + tmp, "v.proto"]) != 0:
            return None
        with open(os.path.join(tmp, "v_pb2.py")) as f:
            m = re.search(r"^# Protobuf Python Version: (\d+\.\d+\.\d+)", f.read(), re.M)
        return m.group(1) if m else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist}, install_requires=dependencies())
