"""The V2 gRPC message classes, built from the vendored protos in a private pool.

Which proto: Triton's ``grpc_service.proto`` (with the ``model_config.proto`` it imports),
vendored unmodified beside this module, with its BSD-3-Clause licence header. KServe's
``grpc_predict_v2.proto`` declares the same package, service and messages (wire-compatible)
but fewer RPCs; Triton's adds the repository RPCs (index, load, unload) that
``tritonclient.grpc`` calls, so it serves both clients.

Why no generated ``_pb2`` modules: generated code registers its messages in protobuf's
process-wide default pool, where ``tritonclient.grpc`` and KServe's client register the
same ``inference.*`` names; a process holding both the server and a client (the tests,
``scorepack bench``) would then fail with duplicate-symbol errors, or depend on both
copies being byte-identical. Generated code also pins the protobuf runtime to the major
version of the protoc that made it. Descriptors loaded into a pool of our own avoid both:
``scripts/gen-grpc-proto`` compiles the protos once into ``inference.binpb`` (a
test checks it is current), and this module turns that into classes at import.

Every class, nested ones included, is built once and held here for the life of the
process (:func:`_classes`). protobuf's upb runtime keeps a message class only weakly and
makes it again on demand, and a class is freed only by the garbage collector, which clears
it (its descriptor first) before it frees it; in that gap another thread, taking the GIL
from the collector, was handed the half-cleared class for a nested message
(``request.inputs[0]``) and the process died in ``PyUpb_Descriptor_GetDef`` (a
segmentation fault seen in the test suite, reproduced with ``gc.collect()`` on a thread of
its own). Generated ``_pb2`` modules never meet this: they hold their nested classes as
attributes of the outer ones.

Importing this module needs ``protobuf`` only (the ``grpc`` extra); grpcio is needed by
the server and client modules, never by ``import scorepack``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["SERVICE", "message", "messages"]

#: the fully-qualified service name in method paths: /inference.GRPCInferenceService/ModelInfer
SERVICE = "inference.GRPCInferenceService"


@cache
def _pool() -> tuple[descriptor_pool.DescriptorPool, list[str]]:
    """The private pool, and the names of the files it holds."""
    data = (Path(__file__).parent / "inference.binpb").read_bytes()
    fds = descriptor_pb2.FileDescriptorSet.FromString(data)
    pool = descriptor_pool.DescriptorPool()
    for proto in fds.file:  # --include_imports lists dependencies first
        pool.Add(proto)
    return pool, [proto.name for proto in fds.file]


@cache
def _classes() -> dict[str, Any]:
    """Every message class of the pool by full name, nested and map-entry ones included,
    held strongly (see the module's docstring for why)."""
    pool, files = _pool()
    classes = {}
    pending = [
        desc for name in files for desc in pool.FindFileByName(name).message_types_by_name.values()
    ]
    while pending:
        desc = pending.pop()
        classes[desc.full_name] = message_factory.GetMessageClass(desc)
        pending.extend(desc.nested_types)
    return classes


def message(name: str) -> Any:
    """The message class for ``inference.NAME`` (``message("ModelInferRequest")``)."""
    return _classes()[f"inference.{name}"]


class _Messages:
    """Attribute access to the classes: ``messages.ModelInferRequest``."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return message(name)
        except KeyError:
            raise AttributeError(f"no message inference.{name}") from None


messages = _Messages()


def method_types(method: str) -> tuple[Any, Any]:
    """The (request, response) classes of one RPC of the service."""
    service = _pool()[0].FindServiceByName(SERVICE)
    desc = service.methods_by_name[method]
    classes = _classes()
    return classes[desc.input_type.full_name], classes[desc.output_type.full_name]
