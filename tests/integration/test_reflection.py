"""gRPC server reflection (grpc.reflection.v1 and v1alpha): PyPI's
grpcio-reflection client lists every service of fluxiond, resolves every
method's types and makes real calls with messages built from the reflected
descriptors alone, without our protos or stubs. Also: every .proto under
proto/ is in the embedded descriptor set, every symbol of it resolves to its
file, and bad requests get an error_response (NOT_FOUND) on a stream that
goes on.

Runs with the python3 on PATH, where scripts/test.sh pip-installs
grpcio-reflection (not Debian's python3: fxtest.py and the generated stubs
are not used, so nothing here knows the schema beforehand); exit 77
(skipped) when the package is missing."""
import os
import re
import sys
import types
import unittest

try:
    import grpc
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from grpc_reflection.v1alpha import reflection_pb2
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase)
except ImportError as e:
    print("skipped: %s (pip install grpcio-reflection)" % e)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tritonharness import SRC, Fluxiond, require_built  # noqa: E402

require_built()

PATHS = {
    "v1": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "v1alpha": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
PROTO_DIR = os.path.join(SRC, "proto")


def served_protos():
    """{relative path: (package, [service names])} of every .proto under
    proto/, read from the sources (what the build must have embedded)."""
    out = {}
    for root, _, files in os.walk(PROTO_DIR):
        for f in files:
            if not f.endswith(".proto"):
                continue
            path = os.path.join(root, f)
            with open(path, encoding="utf-8") as fh:
                text = re.sub(r"//[^\n]*", "", fh.read())
            pkg = re.search(r"^\s*package\s+([\w.]+)\s*;", text, re.M)
            out[os.path.relpath(path, PROTO_DIR)] = (
                pkg.group(1) if pkg else "", re.findall(r"^\s*service\s+(\w+)", text, re.M))
    assert out, "no .proto under %s" % PROTO_DIR
    return out


def stream(channel, version):
    """The raw bidi method of one version. The two versions are the same
    messages on the wire, so grpcio-reflection's v1alpha classes serve both."""
    return channel.stream_stream(
        PATHS[version],
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)


def database(channel, version):
    """grpcio-reflection's descriptor database, on the v1 method when asked
    (the package only ships a v1alpha stub; the messages are the same)."""
    db = ProtoReflectionDescriptorDatabase(channel)
    if version == "v1":
        assert hasattr(db, "_stub"), "grpcio-reflection changed: no _stub to point at v1"
        db._stub = types.SimpleNamespace(ServerReflectionInfo=stream(channel, "v1"))
    return db


def walk_symbols(fdp):
    """Every symbol a FileDescriptorProto declares, fully qualified."""
    pre = fdp.package + "." if fdp.package else ""

    def msg(scope, m):
        full = scope + m.name
        yield full
        for f in m.field:
            yield full + "." + f.name
        for n in m.nested_type:
            yield from msg(full + ".", n)
        for e in m.enum_type:
            yield full + "." + e.name

    for m in fdp.message_type:
        yield from msg(pre, m)
    for e in fdp.enum_type:
        yield pre + e.name
    for s in fdp.service:
        yield pre + s.name
        for meth in s.method:
            yield pre + s.name + "." + meth.name


class ReflectionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Fluxiond("fx-reflection-")
        cls.channel = grpc.insecure_channel(cls.d.addr)
        cls.protos = served_protos()

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.d.stop()

    def ask(self, version, *requests):
        """Sends the requests on one stream; one response each, in order."""
        resps = list(stream(self.channel, version)(iter(requests), timeout=30))
        self.assertEqual(len(resps), len(requests), "one response per request")
        for rq, rs in zip(requests, resps):
            self.assertEqual(rs.original_request, rq)
        return resps

    def files_of(self, resp):
        self.assertEqual(resp.WhichOneof("message_response"), "file_descriptor_response",
                         resp.error_response.error_message)
        return [descriptor_pb2.FileDescriptorProto.FromString(b)
                for b in resp.file_descriptor_response.file_descriptor_proto]

    def expected_services(self):
        return {(pkg + "." if pkg else "") + s
                for pkg, services in self.protos.values() for s in services}

    def test_client_lists_resolves_and_calls(self):
        for version in ("v1", "v1alpha"):
            with self.subTest(version=version):
                db = database(self.channel, version)
                services = db.get_services()
                self.assertEqual(len(services), len(set(services)), services)
                self.assertEqual(set(services), self.expected_services())
                for must in ("grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                             "grpc.reflection.v1alpha.ServerReflection",
                             "fluxion.v1.ModelService", "inference.GRPCInferenceService"):
                    self.assertIn(must, services)
                pool = descriptor_pool.DescriptorPool(db)
                n_methods = 0
                for name in services:
                    sd = pool.FindServiceByName(name)
                    self.assertEqual(sd.full_name, name)
                    self.assertTrue(sd.methods, name)
                    for m in sd.methods:
                        for t in (m.input_type, m.output_type):
                            self.assertIs(pool.FindMessageTypeByName(t.full_name), t)
                            message_factory.GetMessageClass(t)()  # buildable
                        n_methods += 1
                self.assertGreater(n_methods, 20)
                self.call(pool)

    def call(self, pool):
        """Real calls built only from reflected descriptors."""
        def unary(service, method):
            md = pool.FindServiceByName(service).FindMethodByName(method)
            req_cls = message_factory.GetMessageClass(md.input_type)
            resp_cls = message_factory.GetMessageClass(md.output_type)
            fn = self.channel.unary_unary("/%s/%s" % (service, method),
                                          request_serializer=req_cls.SerializeToString,
                                          response_deserializer=resp_cls.FromString)
            return fn(req_cls(), timeout=30)

        self.assertTrue(unary("inference.GRPCInferenceService", "ServerLive").live)
        models = unary("fluxion.v1.ModelService", "ListModels")
        self.assertEqual(models.DESCRIPTOR.full_name, "fluxion.v1.ListModelsResponse")
        # health's list of services is the reflection's (both name every one)
        statuses = unary("grpc.health.v1.Health", "List").statuses
        self.assertEqual(set(statuses) - {""}, self.expected_services())

    def test_every_served_proto_is_embedded(self):
        for version in ("v1", "v1alpha"):
            for path, (pkg, services) in sorted(self.protos.items()):
                with self.subTest(version=version, file=path):
                    (resp,) = self.ask(version, reflection_pb2.ServerReflectionRequest(
                        host="h", file_by_filename=path))
                    self.assertEqual(resp.valid_host, "h")
                    files = self.files_of(resp)
                    self.assertEqual(files[0].name, path, "the file asked comes first")
                    self.assertEqual(files[0].package, pkg)
                    self.assertEqual([s.name for s in files[0].service], services)
                    # every import is there, transitively, each once
                    names = [f.name for f in files]
                    self.assertEqual(len(names), len(set(names)), names)
                    for f in files:
                        for dep in f.dependency:
                            self.assertIn(dep, names, "%s imports %s" % (f.name, dep))

    def test_every_symbol_resolves_to_its_file(self):
        fdps = {}
        for path in sorted(self.protos):
            (resp,) = self.ask("v1", reflection_pb2.ServerReflectionRequest(file_by_filename=path))
            fdps[path] = self.files_of(resp)[0]
        for version in ("v1", "v1alpha"):
            for path, fdp in fdps.items():
                symbols = list(walk_symbols(fdp))
                self.assertTrue(symbols, path)
                resps = self.ask(version, *[reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol=s) for s in symbols])
                for s, r in zip(symbols, resps):
                    self.assertEqual(self.files_of(r)[0].name, path, s)
        # what a client asks most: a nested message, a field, a method
        for sym, path in (("inference.ModelInferRequest.InferInputTensor", "inference/grpc_service.proto"),
                          ("fluxion.v1.ListModelsRequest", "fluxion/v1/model.proto"),
                          ("fluxion.v1.ModelService.ListModels", "fluxion/v1/model.proto"),
                          ("fluxion.v1.DataType", "fluxion/v1/model.proto"),
                          (".fluxion.v1.Model", "fluxion/v1/model.proto")):  # as descriptors write it
            (r,) = self.ask("v1", reflection_pb2.ServerReflectionRequest(file_containing_symbol=sym))
            self.assertEqual(self.files_of(r)[0].name, path, sym)

    def test_dependencies_come_with_the_file(self):
        (r,) = self.ask("v1alpha", reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="fluxion.v1.DatasetService"))
        names = [f.name for f in self.files_of(r)]
        self.assertEqual(names[0], "fluxion/v1/dataset.proto")
        self.assertIn("fluxion/v1/model.proto", names)

    def test_bad_requests_get_not_found_and_the_stream_goes_on(self):
        R = reflection_pb2.ServerReflectionRequest
        for version in ("v1", "v1alpha"):
            with self.subTest(version=version):
                resps = self.ask(
                    version,
                    R(file_containing_symbol="no.such.Symbol"),
                    R(file_by_filename="no/such.proto"),
                    R(file_containing_extension=reflection_pb2.ExtensionRequest(
                        containing_type="fluxion.v1.Model", extension_number=100)),
                    R(all_extension_numbers_of_type="no.such.Type"),
                    R(all_extension_numbers_of_type="fluxion.v1.Model"),
                    R(),
                    R(list_services=""))
                for r, what in zip(resps[:4], ("no.such.Symbol", "no/such.proto",
                                               "fluxion.v1.Model(100)", "no.such.Type")):
                    self.assertEqual(r.WhichOneof("message_response"), "error_response")
                    self.assertEqual(r.error_response.error_code, NOT_FOUND)
                    self.assertIn(what, r.error_response.error_message)
                ext = resps[4].all_extension_numbers_response
                self.assertEqual(resps[4].WhichOneof("message_response"),
                                 "all_extension_numbers_response")
                self.assertEqual(ext.base_type_name, "fluxion.v1.Model")
                self.assertEqual(list(ext.extension_number), [])  # we declare none
                self.assertEqual(resps[5].error_response.error_code, INVALID_ARGUMENT)
                self.assertIn("list_services", resps[5].error_response.error_message)
                self.assertEqual({s.name for s in resps[6].list_services_response.service},
                                 self.expected_services())

    def test_client_raises_keyerror_for_unknown_symbol(self):
        pool = descriptor_pool.DescriptorPool(database(self.channel, "v1"))
        with self.assertRaises(KeyError):
            pool.FindMessageTypeByName("fluxion.v1.NoSuchMessage")


if __name__ == "__main__":
    unittest.main(verbosity=2)
