"""TensorFlow 2 SavedModel, served through one of its signatures."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from scorepack import Backend, BackendOption, Signature, TensorSpec, import_framework, map_errors
from scorepack.errors import ModelLoadError

logger = logging.getLogger("scorepack.tensorflow")

INSTALL = "pip install 'scorepack-tensorflow[cpu]' (or [gpu] for tensorflow[and-cuda])"


def _tf() -> Any:
    return import_framework("tensorflow", "tensorflow", INSTALL)


def _spec(name: str, tensor_spec: Any) -> TensorSpec:
    dtype = tensor_spec.dtype
    numpy_dtype = "object" if dtype.name == "string" else np.dtype(dtype.as_numpy_dtype).name
    dims = tensor_spec.shape.as_list() if tensor_spec.shape.rank is not None else [None]
    return TensorSpec(name=name, dtype=numpy_dtype, shape=tuple(dims), batched=len(dims) > 0)


class TensorFlowBackend(Backend):
    """Serves a TF2 SavedModel through ``serving_default`` or the signature named.

    Inputs and outputs come from the signature itself; models with several inputs work.
    On a GPU, memory growth is switched on so TensorFlow does not take the whole card.
    """

    option_schema = (
        BackendOption("signature", str, "serving_default", "the signature to serve"),
        BackendOption(
            "intra_op_threads",
            int,
            help="threads inside one op (default: TensorFlow's choice)",
            minimum=0,
        ),
        BackendOption(
            "inter_op_threads",
            int,
            help="ops run in parallel (default: TensorFlow's choice)",
            minimum=0,
        ),
        BackendOption(
            "memory_growth",
            bool,
            True,
            "GPUs: allocate memory as needed, not all at once",
        ),
        BackendOption(
            "precision",
            str,
            "fp32",
            "fp32; bf16 on CPUs with AVX512-BF16 or AMX (oneDNN mixed precision); fp16 on "
            "GPUs (mixed precision). Process-wide; scores change slightly",
            choices=("fp32", "bf16", "fp16"),
        ),
    )

    @classmethod
    def available_devices(cls) -> list[str]:
        tf = _tf()
        gpus = tf.config.list_physical_devices("GPU")
        return ["cpu"] + [f"cuda:{i}" for i in range(len(gpus))]

    def load(self) -> None:
        tf = _tf()
        self._configure_threads(tf)
        self.device = self.resolve_device()
        self._configure_precision(tf)
        # TensorFlow sets up every visible GPU on first use, even for a model placed on
        # the CPU, and by default takes nearly all of their memory: grow it instead
        self._enable_memory_growth(tf)
        if self.device.is_cuda:
            self._tf_device = f"/GPU:{self.device.index}"
        else:
            self._tf_device = "/CPU:0"
        with map_errors("tensorflow", "load", ModelLoadError), tf.device(self._tf_device):
            self._model = tf.saved_model.load(str(self.path))
        wanted = self.option("signature")
        signatures = dict(self._model.signatures)
        if wanted not in signatures:
            raise ModelLoadError(
                f"{self.path} has no signature {wanted!r}; it has: "
                f"{', '.join(signatures) or 'none (export it with a serving signature)'}. "
                "Choose one with -O signature=NAME."
            )
        self._fn = signatures[wanted]
        _args, kwargs = self._fn.structured_input_signature
        outputs = self._fn.structured_outputs
        if not isinstance(outputs, dict):
            raise ModelLoadError(f"signature {wanted!r} does not return named outputs")
        # a SignatureDef maps names to tensors with no order, and the order these dicts come
        # back in changes from one process to the next: sort, so every load agrees
        self.signature = Signature(
            inputs=tuple(_spec(n, kwargs[n]) for n in sorted(kwargs)),
            outputs=tuple(_spec(n, outputs[n]) for n in sorted(outputs)),
            name=wanted,
        )
        self._tf = tf
        self._invalid = (tf.errors.InvalidArgumentError,)

    def _configure_threads(self, tf: Any) -> None:
        for option, setter in (
            ("intra_op_threads", tf.config.threading.set_intra_op_parallelism_threads),
            ("inter_op_threads", tf.config.threading.set_inter_op_parallelism_threads),
        ):
            if option in self.options:
                try:
                    setter(self.options[option])
                except RuntimeError as exc:  # TensorFlow was initialised before this load
                    logger.warning("cannot set %s now: %s", option, exc)

    def _configure_precision(self, tf: Any) -> None:
        """Grappler's mixed-precision rewrite: float32 graphs run in bf16 or fp16 where safe.

        On a CPU with native bf16 (AVX512-BF16, AMX) ResNet50 at batch 32 ran 1.45x faster
        here (benchmarks/RESULTS.md); batch 1 did not gain. The option is process-wide,
        which suits scorepack: one process serves one model.
        """
        precision = self.option("precision")
        if precision == "fp32":
            return
        if precision == "bf16":
            if self.device.is_cuda:
                raise ModelLoadError("-O precision=bf16 is for CPUs; on a GPU use precision=fp16")
            if not _cpu_has_bf16():
                logger.warning(
                    "this CPU has no native bf16 (avx512_bf16 or amx_bf16): "
                    "-O precision=bf16 will be emulated and likely slower than fp32"
                )
            tf.config.optimizer.set_experimental_options(
                {"auto_mixed_precision_onednn_bfloat16": True}
            )
        elif precision == "fp16":
            if not self.device.is_cuda:
                raise ModelLoadError("-O precision=fp16 runs on a GPU; on a CPU use precision=bf16")
            tf.config.optimizer.set_experimental_options({"auto_mixed_precision": True})

    def _enable_memory_growth(self, tf: Any) -> None:
        if not self.option("memory_growth"):
            return
        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError as exc:  # already initialised: growth is fixed by then
                logger.warning("cannot switch on memory growth for %s: %s", gpu.name, exc)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = self._tf
        with map_errors("tensorflow", bad_input=self._invalid):
            feed = make_feed(tf, inputs, self._tf_device)
            with tf.device(self._tf_device):
                outputs = self._fn(**feed)
            return {name: tensor.numpy() for name, tensor in outputs.items()}

    def unload(self) -> None:
        self._model = None
        self._fn = None

    def describe(self) -> dict[str, str]:
        info = super().describe()
        info["tf_device"] = getattr(self, "_tf_device", "")
        return info


def make_feed(tf: Any, inputs: Mapping[str, np.ndarray], device: str) -> dict[str, Any]:
    """Input tensors: numbers on ``device``, strings on the host.

    TensorFlow has no GPU kernels for strings; a string tensor made inside a GPU device
    scope is a known failure pattern (placement errors, or copies that cannot happen), so
    strings are made under ``/CPU:0`` and the function's placer keeps them there.
    """
    feed = {}
    for name, value in inputs.items():
        with tf.device("/CPU:0" if value.dtype == object else device):
            feed[name] = tf.constant(value)
    return feed


def _cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (Linux: read from /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return "avx512_bf16" in flags.split() or "amx_bf16" in flags.split()
