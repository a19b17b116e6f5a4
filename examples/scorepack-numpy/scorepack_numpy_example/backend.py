"""The backend: loads the arrays once, scores batches with NumPy matrix products."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from scorepack import Backend, BackendOption, Signature, TensorSpec, import_framework, map_errors
from scorepack.errors import ModelLoadError

if TYPE_CHECKING:
    # framework types in hints only: importing this module must not import the framework
    import numpy as np

__all__ = ["INPUT", "INSTALL", "NumpyBackend"]

INSTALL = "pip install scorepack-numpy-example numpy"

#: the name of the model's one input
INPUT = "input"


def _numpy() -> Any:
    # A real framework (xgboost, tensorrt, ...) is imported here, on first load, never at
    # module level: discovery imports every plugin module for every `scorepack --help`.
    return import_framework("numpy", "numpy", INSTALL)


class NumpyBackend(Backend):
    """Scores the MLP classifiers of :mod:`scorepack_numpy_example.model_format`.

    Input ``input`` is ``[batch, *input_shape]`` float32 (an ``[8, 8, 3]`` input takes
    images); it is flattened per row. Output ``probs`` (or ``logits`` with
    ``-O softmax=false``) is ``[batch, classes]``: one row per input row.
    """

    #: typed options: scorepack parses -O softmax=false (or no, off, 0) before load()
    option_schema = (
        BackendOption("softmax", bool, True, "apply softmax to the last layer; false: logits"),
    )

    def load(self) -> None:
        np = _numpy()
        # NumPy runs on the CPU only: "auto" resolves to cpu, "cuda" is refused with a hint
        self.device = self.resolve_device()
        with map_errors("numpy", "load", ModelLoadError):
            # allow_pickle=False: a model file must never run code when it is loaded
            with np.load(self.path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        self._np = np
        self._layers = _layers(arrays, str(self.path))
        input_shape = _input_shape(arrays, self._layers[0][0].shape[0], str(self.path))
        self._softmax = self.option("softmax")
        classes = int(self._layers[-1][0].shape[1])
        self.signature = Signature(
            inputs=(TensorSpec(INPUT, "float32", (None, *input_shape)),),
            outputs=(TensorSpec(self.output_name, "float32", (None, classes)),),
            name="mlp",
        )

    @property
    def output_name(self) -> str:
        """``probs`` after softmax, ``logits`` without it."""
        return "probs" if self._softmax else "logits"

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        np = self._np
        with map_errors("numpy", bad_input=(ValueError,)):
            x = inputs[INPUT]
            x = x.reshape(x.shape[0], -1).astype(np.float32, copy=False)
            last = len(self._layers) - 1
            for index, (weights, bias) in enumerate(self._layers):
                x = x @ weights + bias
                if index < last:
                    x = np.maximum(x, 0.0)
            if self._softmax:
                x = np.exp(x - x.max(axis=1, keepdims=True))
                x /= x.sum(axis=1, keepdims=True)
            return {self.output_name: x.astype(np.float32, copy=False)}

    def unload(self) -> None:
        self._layers = []

    def describe(self) -> dict[str, str]:
        info = super().describe()
        # describe() may be called before load() (a server's /info while loading)
        layers = getattr(self, "_layers", [])
        if layers:
            sizes = [layers[0][0].shape[0]] + [weights.shape[1] for weights, _ in layers]
            info["layers"] = " -> ".join(str(size) for size in sizes)
        return info


def _layers(arrays: Mapping[str, np.ndarray], where: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(W0, b0), (W1, b1), ...]`` as float32, checked to chain into each other."""
    layers: list[tuple[np.ndarray, np.ndarray]] = []
    index = 0
    while f"W{index}" in arrays:
        weights, bias = arrays[f"W{index}"], arrays.get(f"b{index}")
        if bias is None:
            raise ModelLoadError(f"{where}: W{index} has no bias b{index}")
        if weights.ndim != 2 or bias.shape != (weights.shape[1],):
            raise ModelLoadError(
                f"{where}: layer {index} needs W{index} [in, out] and b{index} [out]; "
                f"got {list(weights.shape)} and {list(bias.shape)}"
            )
        if layers and layers[-1][0].shape[1] != weights.shape[0]:
            raise ModelLoadError(
                f"{where}: W{index - 1} gives {layers[-1][0].shape[1]} values "
                f"but W{index} takes {weights.shape[0]}"
            )
        if weights.dtype.kind != "f" or bias.dtype.kind != "f":
            raise ModelLoadError(f"{where}: W{index} and b{index} must be float arrays")
        layers.append((weights.astype("float32"), bias.astype("float32")))
        index += 1
    if not layers:
        raise ModelLoadError(f"{where}: no W0/b0 arrays; this is not a scorepack NumPy model")
    return layers


def _input_shape(arrays: Mapping[str, np.ndarray], features: int, where: str) -> tuple[int, ...]:
    if "input_shape" not in arrays:
        return (features,)
    shape = tuple(int(d) for d in arrays["input_shape"].ravel())
    size = 1
    for dim in shape:
        size *= dim
    if not shape or min(shape) < 1 or size != features:
        raise ModelLoadError(
            f"{where}: input_shape {list(shape)} holds {size} values but W0 takes {features}"
        )
    return shape
