"""The V2 REST server driven by the clients the field uses, over real loopback HTTP:
NVIDIA's tritonclient[http] and KServe's InferenceRESTClient.

Health, metadata, inference with FP32/INT64/BOOL/BYTES (a JPEG through a real TensorFlow
model), binary and JSON tensors both ways, errors; two models with different batching at
once; load and unload under traffic with no failed request for the other model; unload
freeing memory (an ONNX model's RSS, in a server process of its own); the same answer
over /score and V2.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from cli_process import cli_env, run_python
from fixture_backends import EchoBackend, SlowBackend, TypesBackend
from images import jpeg
from scorepack import Scorer
from scorepack.repository import ModelSource, Repository
from serving_helpers import scoring_config, serving_repository, tf_backend

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytest.importorskip("tensorflow")

TESTS = Path(__file__).resolve().parent


def fixture_source(
    tmp: Path, name: str, backend: type, version: str | None = None, **kw: Any
) -> ModelSource:
    def create() -> Scorer:
        return Scorer(backend(tmp / f"{name}.m"), kw.get("config"), name=name, version=version)

    return ModelSource(name, version, create)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, small_cnn_path: Path) -> Iterator[str]:
    """types (versions 1, 2; batches up to 8), echo (batches up to 2), cnn (a real
    TensorFlow image model: image [N, 32, 32, 3] -> probs [N, 10])."""
    tmp = tmp_path_factory.mktemp("clients")
    repo = Repository(
        [
            fixture_source(
                tmp,
                "types",
                TypesBackend,
                "1",
                config=scoring_config(max_batch_size=8, max_delay_ms=20),
            ),
            fixture_source(
                tmp,
                "types",
                TypesBackend,
                "2",
                config=scoring_config(max_batch_size=8, max_delay_ms=20),
            ),
            fixture_source(
                tmp, "echo", EchoBackend, config=scoring_config(max_batch_size=2, max_delay_ms=20)
            ),
            ModelSource("cnn", None, lambda: Scorer(tf_backend(small_cnn_path), name="cnn")),
        ]
    )
    with serving_repository(repo) as (srv, _):
        yield srv.url


@pytest.fixture
def triton(server: str) -> Iterator[Any]:
    client = httpclient.InferenceServerClient(
        server.removeprefix("http://"), connection_timeout=30, network_timeout=60
    )
    yield client
    client.close()


def types_inputs(binary: bool) -> list[Any]:
    f = np.array([[1.5, 2.0], [3.0, 4.0]], dtype=np.float32)
    i = np.array([[1, 2, 3], [2**40, 0, 1]], dtype=np.int64)
    b = np.array([[True], [False]])
    inputs = []
    for name, datatype, value in (("f", "FP32", f), ("i", "INT64", i), ("b", "BOOL", b)):
        item = httpclient.InferInput(name, list(value.shape), datatype)
        item.set_data_from_numpy(value, binary_data=binary)
        inputs.append(item)
    return inputs


# --- tritonclient --------------------------------------------------------------------------


def test_triton_health_and_metadata(triton: Any) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("types") and triton.is_model_ready("types", "1")
    assert not triton.is_model_ready("types", "9")
    assert triton.get_server_metadata()["name"] == "scorepack"
    meta = triton.get_model_metadata("cnn")
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 32, 32, 3]}]
    assert meta["platform"] == "tensorflow_savedmodel"
    assert triton.get_model_metadata("types", "2")["versions"] == ["1", "2"]
    names = {(m["name"], m.get("version")) for m in triton.get_model_repository_index()}
    assert ("types", "1") in names and ("cnn", None) in names


@pytest.mark.parametrize(
    ("binary_in", "binary_out"), [(True, True), (False, False), (True, False), (False, True)]
)
def test_triton_infer_fp32_int64_bool_and_bytes_out(
    triton: Any, binary_in: bool, binary_out: bool
) -> None:
    outputs = [
        httpclient.InferRequestedOutput(n, binary_data=binary_out)
        for n in ("twice", "total", "negated", "word")
    ]
    result = triton.infer(
        "types", types_inputs(binary_in), outputs=outputs, request_id="r1", model_version="1"
    )
    np.testing.assert_array_equal(result.as_numpy("twice"), [[3.0, 4.0], [6.0, 8.0]])
    assert result.as_numpy("total").tolist() == [6, 2**40 + 1]
    assert result.as_numpy("negated").tolist() == [[False], [True]]
    words = result.as_numpy("word").tolist()
    assert [w.decode() if isinstance(w, bytes) else w for w in words] == ["yes", "no"]
    response = result.get_response()
    assert response["id"] == "r1" and response["model_version"] == "1"


@pytest.mark.parametrize("binary_out", [True, False])
def test_triton_fp16_through_the_binary_extension(tmp_path: Path, binary_out: bool) -> None:
    # FP16 has no JSON form of its own: tritonclient sends it as binary data; it comes back
    # binary (half-precision bytes) or as JSON numbers, which the client reads as float16
    from typed_backend import TypedBackend

    halves = np.array([[0.5, -1.5], [1000.0, 2.0**-14]], dtype=np.float16)  # exact halves
    values = {
        "flags": ("BOOL", np.array([[True, False, True], [False, False, True]])),
        "counts": ("INT64", np.array([[1, 2], [3, 4]], dtype=np.int64)),
        "halves": ("FP16", halves),
        "texts": ("BYTES", np.array([b"ab", b"c"], dtype=np.object_)),
    }
    inputs = []
    for name, (datatype, value) in values.items():
        item = httpclient.InferInput(name, list(value.shape), datatype)
        item.set_data_from_numpy(value, binary_data=True)
        inputs.append(item)
    wanted = [httpclient.InferRequestedOutput("halves_out", binary_data=binary_out)]
    backend = TypedBackend(tmp_path / "t.typed")
    repo = Repository([ModelSource("typed", None, lambda: Scorer(backend, name="typed"))])
    with serving_repository(repo) as (srv, _):
        client = httpclient.InferenceServerClient(
            srv.url.removeprefix("http://"), connection_timeout=30, network_timeout=60
        )
        try:
            meta = client.get_model_metadata("typed")
            assert {"name": "halves", "datatype": "FP16", "shape": [-1, 2]} in meta["inputs"]
            result = client.infer("typed", inputs, outputs=wanted)
        finally:
            client.close()
    out = result.as_numpy("halves_out")
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, halves * np.float16(2))  # doubling is exact
    (entry,) = result.get_response()["outputs"]
    assert (entry["datatype"], entry["shape"]) == ("FP16", [2, 2])
    if binary_out:
        assert entry["parameters"]["binary_data_size"] == halves.nbytes  # 2 bytes a value
    else:
        assert "parameters" not in entry and len(entry["data"]) == 4
    assert backend.calls[-1] == 2


def test_triton_jpeg_as_bytes_is_the_same_answer_as_score(triton: Any, server: str) -> None:
    picture = jpeg(48, 40, seed=9)
    image = httpclient.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([picture], dtype=np.object_), binary_data=True)
    probs = triton.infer("cnn", [image]).as_numpy("probs")
    scored = httpx.post(
        server + "/score", params={"model": "cnn", "raw": "true"}, content=picture, timeout=30
    )
    assert scored.status_code == 200, scored.text
    np.testing.assert_allclose(
        probs, np.asarray(scored.json()["outputs"]["probs"]), rtol=1e-5, atol=1e-6
    )
    # pixels sent as FP32 tensors give the model's answer for those pixels too
    pixels = httpclient.InferInput("image", [1, 32, 32, 3], "FP32")
    pixels.set_data_from_numpy(np.zeros((1, 32, 32, 3), dtype=np.float32))
    assert triton.infer("cnn", [pixels]).as_numpy("probs").shape == (1, 10)


def test_triton_errors(triton: Any) -> None:
    with pytest.raises(InferenceServerException, match="Unknown model 'nope'"):
        triton.infer("nope", types_inputs(True))
    short = httpclient.InferInput("x", [1, 3], "FP32")
    short.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match=r"'x' has shape \[1, 3\]") as caught:
        triton.infer("echo", [short])
    assert caught.value.status() == "400"
    bad = httpclient.InferInput("image", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"not a jpeg"], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="not a JPEG or PNG"):
        triton.infer("cnn", [bad])
    good = httpclient.InferInput("x", [1, 2], "FP32")
    good.set_data_from_numpy(np.ones((1, 2), dtype=np.float32))
    assert triton.infer("echo", [good]).as_numpy("y").tolist() == [[1.0, 1.0]]


def test_two_models_with_different_batching_at_once(server: str) -> None:
    def call(index: int) -> tuple[str, bool]:
        client = httpclient.InferenceServerClient(
            server.removeprefix("http://"), network_timeout=60
        )
        try:
            if index % 2:
                x = httpclient.InferInput("x", [1, 2], "FP32")
                x.set_data_from_numpy(np.full((1, 2), index, dtype=np.float32))
                return "echo", client.infer("echo", [x]).as_numpy("y")[0, 0] == index
            got = client.infer("types", types_inputs(True)).as_numpy("total").tolist()
            return "types", got == [6, 2**40 + 1]
        finally:
            client.close()

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, range(48)))
    assert all(ok for _, ok in results)
    metrics = httpx.get(server + "/metrics", timeout=30).text
    sizes = _batch_size_buckets(metrics, "echo", "")
    assert sizes["2"] == sizes["+Inf"], metrics  # echo never ran more than 2 rows at once
    assert _batch_size_buckets(metrics, "types", "2")["+Inf"] > 0


def _batch_size_buckets(metrics: str, model: str, version: str) -> dict[str, int]:
    """``le`` bound (``"2"``, ``"+Inf"``) → calls, read with prometheus-client's parser."""
    from metrics_helpers import labelled, parse, value

    samples = parse(metrics)
    found = {}
    for labels in labelled(samples, "scorepack_batch_size_bucket"):
        if labels["model"] == model and labels["version"] == version:
            bound = labels["le"] if labels["le"] == "+Inf" else format(float(labels["le"]), "g")
            found[bound] = int(value(samples, "scorepack_batch_size_bucket", **labels))
    return found


def test_load_and_unload_under_traffic(tmp_path: Path) -> None:
    repo = Repository(
        [
            ModelSource(
                "swapped", None, lambda: Scorer(SlowBackend(tmp_path / "s.slow"), name="swapped")
            ),
            fixture_source(tmp_path, "steady", EchoBackend),
        ],
        model_control="explicit",
    )
    with serving_repository(repo) as (srv, _):
        address = srv.url.removeprefix("http://")
        stop = threading.Event()
        answers: list[bool] = []

        def traffic() -> None:
            client = httpclient.InferenceServerClient(address, network_timeout=60)
            try:
                x = httpclient.InferInput("x", [1, 2], "FP32")
                x.set_data_from_numpy(np.ones((1, 2), dtype=np.float32))
                while not stop.is_set() and len(answers) < 5000:
                    answers.append(
                        client.infer("steady", [x]).as_numpy("y").tolist() == [[1.0, 1.0]]
                    )
            finally:
                client.close()

        control = httpclient.InferenceServerClient(address, network_timeout=60)
        with ThreadPoolExecutor(3) as pool:
            workers = [pool.submit(traffic) for _ in range(3)]
            try:
                for _ in range(4):
                    control.unload_model("swapped")
                    assert not control.is_model_ready("swapped")
                    control.load_model("swapped")
                    assert control.is_model_ready("swapped")
            finally:
                stop.set()
            for worker in workers:
                worker.result(60)  # a failed request would raise here
        control.close()
        assert answers and all(answers), f"{answers.count(False)} wrong of {len(answers)}"


# --- KServe's client -------------------------------------------------------------------


def test_kserve_rest_client(server: str, tmp_path: Path) -> None:
    # found here, imported only in the child process (see there): importing it here would
    # clash with tritonclient.grpc in this process
    if importlib.util.find_spec("kserve") is None:
        pytest.skip("kserve is not installed")
    picture = jpeg(52, 44, seed=11)
    picture_path = tmp_path / "picture.jpg"
    picture_path.write_bytes(picture)
    result = run_python(
        "import runpy, sys; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')",
        str(TESTS / "kserve_client_check.py"),
        server,
        str(picture_path),
        env=cli_env([TESTS]),
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["live"] is True and seen["ready"] is True and seen["model_ready"] is True
    for binary in ("False", "True"):
        assert seen[f"infer_binary_{binary}"] == {
            "id": f"k-{binary}",
            "twice": [[3.0, 4.0]],
            "total": [6],
        }
    # a JPEG in a BYTES input: the same decoding and preprocessing as /score, the same answer
    scored = httpx.post(
        server + "/score", params={"model": "cnn", "raw": "true"}, content=picture, timeout=30
    )
    assert scored.status_code == 200, scored.text
    probs = np.asarray(seen["jpeg"]["probs"], dtype=np.float32)
    assert probs.shape == (1, 10)
    np.testing.assert_allclose(
        probs, np.asarray(scored.json()["outputs"]["probs"]), rtol=1e-5, atol=1e-6
    )
    status, message = seen["error_echo"]
    assert status == 400 and "shape [1, 3]" in message
    status, message = seen["error_nope"]
    assert status == 404 and "Unknown model 'nope'" in message
