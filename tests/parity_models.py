"""One small CNN, built once, in every format scorepack serves.

The network is defined twice, in Keras (NHWC) and in plain PyTorch (NCHW), and the
PyTorch copy takes the Keras weights, so all exports compute the same function:

    image [batch, 16, 16, 3 | 3, 16, 16] float32
      → conv 3x3, 8 filters, relu → conv 3x3 stride 2, 8 filters, relu
      → global average pool → dense 10 → softmax → probs [batch, 10]

Exports: a TF SavedModel, ONNX from it (tf2onnx), and from the PyTorch copy a
TorchScript archive, a torch.export program (.pt2) and ONNX (torch.onnx.export). Each
builder imports its framework when called; tests importorskip first.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

SIZE = 16
CLASSES = 10


def keras_cnn(path: Path, seed: int = 7) -> Path:
    """The CNN in Keras, exported as a SavedModel; its weights go beside it, in ``PATH.npz``."""
    import numpy as np
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    image = tf.keras.Input((SIZE, SIZE, 3), name="image")
    x = tf.keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(image)
    x = tf.keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv2")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    # a wider spread of logits than Glorot's gives, so the top-k order is clear-cut
    x = tf.keras.layers.Dense(
        CLASSES, name="dense", kernel_initializer=tf.keras.initializers.RandomNormal(stddev=6.0)
    )(x)
    probs = tf.keras.layers.Softmax(name="probs")(x)
    model = tf.keras.Model(image, {"probs": probs})
    model.export(str(path), verbose=False)
    weights = {
        f"{layer}_{kind}": value
        for layer in ("conv1", "conv2", "dense")
        for kind, value in zip(
            ("kernel", "bias"), model.get_layer(layer).get_weights(), strict=True
        )
    }
    np.savez(weights_file(path), **weights)
    return path


def weights_file(saved_model: Path) -> Path:
    """Where :func:`keras_cnn` keeps the Keras weights of ``saved_model``."""
    return saved_model.with_name(saved_model.name + ".npz")


def tf_to_onnx(saved_model: Path, path: Path, opset: int = 17) -> Path:
    """ONNX from a SavedModel with tf2onnx, the way its users run it."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tf2onnx.convert",
            "--saved-model",
            str(saved_model),
            "--signature_def",
            "serving_default",
            "--opset",
            str(opset),
            "--output",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return path


def torch_cnn(weights: Path | None = None) -> torch.nn.Module:
    """The same CNN in PyTorch (NCHW), with the Keras weights when ``weights`` is given."""
    import numpy as np
    import torch

    torch.manual_seed(11)
    model = _classes()["TorchCNN"]()
    if weights is not None:
        w = np.load(weights)
        with torch.no_grad():
            for name in ("conv1", "conv2"):
                conv = getattr(model, name)
                # Keras kernels are (kh, kw, in, out); PyTorch's are (out, in, kh, kw)
                conv.weight.copy_(
                    torch.from_numpy(w[f"{name}_kernel"].transpose(3, 2, 0, 1).copy())
                )
                conv.bias.copy_(torch.from_numpy(w[f"{name}_bias"]))
            # Keras dense kernels are (in, out); nn.Linear's weight is (out, in)
            model.dense.weight.copy_(torch.from_numpy(w["dense_kernel"].T.copy()))
            model.dense.bias.copy_(torch.from_numpy(w["dense_bias"]))
    return model.eval()


@functools.cache
def _classes() -> dict[str, type]:
    """The PyTorch modules, defined on first use (this module must not import torch)."""
    import torch
    from torch import nn

    class TorchCNN(nn.Module):
        """Conv-relu, strided conv-relu, global average pool, dense, softmax."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3)
            self.conv2 = nn.Conv2d(8, 8, 3, stride=2)
            self.dense = nn.Linear(8, CLASSES)

        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            x = torch.relu(self.conv1(image))
            x = torch.relu(self.conv2(x))
            x = x.mean(dim=(2, 3))
            return {"probs": torch.softmax(self.dense(x), dim=1)}

    class TwoInputs(nn.Module):
        """image [b, 3, 8, 8] + extra [b, 4] -> (scores [b, 5], features [b, 4])."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.dense = nn.Linear(8, 5)

        def forward(
            self, image: torch.Tensor, extra: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            features = torch.relu(self.conv(image)).mean(dim=(2, 3))
            return self.dense(torch.cat([features, extra], dim=1)), features

    return {"TorchCNN": TorchCNN, "TwoInputs": TwoInputs}


def two_inputs() -> torch.nn.Module:
    """A TorchScript-able model with two inputs and a tuple of two outputs."""
    import torch

    torch.manual_seed(3)
    return _classes()["TwoInputs"]().eval()


def image_spec() -> Any:
    """The PyTorch CNN's input as a scorepack TensorSpec (NCHW, any batch)."""
    from scorepack import TensorSpec

    return TensorSpec("image", "float32", (None, 3, SIZE, SIZE))


def to_torchscript(
    model: torch.nn.Module, path: Path, *, signature: bool = True, trace: bool = False
) -> Path:
    """``torch.jit.save`` of the scripted (or traced) model, with scorepack's signature file."""
    import torch

    from scorepack_pytorch import signature_files

    example = torch.zeros(2, 3, SIZE, SIZE)
    extra = signature_files([image_spec()]) if signature else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is, since torch 2.10
        compiled = (
            torch.jit.trace(model, example, strict=False) if trace else torch.jit.script(model)
        )
        torch.jit.save(compiled, str(path), _extra_files=extra)
    return path


def to_pt2(model: torch.nn.Module, path: Path, *, batch: int | None = None) -> Path:
    """``torch.export.save``: a dynamic batch, or a fixed one when ``batch`` is given."""
    import torch

    example = torch.zeros(batch or 2, 3, SIZE, SIZE)
    dynamic = None if batch else ({0: torch.export.Dim("batch")},)
    program = torch.export.export(model, (example,), dynamic_shapes=dynamic)
    torch.export.save(program, str(path))
    return path


def to_onnx(
    model: torch.nn.Module, path: Path, *, batch: int | None = None, dynamo: bool = True
) -> Path:
    """``torch.onnx.export``: a dynamic batch axis, or a fixed batch when ``batch`` is given.

    ``dynamo=True`` is torch's default exporter (through torch.export; writes the weights
    to ``PATH.data`` beside the graph); ``False`` the older TorchScript-based one, faster.
    """
    import torch

    example = torch.zeros(batch or 2, 3, SIZE, SIZE)
    kwargs: dict[str, Any]
    if dynamo:
        kwargs = {"dynamic_shapes": None if batch else ({0: torch.export.Dim("batch")},)}
    else:
        axes = None if batch else {"image": {0: "batch"}, "probs": {0: "batch"}}
        kwargs = {"dynamic_axes": axes, "opset_version": 17}
    with warnings.catch_warnings():
        # the legacy exporter is deprecated, and the new one trips torch's own pytree warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["probs"],
            dynamo=dynamo,
            verbose=False,
            **kwargs,
        )
    return path


_lock = threading.Lock()
_built: dict[str, dict[str, Path]] = {}


def parity_models(root: Path) -> dict[str, Path]:
    """Every export of the one CNN, built once per test session (the first caller's root)."""
    with _lock:
        if "all" not in _built:
            saved = keras_cnn(root / "savedmodel")
            model = torch_cnn(weights_file(saved))
            _built["all"] = {
                "savedmodel": saved,
                "tf2onnx": tf_to_onnx(saved, root / "tf2onnx.onnx"),
                "torchscript": to_torchscript(model, root / "cnn.ts"),
                "pt2": to_pt2(model, root / "cnn.pt2"),
                "torch_onnx": to_onnx(model, root / "cnn_torch.onnx"),
            }
        return dict(_built["all"])


def torch_models(root: Path) -> dict[str, Path]:
    """PyTorch-only exports (random weights): no TensorFlow needed, built once per session."""
    with _lock:
        if "torch" not in _built:
            root.mkdir(parents=True, exist_ok=True)
            model = torch_cnn()
            _built["torch"] = {
                "torchscript": to_torchscript(model, root / "cnn.ts"),
                "torchscript_bare": to_torchscript(
                    model, root / "bare.ts", signature=False, trace=True
                ),
                "pt2": to_pt2(model, root / "cnn.pt2"),
                "pt2_batch2": to_pt2(model, root / "cnn_b2.pt2", batch=2),
                "onnx": to_onnx(model, root / "cnn.onnx", dynamo=False),
                "onnx_batch1": to_onnx(model, root / "cnn_b1.onnx", batch=1),
                "onnx_batch4": to_onnx(model, root / "cnn_b4.onnx", batch=4, dynamo=False),
            }
        return dict(_built["torch"])
