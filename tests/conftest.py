"""Shared fixtures. Framework-specific ones importorskip their framework."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from scorepack import plugins

# On a GPU machine, TensorFlow used directly by fixtures (building models, reference
# outputs) would otherwise take nearly all GPU memory from the test process, leaving
# none to the GPU tests' own processes.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("SCOREPACK_GC_STRESS"):
        # hunting crashes in C extensions that only a collection at the wrong moment shows
        from gc_stress import start

        start()


@pytest.fixture(autouse=True)
def _fresh_plugins() -> Iterator[None]:
    """Each test starts from a freshly loaded plugin manager."""
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture(scope="session")
def small_cnn_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TF SavedModel: image [batch, 32, 32, 3] -> probs [batch, 10]."""
    pytest.importorskip("tensorflow")
    from tf_models import small_cnn

    return small_cnn(tmp_path_factory.mktemp("models") / "small_cnn")


@pytest.fixture(scope="session")
def multi_input_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TF SavedModel with two inputs (image, extra) -> scores [batch, 5]."""
    pytest.importorskip("tensorflow")
    from tf_models import multi_input

    return multi_input(tmp_path_factory.mktemp("models") / "multi_input")


# --- models for the scoring core, server and TensorFlow backend tests --------------------


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's small SavedModels are built."""
    pytest.importorskip("tensorflow")
    return tmp_path_factory.mktemp("sp_models")


@pytest.fixture(scope="session")
def identity_path(models_dir: Path) -> Path:
    """pixels_in [batch, 12, 16, 3] float32 -> pixels (the preprocessed input itself)."""
    from tf_models import identity_image

    return identity_image(models_dir / "identity")


@pytest.fixture(scope="session")
def grey_identity_path(models_dir: Path) -> Path:
    """pixels_in [batch, 12, 16, 1] float32 -> pixels: a greyscale model."""
    from tf_models import identity_image

    return identity_image(models_dir / "grey_identity", channels=1)


@pytest.fixture(scope="session")
def uint8_identity_path(models_dir: Path) -> Path:
    """image_u8 [batch, 12, 16, 3] uint8 -> pixels float32."""
    from tf_models import identity_image

    return identity_image(models_dir / "uint8_identity", dtype="uint8", input_name="image_u8")


@pytest.fixture(scope="session")
def nchw_path(models_dir: Path) -> Path:
    """chw [batch, 3, 12, 16] float32 (Keras, permuted inside) -> pixels [batch, 12, 16, 3]."""
    from tf_models import nchw_identity

    return nchw_identity(models_dir / "nchw")


@pytest.fixture(scope="session")
def two_signatures_path(models_dir: Path) -> Path:
    """photo [batch, 8, 8, 3]: serving_default -> class_probs [batch, 4]; embed -> embedding."""
    from tf_models import two_signatures

    return two_signatures(models_dir / "two_signatures")


@pytest.fixture(scope="session")
def int_inputs_path(models_dir: Path) -> Path:
    """ids int32 [batch, 3] + weights float32 [batch, 3] -> score float32 [batch]."""
    from tf_models import int_inputs

    return int_inputs(models_dir / "int_inputs")
