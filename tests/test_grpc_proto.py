"""The vendored V2 gRPC protos: compiled descriptors current, messages isolated, extra optional."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cli_process import REPO, run_python


def test_compiled_descriptors_match_the_vendored_protos() -> None:
    pytest.importorskip("grpc_tools")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen-grpc-proto"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_messages_round_trip_and_live_beside_tritonclient() -> None:
    """Our classes sit in a private pool: tritonclient's generated ones, which register the
    same ``inference.*`` names in protobuf's default pool, load in the same process."""
    pytest.importorskip("tritonclient.grpc")
    from tritonclient.grpc import service_pb2

    from scorepack.proto.messages import messages, method_types

    request = messages.ModelInferRequest(model_name="m", id="7")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(b"\x00" * 8)
    theirs = service_pb2.ModelInferRequest.FromString(request.SerializeToString())
    assert (theirs.model_name, theirs.id, list(theirs.inputs[0].shape)) == ("m", "7", [1, 2])
    assert messages.ModelInferRequest.FromString(theirs.SerializeToString()) == request
    assert method_types("RepositoryIndex")[1].DESCRIPTOR.full_name == (
        "inference.RepositoryIndexResponse"
    )


def test_nested_message_classes_outlive_the_garbage_collector() -> None:
    """upb holds a message class only weakly; a nested one (``InferInputTensor``) that no
    one held was freed by the collector and made again, and a thread handed it while the
    collector had half-cleared it died (a segfault). The module holds every class."""
    import gc

    from scorepack.proto.messages import messages

    def nested() -> list[type]:
        request = messages.ModelInferRequest()
        tensor = request.inputs.add()
        return [type(tensor), type(tensor.contents), type(tensor.parameters.get_or_create("k"))]

    first = [id(cls) for cls in nested()]
    gc.collect()
    assert [id(cls) for cls in nested()] == first
    assert nested()[0] is messages.ModelInferRequest.InferInputTensor


_BLOCK_GRPC = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "grpc" or name.startswith("google.protobuf"):
            raise ImportError(f"blocked for the test: {name}")
sys.meta_path.insert(0, _Block())
"""


def test_scorepack_works_without_the_grpc_extra() -> None:
    """Without grpcio and protobuf, scorepack imports and its CLI runs; asking for gRPC
    names the pip command."""
    code = _BLOCK_GRPC + (
        "import scorepack, scorepack.cli, scorepack.server, scorepack.client, scorepack.proto\n"
        "import scorepack.client_v2, scorepack.server.grpc_v2\n"
        "from scorepack.errors import MissingExtraError\n"
        "try:\n"
        "    scorepack.server.grpc_v2.grpc_server(None)\n"
        "except MissingExtraError as exc:\n"
        "    print(exc)\n"
        "try:\n"
        "    scorepack.client_v2.v2_client('127.0.0.1:1', 'grpc')\n"
        "except MissingExtraError as exc:\n"
        "    print(exc)\n"
        "from scorepack.cli import main\n"
        "try:\n"
        "    main(['serve', '--help'])\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "assert 'grpc' not in sys.modules\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("The gRPC server (--grpc-port) needs grpcio and protobuf")
    assert lines[1].startswith("The gRPC client (--protocol grpc) needs grpcio and protobuf")
    assert all(line.endswith("pip install 'scorepack[grpc]'") for line in lines[:2])
