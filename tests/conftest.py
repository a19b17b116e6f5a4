"""Shared fixtures. Framework-specific ones importorskip their framework."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scorepack import plugins


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
