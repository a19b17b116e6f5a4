"""ONNX Runtime: ``.onnx`` models on the CPU, on CUDA, or through TensorRT."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scorepack import (
    Backend,
    BackendOption,
    Device,
    Signature,
    TensorSpec,
    import_framework,
    map_errors,
)
from scorepack.batching import BatchingConfig
from scorepack.errors import DeviceUnavailableError, ModelLoadError

from .cuda_graph import FixedBinding, graph_shapes
from .integrity import check_model_file

logger = logging.getLogger("scorepack.onnx")

INSTALL = "pip install 'scorepack-onnx[cpu]' (or [gpu] for onnxruntime-gpu)"

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

#: ONNX element types as NodeArg.type spells them → NumPy dtype names
DTYPES: Mapping[str, str] = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}

#: -O graph_optimization_level=NAME → GraphOptimizationLevel member
OPTIMIZATION_LEVELS: Mapping[str, str] = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def _ort() -> Any:
    return import_framework("onnxruntime", "onnx", INSTALL)


def cpu_count() -> int:
    """The cores this process may run on (the container's share, not the host's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def cuda_device_count() -> int:
    """How many CUDA devices this process can see, without loading CUDA.

    ONNX Runtime has no device query of its own: count the NVIDIA device nodes and
    apply ``CUDA_VISIBLE_DEVICES`` the way CUDA does (it stops at the first bad entry).
    """
    physical = len(glob.glob("/dev/nvidia[0-9]*"))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return physical
    count = 0
    for entry in visible.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        count += 1
    return min(count, physical)


def _tensor_spec(arg: Any) -> TensorSpec:
    dtype = DTYPES.get(arg.type)
    if dtype is None:
        raise ModelLoadError(
            f"{arg.name!r} has element type {arg.type}, which scorepack cannot feed from "
            f"NumPy; supported: {', '.join(sorted(DTYPES))}"
        )
    # symbolic dims (strings such as "batch" or "unk__16") and unknown ones are free
    dims = (
        tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
        if arg.shape is not None
        else (None,)
    )
    return TensorSpec(name=arg.name, dtype=dtype, shape=dims, batched=len(dims) > 0)


class OnnxBackend(Backend):
    """Serves an ONNX model with ONNX Runtime.

    Execution providers follow the device: on a GPU, CUDA, with the CPU for the operators
    it does not cover; on the CPU, the CPU provider alone. TensorRT is opt-in
    (``-O tensorrt=true``): it builds an engine per input shape, minutes for a ResNet50,
    so it gets one optimisation profile from batch 1 to the largest batch (the batcher is
    capped to it) and engine and timing caches on disk (:func:`trt_cache_dir`), so only
    the first start of a model pays for the build. Asked for and not active (this
    onnxruntime lacks it, or libnvinfer is missing, as in a package's image), it is a
    plain warning, not a silent fallback. The providers in use are read back from the
    session, so :meth:`describe` shows what runs, not what was asked for.

    Inputs go in with a plain ``session.run``: per-batch IOBinding allocated device
    buffers for every batch and moved the same bytes as a plain run, so it is opt-in
    (``-O iobinding=true``) until a GPU measurement says otherwise. A model exported with
    a fixed batch size is called with exactly that many rows (padded when fewer are
    queued), and the batcher is capped to it. ``-O cuda_graph=true`` does the same with
    one batch size of its own and replays a CUDA graph on persistent buffers (see
    :mod:`.cuda_graph`); the graph is captured during the load, on the model thread,
    which then owns it: a graph replays on the stream of the thread that captured it.
    """

    option_schema = (
        BackendOption(
            "intra_op_threads",
            int,
            help="threads inside one operator; 0 is ONNX Runtime's choice (default: the "
            "cores this process may use on the CPU, ONNX Runtime's choice on a GPU)",
            minimum=0,
        ),
        BackendOption(
            "inter_op_threads",
            int,
            1,
            "operators run in parallel (1: sequential execution, best for CNNs)",
            minimum=0,
        ),
        BackendOption(
            "graph_optimization_level",
            str,
            "all",
            "how much ONNX Runtime rewrites the graph",
            choices=tuple(OPTIMIZATION_LEVELS),
        ),
        BackendOption(
            "allow_spinning",
            bool,
            False,
            "let idle worker threads spin (off: the cores stay free for image decoding "
            "between batches)",
        ),
        BackendOption(
            "providers",
            str,
            help="comma-separated execution providers to use in order, instead of the "
            "device's default (e.g. CUDAExecutionProvider,CPUExecutionProvider)",
        ),
        BackendOption(
            "tensorrt",
            bool,
            False,
            "GPU: use the TensorRT provider first (off by default: engine builds take "
            "minutes and need libnvinfer); a plain warning when asked for and not active",
        ),
        BackendOption("trt_fp16", bool, False, "TensorRT: allow float16 kernels"),
        BackendOption(
            "trt_engine_cache",
            str,
            help="TensorRT: directory for the engine and timing caches (default: "
            "$SCOREPACK_CACHE_DIR/tensorrt, else ~/.cache/scorepack/tensorrt; off disables)",
        ),
        BackendOption(
            "trt_max_batch",
            int,
            help="TensorRT: the largest batch of the optimisation profile, which starts at "
            "1; the batcher is capped to it (default: the model's fixed batch, else "
            f"{BatchingConfig.max_batch_size})",
            minimum=1,
        ),
        BackendOption(
            "iobinding",
            bool,
            False,
            "bind inputs and outputs with IOBinding, new device buffers every batch (off "
            "by default: it moved the same bytes as a plain run)",
        ),
        BackendOption(
            "cuda_graph",
            bool,
            False,
            "GPU, CUDA provider only (TensorRT is then not used): capture the model once as "
            "a CUDA graph and replay it; every batch is padded to cuda_graph_batch rows on "
            "persistent device buffers. Needs fixed shapes except the batch",
        ),
        BackendOption(
            "cuda_graph_batch",
            int,
            help="the one batch size a CUDA graph runs at; the batcher is capped to it "
            f"(default: the model's fixed batch, else {BatchingConfig.max_batch_size}, "
            "the server's default --max-batch-size)",
            minimum=1,
        ),
    )

    @classmethod
    def available_devices(cls) -> list[str]:
        ort = _ort()
        providers = set(ort.get_available_providers())
        if not providers & {CUDA, TENSORRT}:
            return ["cpu"]
        return ["cpu"] + [f"cuda:{i}" for i in range(cuda_device_count())]

    @classmethod
    def runtime_info(cls) -> dict[str, str]:
        """The execution providers this onnxruntime build offers (``scorepack backends``)."""
        return {"providers": ", ".join(_ort().get_available_providers())}

    # --- loading ---------------------------------------------------------------------

    def load(self) -> None:
        ort = _ort()
        self.device = self.resolve_device()
        self._graph: FixedBinding | None = None
        self._cuda_graph = self.option("cuda_graph")
        if "cuda_graph_batch" in self.options and not self._cuda_graph:
            logger.warning("-O cuda_graph_batch applies with -O cuda_graph=true only; ignored")
        if self._cuda_graph and not self.device.is_cuda:
            raise ModelLoadError(
                f"-O cuda_graph=true replays CUDA graphs and needs a CUDA device, but this "
                f"model runs on {self.device}. Serve it with --device cuda (onnxruntime-gpu, "
                "'scorepack-onnx[gpu]'), or leave the option out."
            )
        session_options = self._session_options(ort)
        providers = self._providers(ort)
        if self.device.is_cuda and hasattr(ort, "preload_dlls"):
            # onnxruntime-gpu[cuda,cudnn] ships CUDA and cuDNN as pip packages; load them
            # before the session so the CUDA provider finds them without LD_LIBRARY_PATH
            try:
                ort.preload_dlls()
            except Exception as exc:  # the system libraries may still do
                logger.debug("onnxruntime.preload_dlls() failed: %s", exc)
        # ONNX's own reader and checker first: a truncated file fails with a reason
        check_model_file(self.path)
        with map_errors("onnxruntime", "load", ModelLoadError):
            self._session = ort.InferenceSession(
                str(self.path), sess_options=session_options, providers=providers
            )
        self._active = list(self._session.get_providers())
        self._check_device()
        self._warn_tensorrt(ort)
        self.signature = Signature(
            inputs=tuple(_tensor_spec(a) for a in self._session.get_inputs()),
            outputs=tuple(_tensor_spec(a) for a in self._session.get_outputs()),
            name="onnx",
        )
        self._output_names = self.signature.output_names
        self._fixed = {
            s.name: s.shape[0] for s in self.signature.inputs if s.batched and s.shape[0]
        }
        self._binding = bool(self.option("iobinding"))
        # where bound buffers live: the GPU's memory, or (-O iobinding=true on a CPU) the host's
        self._bind_device = ("cuda", self.device.index) if self.device.is_cuda else ("cpu", 0)
        self._ort = ort
        self._invalid = (ort.capi.onnxruntime_pybind11_state.InvalidArgument,)
        if self._cuda_graph:
            self._setup_graph(ort)

    def _setup_graph(self, ort: Any) -> None:
        """Persistent buffers of one batch size for ``-O cuda_graph=true``."""
        if not self._active or self._active[0] != CUDA:
            raise ModelLoadError(
                "-O cuda_graph=true needs the CUDA execution provider first, but the session "
                f"runs {', '.join(self._active)}"
            )
        fixed = set(self._fixed.values())
        if "cuda_graph_batch" in self.options:
            value = batch = self.options["cuda_graph_batch"]
            if fixed and fixed != {batch}:
                allowed = f"{fixed.pop()} (the model's fixed batch)" if fixed else "at least 1"
                raise ModelLoadError(f"option cuda_graph_batch must be {allowed}, not {value!r}")
        else:
            batch = fixed.pop() if fixed else BatchingConfig.max_batch_size
        shapes = graph_shapes(self.signature, batch)
        self._graph_batch = batch
        # pad every batch to the graph's size, as for a model exported with a fixed batch
        self._fixed = {s.name: batch for s in self.signature.inputs if s.batched and s.shape}
        with map_errors("onnxruntime", "CUDA graph setup", ModelLoadError):
            self._graph = FixedBinding(
                ort, self._session, self.signature, shapes, ("cuda", self.device.index)
            )
            # ONNX Runtime captures after a few ordinary runs: do them now, on this (the
            # model) thread, so the first live request replays instead of capturing
            self._graph.capture()

    @property
    def max_batch_size(self) -> int | None:
        """The CUDA graph's batch size with ``-O cuda_graph=true``, TensorRT's profile's
        largest batch when TensorRT runs, else the model's own."""
        if getattr(self, "_graph", None) is not None:
            return self._graph_batch
        if TENSORRT in getattr(self, "_active", ()):
            return self._trt_max_batch()
        return super().max_batch_size

    def _trt_max_batch(self) -> int:
        fixed = {s.shape[0] for s in self._model_inputs() if s.batched and s.shape and s.shape[0]}
        if "trt_max_batch" in self.options:
            value = self.options["trt_max_batch"]
            batch = int(value) if str(value).isdigit() else 0
            if batch < 1 or (fixed and fixed != {batch}):
                allowed = f"{min(fixed)} (the model's fixed batch)" if fixed else "at least 1"
                raise ModelLoadError(f"option trt_max_batch must be {allowed}, not {value!r}")
            return batch
        return min(fixed) if fixed else BatchingConfig.max_batch_size

    def _model_inputs(self) -> tuple[TensorSpec, ...]:
        """The model's inputs, before the real session exists (TensorRT's profile needs
        them to make it): read through a CPU session without optimisations, once."""
        if self._signature is not None:
            return self.signature.inputs
        if getattr(self, "_probed", None) is None:
            ort = _ort()
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            options.log_severity_level = 3
            with map_errors("onnxruntime", "load", ModelLoadError):
                probe = ort.InferenceSession(str(self.path), sess_options=options, providers=[CPU])
            self._probed = tuple(_tensor_spec(a) for a in probe.get_inputs())
        return self._probed

    def trt_profile(self) -> dict[str, str]:
        """TensorRT's optimisation profile: batch 1 to the largest batch, other dimensions
        as the model fixes them (``{}`` when one is free: TensorRT then profiles alone)."""
        batch = self._trt_max_batch()
        low, high = [], []
        for spec in self._model_inputs():
            dims = spec.shape[1:] if spec.batched else spec.shape
            if any(d is None for d in dims) or spec.dtype == "object":
                logger.warning(
                    "TensorRT: input %r is %s, free besides the batch: no explicit "
                    "optimisation profile, so TensorRT may build engines for new shapes",
                    spec.name,
                    spec.shape_text(),
                )
                return {}
            rest = [int(d) for d in dims if d is not None]
            first, last = ([1, *rest], [batch, *rest]) if spec.batched else (rest, rest)
            low.append(f"{spec.name}:{'x'.join(map(str, first))}")
            high.append(f"{spec.name}:{'x'.join(map(str, last))}")
        return {
            "trt_profile_min_shapes": ",".join(low),
            "trt_profile_opt_shapes": ",".join(high),
            "trt_profile_max_shapes": ",".join(high),
        }

    def _session_options(self, ort: Any) -> Any:
        options = ort.SessionOptions()
        default_intra = 0 if self.device.is_cuda else cpu_count()
        intra = self.option("intra_op_threads")
        self._intra = default_intra if intra is None else intra
        self._inter = self.option("inter_op_threads")
        options.intra_op_num_threads = self._intra
        options.inter_op_num_threads = self._inter
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL if self._inter > 1 else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        level = self._level = self.option("graph_optimization_level")
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[level]
        )
        spin = "1" if self.option("allow_spinning") else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        # warnings about unused initialisers and the like are noise in a server log
        options.log_severity_level = 3
        return options

    def _providers(self, ort: Any) -> list[Any]:
        available = list(ort.get_available_providers())
        if "providers" in self.options:
            wanted = [p.strip() for p in self.options["providers"].split(",") if p.strip()]
            missing = [p for p in wanted if p not in available]
            if missing or not wanted:
                raise ModelLoadError(
                    f"execution provider(s) {', '.join(missing) or '(none given)'} are not in "
                    f"this onnxruntime; it has: {', '.join(available)}"
                )
            return [self._with_options(p) for p in wanted]
        if not self.device.is_cuda:
            return [CPU]
        chosen: list[Any] = []
        self._want_trt = bool(self.option("tensorrt"))
        # CUDA graphs are the CUDA provider's here; TensorRT would take the nodes from it
        if self._want_trt and self._cuda_graph:
            raise ModelLoadError(
                "-O tensorrt=true and -O cuda_graph=true do not go together: CUDA graphs "
                "are the CUDA provider's; choose one"
            )
        if self._want_trt and TENSORRT in available:
            chosen.append(self._with_options(TENSORRT))
        if CUDA in available:
            chosen.append(self._with_options(CUDA))
        chosen.append(CPU)
        return chosen

    def _with_options(self, provider: str) -> Any:
        index = self.device.index if self.device.is_cuda else 0
        if provider == CUDA:
            if self._cuda_graph:
                return (CUDA, {"device_id": index, "enable_cuda_graph": True})
            return (CUDA, {"device_id": index})
        if provider == TENSORRT:
            options: dict[str, Any] = {
                "device_id": index,
                "trt_fp16_enable": self.option("trt_fp16"),
            }
            cache = trt_cache_dir(self.option("trt_engine_cache"))
            if cache is not None:
                # an engine build takes minutes: keep engines and kernel timings on disk,
                # so a restart (or the readiness probe's patience) does not pay it again
                cache.mkdir(parents=True, exist_ok=True)
                options.update(
                    trt_engine_cache_enable=True,
                    trt_engine_cache_path=str(cache),
                    trt_timing_cache_enable=True,
                    trt_timing_cache_path=str(cache),
                )
            self._trt_cache = cache
            options.update(self.trt_profile())
            return (TENSORRT, options)
        return provider

    def _warn_tensorrt(self, ort: Any) -> None:
        """Say plainly when TensorRT was asked for and does not run."""
        if not getattr(self, "_want_trt", False) and not (
            self.option("tensorrt") and not self.device.is_cuda
        ):
            return
        if TENSORRT in self._active:
            return
        if not self.device.is_cuda:
            why = f"the model runs on {self.device}; TensorRT needs a CUDA device"
        elif TENSORRT not in ort.get_available_providers():
            why = "this onnxruntime has no TensorRT provider (onnxruntime-gpu has one)"
        else:
            why = (
                "its provider did not start (is libnvinfer installed? scorepack's GPU "
                "packages do not install TensorRT)"
            )
        logger.warning(
            "TensorRT was asked for (-O tensorrt=true) but is not active: %s. Running on %s.",
            why,
            ", ".join(self._active),
        )

    def _check_device(self) -> None:
        # ONNX Runtime falls back to the CPU when the CUDA provider cannot start (no
        # cuDNN, driver too old); asked for CUDA by name, that is an error, not a surprise
        if not self.device.is_cuda or self._active[0] in (CUDA, TENSORRT):
            return
        message = (
            f"{self.device} was requested but ONNX Runtime could not start a GPU provider "
            f"(session providers: {', '.join(self._active)}). Check that onnxruntime-gpu and "
            "its CUDA/cuDNN libraries are installed ('scorepack-onnx[gpu]'), or use --device cpu."
        )
        if self.requested_device.kind == "auto":
            logger.warning("%s Serving on the CPU.", message)
            self.device = Device("cpu")
            return
        raise DeviceUnavailableError(message)

    # --- scoring ---------------------------------------------------------------------

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = next(iter(inputs.values())).shape[0]
        feed, padded = self._pad(inputs, rows)
        with map_errors("onnxruntime", bad_input=self._invalid):
            if self._graph is not None:
                results = self._graph.run(feed)
            elif self._binding:
                results = self._run_bound(feed)
            else:
                results = self._session.run(self._output_names, feed)
        outputs = dict(zip(self._output_names, results, strict=True))
        if padded:
            outputs = {name: value[:rows] for name, value in outputs.items()}
        return outputs

    def _pad(self, inputs: dict[str, np.ndarray], rows: int) -> tuple[dict[str, np.ndarray], bool]:
        """Fill a short batch up to a fixed batch size with zero rows."""
        padded = False
        feed = dict(inputs)
        for name, size in self._fixed.items():
            value = feed.get(name)
            if value is not None and value.shape[0] < size:
                filler = np.zeros((size - value.shape[0], *value.shape[1:]), dtype=value.dtype)
                feed[name] = np.concatenate([value, filler])
                padded = True
        return feed, padded

    def _run_bound(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One batch through IOBinding: one copy to the GPU, one copy back."""
        ort = self._ort
        kind, index = self._bind_device
        binding = self._session.io_binding()
        keep = []  # the device buffers must outlive the run
        for name, value in feed.items():
            if value.dtype == object:  # strings live on the host
                binding.bind_cpu_input(name, value)
                continue
            device_value = ort.OrtValue.ortvalue_from_numpy(
                np.ascontiguousarray(value), kind, index
            )
            keep.append(device_value)
            binding.bind_ortvalue_input(name, device_value)
        for spec in self.signature.outputs:
            if spec.dtype == "object":
                binding.bind_output(spec.name)
            else:
                binding.bind_output(spec.name, kind, index)
        self._session.run_with_iobinding(binding)
        results: list[np.ndarray] = binding.copy_outputs_to_cpu()
        del keep
        return results

    def unload(self) -> None:
        self._graph = None
        self._session = None

    def describe(self) -> dict[str, str]:
        info = super().describe()
        active = getattr(self, "_active", [])
        info["provider"] = active[0] if active else ""
        info["providers"] = ", ".join(active)
        if hasattr(self, "_level"):
            info["optimization"] = self._level
            intra = self._intra or "auto"
            info["threads"] = f"intra_op={intra}, inter_op={self._inter}"
        info["iobinding"] = "on" if getattr(self, "_binding", False) else "off"
        if TENSORRT in getattr(self, "_active", ()):
            cache = getattr(self, "_trt_cache", None)
            info["tensorrt"] = f"profile 1..{self._trt_max_batch()}, cache {cache or 'off'}"
        if getattr(self, "_graph", None) is not None:
            info["cuda_graph"] = f"on (batch {self.max_batch_size})"
        return info


def trt_cache_dir(value: Any) -> Path | None:
    """Where TensorRT engines and timings are cached: ``value``, else
    ``$SCOREPACK_CACHE_DIR/tensorrt``, else ``~/.cache/scorepack/tensorrt``; ``off`` → None."""
    if value is not None and str(value).strip().lower() in ("off", "false", "0", "no", ""):
        return None
    if value is not None:
        return Path(str(value)).expanduser()
    root = os.environ.get("SCOREPACK_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "scorepack"
    return base / "tensorrt"
