"""Cross-framework parity: one CNN, five exports, one answer.

The same small CNN (tests/parity_models.py) is served from a TF SavedModel, ONNX made
from it by tf2onnx, and a PyTorch copy with the same weights exported to TorchScript,
torch.export (.pt2) and ONNX (torch.onnx.export). Each is served over real HTTP with no
``--backend`` (detected from the file's content) and the same settings; only the layout
differs (NHWC for TensorFlow's exports, NCHW for PyTorch's), and the core derives it
from each model's signature.

Tolerance: the top-k indices must be identical, and every score (and every raw
probability) within ``ATOL = 1e-5`` of the TF SavedModel's. All five compute in float32
on the CPU; the differences measured are about 2e-8. The fixture image gives top-5
scores at least 2e-3 apart (checked below), so a tie cannot make the top-k order flaky.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")
pytest.importorskip("onnxscript")  # torch.onnx.export's default exporter

import images
import scorepack
from parity_models import parity_models
from scorepack import PreprocessConfig, ScoringConfig
from scorepack.server import BackgroundServer

ATOL = 1e-5
TOP_K = 5

EXPECTED = {
    # format → (backend detected, layout derived from the signature)
    "savedmodel": ("tensorflow", "NHWC"),
    "tf2onnx": ("onnx", "NHWC"),
    "torchscript": ("pytorch", "NCHW"),
    "pt2": ("pytorch", "NCHW"),
    "torch_onnx": ("onnx", "NCHW"),
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return parity_models(tmp_path_factory.mktemp("parity"))


@pytest.fixture(scope="module")
def answers(exports: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Each export served over HTTP in turn; the same JPEG and PNG posted to each."""
    jpeg, png = images.jpeg(64, 48, seed=0), images.png(40, 40, seed=3)
    config = ScoringConfig(preprocess=PreprocessConfig(preset="unit"))
    results: dict[str, dict[str, Any]] = {}
    for name, path in exports.items():
        scorer = scorepack.load(path, device="cpu", config=config, wait=False)
        with (
            BackgroundServer(scorer) as server,
            httpx.Client(base_url=server.url, timeout=60) as client,
        ):
            replies = [
                client.post("/score", content=jpeg, headers={"content-type": "image/jpeg"}),
                client.post("/score?raw=true", content=png, headers={"content-type": "image/png"}),
            ]
            for reply in replies:
                assert reply.status_code == 200, (name, reply.text)
            results[name] = {
                "backend": scorepack.resolve_backend(path).name,
                "layout": scorer.image_plan.layout if scorer.image_plan else None,
                "jpeg": replies[0].json(),
                "png": replies[1].json(),
            }
    return results


def _top_k(body: dict[str, Any]) -> tuple[list[int], np.ndarray]:
    entries = body["predictions"][0]["top_k"]
    return [e["index"] for e in entries], np.array([e["score"] for e in entries])


def test_every_format_is_detected_and_gets_its_layout(answers: dict[str, dict[str, Any]]) -> None:
    for name, (backend, layout) in EXPECTED.items():
        assert answers[name]["backend"] == backend, name
        assert answers[name]["layout"] == layout, name


def test_reference_top_k_is_clear_cut(answers: dict[str, dict[str, Any]]) -> None:
    # if the reference scores were nearly tied, comparing top-k orders would prove nothing
    for image in ("jpeg", "png"):
        _, scores = _top_k(answers["savedmodel"][image])
        assert len(scores) == TOP_K
        assert np.min(-np.diff(scores)) > 100 * ATOL


@pytest.mark.parametrize("name", [n for n in EXPECTED if n != "savedmodel"])
def test_same_image_same_top_k_and_scores(answers: dict[str, dict[str, Any]], name: str) -> None:
    for image in ("jpeg", "png"):
        want_idx, want_scores = _top_k(answers["savedmodel"][image])
        got_idx, got_scores = _top_k(answers[name][image])
        assert got_idx == want_idx, (name, image)
        np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("name", [n for n in EXPECTED if n != "savedmodel"])
def test_raw_probabilities_agree(answers: dict[str, dict[str, Any]], name: str) -> None:
    want = np.array(answers["savedmodel"]["png"]["outputs"]["probs"])
    got = np.array(answers[name]["png"]["outputs"]["probs"])
    assert got.shape == want.shape == (1, 10)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL, err_msg=name)


# --- the ResNet50 example ----------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "resnet50"
SAMPLE = EXAMPLE.parent / "images" / "sample.jpg"
SLOW = os.environ.get("SCOREPACK_SLOW_TESTS", "").lower() in ("1", "true", "yes")


def _example_builder() -> Any:
    spec = importlib.util.spec_from_file_location("resnet50_build", EXAMPLE / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _serve_example(path: Path, fmt: str) -> dict[str, Any]:
    preset = "caffe" if fmt == "tensorflow" else "imagenet"
    config = ScoringConfig(
        preprocess=PreprocessConfig(
            preset=preset, resize="stretch" if fmt == "tensorflow" else "crop"
        )
    )
    scorer = scorepack.load(path, device="cpu", config=config, wait=False)
    with (
        BackgroundServer(scorer) as server,
        httpx.Client(base_url=server.url, timeout=120) as client,
    ):
        reply = client.post("/score", content=SAMPLE.read_bytes())
        assert reply.status_code == 200, reply.text
        return {"backend": scorepack.resolve_backend(path).name, "body": reply.json()}


def test_resnet50_example_builds_and_serves_tiny(tmp_path: Path) -> None:
    """The example's PyTorch builders at a tiny width (the default run stays fast)."""
    builder = _example_builder()
    paths = builder.build(["onnx", "torchscript", "pt2"], tmp_path, size=64, classes=10, width=4)
    answers = {fmt: _serve_example(path, fmt) for fmt, path in paths.items()}
    assert {fmt: a["backend"] for fmt, a in answers.items()} == {
        "onnx": "onnx",
        "torchscript": "pytorch",
        "pt2": "pytorch",
    }
    # the same PyTorch network (same seed) in three formats: the same answer
    top = {fmt: _top_k(a["body"]) for fmt, a in answers.items()}
    for fmt in ("torchscript", "pt2"):
        assert top[fmt][0] == top["onnx"][0]
        np.testing.assert_allclose(top[fmt][1], top["onnx"][1], rtol=0, atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="full-size ResNet50; set SCOREPACK_SLOW_TESTS=1")
def test_resnet50_example_full_size(tmp_path: Path) -> None:
    builder = _example_builder()
    paths = builder.build(list(builder.FILES), tmp_path)
    for fmt, path in paths.items():
        body = _serve_example(path, fmt)["body"]
        assert len(body["predictions"][0]["top_k"]) == TOP_K
