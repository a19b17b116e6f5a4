"""scorepack's own V2 clients and the commands on them: ``scorepack.client_v2`` (REST and
gRPC), ``scorepack score --protocol v2|grpc`` and ``scorepack bench --protocol v2|grpc``."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli_process import cli_env, run_python
from fixture_backends import EchoBackend
from grpc_helpers import GrpcServed, grpc_serving
from images import jpeg
from scorepack.cli import build_cli
from scorepack.client_v2 import file_inputs, v2_client
from scorepack.errors import RemoteError
from typed_backend import NoHalvesBackend, TypedBackend

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServed]:
    root = tmp_path_factory.mktemp("grpc_clients")
    backends = {"echo": EchoBackend(root / "e.echo"), "typed": TypedBackend(root / "t.typed")}
    with grpc_serving(backends) as served:
        yield served


def _urls(served: GrpcServed) -> list[tuple[str, str]]:
    return [("grpc", served.grpc_address), ("v2", served.url)]


@pytest.mark.parametrize("protocol", ["grpc", "v2"])
def test_client_speaks_both_protocols(served: GrpcServed, protocol: str) -> None:
    url = dict(_urls(served))[protocol]
    with v2_client(url, protocol) as client:
        assert client.live() and client.ready() and client.model_ready("echo")
        assert {m["name"] for m in client.models()} == {"echo", "typed"}
        meta = client.model_metadata("typed")
        assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [
            ("flags", "BOOL"),
            ("counts", "INT64"),
            ("halves", "FP16"),
            ("texts", "BYTES"),
        ]
        x = np.array([[1.5, 2.5]], dtype=np.float32)
        result = client.infer("echo", {"x": x}, request_id="r1")
        np.testing.assert_array_equal(result.outputs["y"], x)
        assert result.model_name == "echo" and result.id == "r1"
        assert result.batch_size == 1
        typed = client.infer(
            "typed",
            {
                "flags": np.array([[True, False, True]]),
                "counts": np.array([[3, 4]], dtype=np.int64),
                "halves": np.array([[0.5, 1.0]], dtype=np.float16),
                "texts": np.array([b"ab"], dtype=object),
            },
            outputs=["doubled", "texts_out"],
        )
        assert sorted(typed.outputs) == ["doubled", "texts_out"]
        np.testing.assert_array_equal(typed.outputs["doubled"], [[6, 8]])
        assert typed.outputs["texts_out"].tolist() == [b"AB"]
        with pytest.raises(RemoteError) as excinfo:
            client.infer("nope", {"x": x})
        assert excinfo.value.status == 404 and "nope" in excinfo.value.message
        with pytest.raises(RemoteError) as excinfo:
            client.infer("echo", {"z": x})
        assert excinfo.value.status == 400 and "'z'" in excinfo.value.message


def test_file_inputs_from_json_and_images() -> None:
    meta = {
        "inputs": [
            {"name": "counts", "datatype": "INT64", "shape": [-1, 2]},
            {"name": "texts", "datatype": "BYTES", "shape": [-1]},
        ]
    }
    body = json.dumps({"inputs": {"counts": [[1, 2]], "texts": ["hi"]}}).encode()
    inputs = file_inputs(body, meta)
    assert inputs["counts"].dtype == np.int64 and inputs["counts"].tolist() == [[1, 2]]
    assert inputs["texts"].tolist() == [b"hi"]
    image = jpeg(8, 8)
    single = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 8, 8, 3]}]}
    assert file_inputs(image, single)["image"].tolist() == [image]


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_cli(), list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.mark.parametrize("protocol", ["grpc", "v2"])
def test_score_command(served: GrpcServed, protocol: str, tmp_path: Path) -> None:
    url = dict(_urls(served))[protocol]
    tensors = tmp_path / "x.json"
    tensors.write_text(json.dumps({"inputs": {"x": [[1.0, 2.0], [3.0, 4.0]]}}))
    code, out = _cli(
        "score", url, str(tensors), "--protocol", protocol, "--model", "echo", "--json"
    )
    assert code == 0, out
    answer = json.loads(out)
    assert answer["model_name"] == "echo"
    assert answer["outputs"]["y"]["data"] == [[1.0, 2.0], [3.0, 4.0]]
    # without --model: the server serves two, so it must be named
    code, out = _cli("score", url, str(tensors), "--protocol", protocol)
    assert code != 0 and "echo" in out and "typed" in out and "--model" in out


def test_score_command_grpc_url_scheme(served: GrpcServed, tmp_path: Path) -> None:
    tensors = tmp_path / "x.json"
    tensors.write_text(json.dumps({"inputs": [[5.0, 6.0]]}))
    code, out = _cli("score", f"grpc://{served.grpc_address}", str(tensors), "--model", "echo")
    assert code == 0, out
    # a [rows, classes] float output is shown as a ranking, as /score's top_k
    assert "y: float32 [1, 2]" in out
    assert "1. class 1      6.000000" in out and "2. class 0      5.000000" in out


@pytest.mark.parametrize("protocol", ["grpc", "v2"])
def test_bench_command(served: GrpcServed, protocol: str, tmp_path: Path) -> None:
    url = dict(_urls(served))[protocol]
    tensors = tmp_path / "x.json"
    tensors.write_text(json.dumps({"inputs": {"x": [[1.0, 2.0]]}}))
    code, out = _cli(
        "bench", url, str(tensors), "--protocol", protocol, "--model", "echo",
        "-c", "2", "-n", "20", "--json",
    )  # fmt: skip
    assert code == 0, out
    result = json.loads(out)
    assert result["requests"] == 20
    assert result["statuses"] == {"200": 20}
    assert result["errors"] == 0
    assert sum(result["batch_sizes"].values()) == 20  # each answer said its batch size
    assert "echo" in result["url"]


def test_bench_command_counts_grpc_errors_as_statuses(served: GrpcServed, tmp_path: Path) -> None:
    tensors = tmp_path / "x.json"
    tensors.write_text(json.dumps({"inputs": {"x": [[1.0, 2.0, 3.0]]}}))  # wrong shape
    code, out = _cli(
        "bench", served.grpc_address, str(tensors), "--protocol", "grpc", "--model", "echo",
        "-c", "1", "-n", "5", "--json",
    )  # fmt: skip
    assert code != 0  # every request failed: over --max-error-rate
    result = json.loads(out.split("\nError:")[0])
    assert result["statuses"] == {"400": 5}


# --- KServe's client -------------------------------------------------------------------


def test_kserve_grpc_client(tmp_path_factory: pytest.TempPathFactory) -> None:
    """KServe's InferenceGRPCClient (in a child process: see kserve_grpc_check.py)."""
    # find it, but never import it here: kserve registers inference.* in protobuf's
    # default pool, where tritonclient.grpc (imported by other test modules) has them
    if importlib.util.find_spec("kserve") is None:
        pytest.skip("kserve is not installed")
    root = tmp_path_factory.mktemp("kserve_grpc")
    backends = {"echo": EchoBackend(root / "e.echo"), "typed32": NoHalvesBackend(root / "t.t")}
    with grpc_serving(backends) as served:
        result = run_python(
            "import runpy, sys; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')",
            str(TESTS / "kserve_grpc_check.py"),
            served.grpc_address,
            env=cli_env([TESTS]),
            timeout=180,
        )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["live"] is True and seen["ready"] is True and seen["model_ready"] is True
    assert seen["infer"] == {
        "id": "k-1",
        "not_flags": [[False, True, False]],
        "doubled": [[6, -8]],
        "texts_out": ["AB"],
        "lengths": [2],
    }
    assert seen["echo"] == [[1.5, 2.5]]
    code, message = seen["error_echo"]
    assert code == "INVALID_ARGUMENT" and "'x'" in message
    code, message = seen["error_nope"]
    assert code == "NOT_FOUND" and "nope" in message
