"""The models the suite measures, built here with random weights and cached in .cache/bench.

ResNet50 is Keras' own (``tf.keras.applications.ResNet50(weights=None)``) for TensorFlow and,
converted with tf2onnx, for ONNX Runtime — the same network and weights, NHWC, "caffe"
pixels; for PyTorch it is examples/resnet50's plain-torch ResNet50 as TorchScript (NCHW,
ImageNet normalisation). The tiny model is a few layers on a 32x32 input.

Each model is measured in named variants (:data:`VARIANTS`): a backend with the ``-O``
options that switch a lever on, on the device it is meant for (``--device cpu|cuda``).
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "bench"
SAMPLE = ROOT / "examples" / "images" / "sample.jpg"


@dataclass(frozen=True)
class BenchModel:
    """One model to measure: where it is, which backend, the preprocessing it expects."""

    name: str
    backend: str
    path: Path
    preset: str
    #: backend options (-O KEY=VALUE), e.g. ("precision=bf16",)
    options: tuple[str, ...] = ()
    #: how results name it: the backend, or a variant of it ("tensorflow-bf16")
    variant: str = ""
    #: where the model runs: cpu or cuda
    device: str = "cpu"

    @property
    def label(self) -> str:
        return self.variant or self.backend

    @property
    def serve_args(self) -> list[str]:
        args = ["--preset", self.preset, "--resize", "stretch", "--device", self.device]
        for option in self.options:
            args += ["-O", option]
        return args


def _keras_resnet50() -> object:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    image = tf.keras.Input((224, 224, 3), name="image")
    net = tf.keras.applications.ResNet50(weights=None, input_tensor=image)
    return tf.keras.Model(image, {"probs": net.output})


def resnet50_tensorflow() -> BenchModel:
    # the baseline's AZUREML_MODEL_DIR is the parent: it loads $AZUREML_MODEL_DIR/resnet50
    path = CACHE / "tensorflow" / "resnet50"
    if not (path / "saved_model.pb").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _keras_resnet50().export(str(path), verbose=False)  # type: ignore[attr-defined]
    return BenchModel("resnet50", "tensorflow", path, "caffe")


def resnet50_onnx() -> BenchModel:
    path = CACHE / "onnx" / "resnet50.onnx"
    if not path.exists():
        import onnx
        import tensorflow as tf
        import tf2onnx

        path.parent.mkdir(parents=True, exist_ok=True)
        spec = (tf.TensorSpec((None, 224, 224, 3), tf.float32, name="image"),)
        proto, _ = tf2onnx.convert.from_keras(_keras_resnet50(), input_signature=spec, opset=17)
        onnx.save(proto, str(path))
    return BenchModel("resnet50", "onnx", path, "caffe")


def resnet50_pytorch() -> BenchModel:
    path = CACHE / "pytorch" / "resnet50.ts"
    if not path.exists():
        sys.path.insert(0, str(ROOT / "examples" / "resnet50"))
        from build import build_torchscript

        path.parent.mkdir(parents=True, exist_ok=True)
        build_torchscript(path, 224, 1000, 64)
    return BenchModel("resnet50", "pytorch", path, "imagenet")


def tiny_tensorflow() -> BenchModel:
    path = CACHE / "tensorflow" / "tiny"
    if not (path / "saved_model.pb").exists():
        import tensorflow as tf

        tf.keras.utils.set_random_seed(0)
        image = tf.keras.Input((32, 32, 3), name="image")
        x = tf.keras.layers.Conv2D(8, 3, activation="relu")(image)
        x = tf.keras.layers.MaxPooling2D()(x)
        x = tf.keras.layers.Conv2D(16, 3, activation="relu")(x)
        x = tf.keras.layers.GlobalAveragePooling2D()(x)
        probs = tf.keras.layers.Dense(10, activation="softmax")(x)
        path.parent.mkdir(parents=True, exist_ok=True)
        tf.keras.Model(image, {"probs": probs}).export(str(path), verbose=False)
    return BenchModel("tiny", "tensorflow", path, "unit")


RESNET50 = {
    "tensorflow": resnet50_tensorflow,
    "onnx": resnet50_onnx,
    "pytorch": resnet50_pytorch,
}


@dataclass(frozen=True)
class Variant:
    """A backend with some levers on: its ``-O`` options per device (None: not for it)."""

    backend: str
    cpu: tuple[str, ...] | None
    cuda: tuple[str, ...] | None


TRT_CACHE = f"trt_engine_cache={CACHE / 'tensorrt'}"

#: every variant the suite can measure, by name (``--backends NAME,NAME``)
VARIANTS: dict[str, Variant] = {
    "tensorflow": Variant("tensorflow", (), ()),
    # grappler's oneDNN bf16 rewrite, on CPUs with AVX512-BF16 or AMX
    "tensorflow-bf16": Variant("tensorflow", ("precision=bf16",), None),
    "tensorflow-fp16": Variant("tensorflow", None, ("precision=fp16",)),
    # plain CUDA provider on a GPU; TensorRT is its own variant
    "onnx": Variant("onnx", (), ("tensorrt=false",)),
    "onnx-tensorrt": Variant("onnx", None, ("tensorrt=true", TRT_CACHE)),
    "onnx-trt-fp16": Variant("onnx", None, ("tensorrt=true", "trt_fp16=true", TRT_CACHE)),
    "onnx-cuda-graph": Variant("onnx", None, ("tensorrt=false", "cuda_graph=true")),
    # pinned staging buffers are on by default on a GPU; -unpinned measures what they give
    "pytorch": Variant("pytorch", (), ()),
    "pytorch-unpinned": Variant("pytorch", None, ("pinned=false",)),
    "pytorch-half": Variant("pytorch", None, ("half=true",)),
    "pytorch-gpu-decode": Variant("pytorch", None, ("gpu_decode=true",)),
    "pytorch-half-gpu-decode": Variant("pytorch", None, ("half=true", "gpu_decode=true")),
}

#: what ``--backends`` defaults to on each device
DEFAULT_VARIANTS = {
    "cpu": ("tensorflow", "tensorflow-bf16", "onnx", "pytorch"),
    "cuda": (
        "tensorflow",
        "tensorflow-fp16",
        "onnx",
        "onnx-tensorrt",
        "onnx-trt-fp16",
        "onnx-cuda-graph",
        "pytorch",
        "pytorch-unpinned",
        "pytorch-half",
        "pytorch-gpu-decode",
    ),
}


def variant_options(name: str, device: str) -> tuple[str, tuple[str, ...]]:
    """(backend, -O options) of a named variant on ``device``; refuses what does not fit."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    variant = VARIANTS[name]
    options = variant.cuda if device == "cuda" else variant.cpu
    if options is None:
        other = "cpu" if device == "cuda" else "cuda"
        raise ValueError(f"variant {name!r} is for --device {other} only")
    return variant.backend, options


def resnet50(name: str, device: str = "cpu") -> BenchModel:
    """ResNet50 in the named variant, on ``device`` (the model is built on first use)."""
    backend, options = variant_options(name, device)
    model = RESNET50[backend]()
    return replace(model, options=options, variant=name, device=device)


def small_image() -> Path:
    """A 64x64 JPEG: with a tiny model, the server's own work is what is left to measure."""
    path = CACHE / "small.jpg"
    if not path.exists():
        from PIL import Image

        path.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(SAMPLE) as sample:
            buf = io.BytesIO()
            sample.convert("RGB").resize((64, 64)).save(buf, "JPEG", quality=90)
        path.write_bytes(buf.getvalue())
    return path
