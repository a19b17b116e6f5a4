"""PyTorch: TorchScript archives and torch.export programs, told apart by content."""

from __future__ import annotations

import gc
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scorepack import Backend, BackendOption, Signature, TensorSpec, import_framework, map_errors
from scorepack.detect import is_torch_export, is_torch_pickle, is_torchscript
from scorepack.errors import ModelLoadError, PredictError
from scorepack.preprocess import ImagePlan

from .gpu_images import ImagePipeline, load_decoder
from .integrity import check_archive
from .metadata import (
    EXTRA_FILE,
    merge_inputs,
    parse_dtype_option,
    parse_shape_option,
    read_signature_file,
)
from .precision import half_probe, to_half
from .staging import PinnedStaging

logger = logging.getLogger("scorepack.pytorch")

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
INSTALL = (
    f"pip install 'scorepack-pytorch[cpu]' --extra-index-url {CPU_INDEX} "
    "(GPU: pip install 'scorepack-pytorch[gpu]': the package index's torch is the CUDA 13 "
    "build; for CUDA 12 add --extra-index-url https://download.pytorch.org/whl/cu126)"
)

TORCHSCRIPT = "torchscript"
EXPORT = "torch.export"

#: what a torch.save checkpoint gets instead of a model: how to export one
EXPORT_ADVICE = """\
{path} is a torch.save checkpoint (a state_dict or a pickled nn.Module). It holds weights,
not a program: serving it would need your model's Python code. Export the model once, then
serve the exported file:

    model = MyModel(); model.load_state_dict(torch.load("model.pt")); model.eval()
    example = torch.randn(2, 3, 224, 224)   # one batch of real input shape, batch >= 2

    # torch.export (recommended: keeps input names, shapes and a dynamic batch)
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (example,), dynamic_shapes=({{0: batch}},))
    torch.export.save(program, "model.pt2")          # scorepack serve model.pt2

    # or TorchScript (torch.jit.script(model) for models with control flow)
    torch.jit.save(torch.jit.trace(model, example, strict=False), "model.ts")
    # scorepack serve model.ts -O input_shape=3x224x224"""

#: documented names for what an exported model does not name
POSITIONAL_INPUT = "input_{}"
POSITIONAL_OUTPUT = "output_{}"


def _torch() -> Any:
    return import_framework("torch", "pytorch", INSTALL)


def numpy_dtype(dtype: Any) -> str:
    """``torch.float32`` → ``"float32"``; refuses dtypes NumPy has no name for."""
    name = str(dtype).removeprefix("torch.")
    try:
        return np.dtype(name).name
    except TypeError:
        raise ModelLoadError(
            f"the model uses {name}, which scorepack cannot carry in NumPy arrays; export the "
            "model with float32 (or float16) inputs and outputs"
        ) from None


def _positional(names: Sequence[str]) -> list[str]:
    """The argument names, or ``input_0, input_1, …`` when they are not usable as names."""
    clean = [n.split(".")[0] for n in names]
    if all(n.isidentifier() for n in clean) and len(set(clean)) == len(clean):
        return clean
    return [POSITIONAL_INPUT.format(i) for i in range(len(names))]


def _dims(shape: Sequence[Any]) -> tuple[int | None, ...]:
    # symbolic sizes (torch.export.Dim) are free dimensions
    return tuple(int(d) if type(d) is int else None for d in shape)


class TorchBackend(Backend):
    """Serves a TorchScript archive or a torch.export program (``.pt2``).

    The kind is read from the file's content, never its name. A ``torch.save``
    checkpoint (state_dict or pickled module) is refused with the commands that export
    it. Models run under ``torch.inference_mode`` on the chosen device; on a GPU,
    ``-O half=true`` runs them in float16 while clients keep sending float32, inputs are
    staged through page-locked buffers (``-O pinned=false`` opts out), and
    ``-O gpu_decode=true`` decodes JPEGs with nvJPEG and preprocesses them on the GPU.

    Input names come from the model: the ``forward`` argument names of a TorchScript
    archive (or its ``scorepack.json``), the placeholders of a torch.export program.
    Where a model gives none, inputs are ``input_0, input_1, …``. Outputs returned as
    a dict keep its keys; a tensor, tuple or list gives ``output_0, output_1, …``.
    """

    option_schema = (
        BackendOption(
            "input_shape",
            str,
            help="TorchScript: the shape of one input row without the batch dimension, e.g. "
            "3x224x224, or image:3x224x224,extra:4 for several inputs (overrides the "
            "archive's scorepack.json)",
        ),
        BackendOption(
            "input_dtype",
            str,
            help="TorchScript: the input dtype, e.g. float32 (the default), or "
            "image:float32,ids:int64",
        ),
        BackendOption(
            "half",
            bool,
            False,
            "GPU: run the model in float16; clients still send and get float32",
        ),
        BackendOption(
            "gpu_decode",
            bool,
            False,
            "GPU: decode JPEGs with nvJPEG (torchvision) and resize and normalise them on the "
            "GPU, batch by batch; PNGs are still decoded on the CPU. Needs a CUDA device and "
            "torchvision",
        ),
        BackendOption(
            "pinned",
            bool,
            True,
            "GPU: stage inputs in page-locked host buffers, reused batch to batch, and copy "
            "them to the device asynchronously",
        ),
        BackendOption(
            "intra_op_threads",
            int,
            help="CPU threads inside one operator (torch.set_num_threads; default: "
            "PyTorch's choice)",
            minimum=1,
        ),
        BackendOption(
            "optimize",
            bool,
            True,
            "TorchScript: freeze the module and optimise it for inference (folds batch norm "
            "into convolutions, prepacks weights for oneDNN/cuDNN)",
        ),
    )

    @classmethod
    def available_devices(cls) -> list[str]:
        torch = _torch()
        if not torch.cuda.is_available():
            return ["cpu"]
        return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]

    # --- loading ---------------------------------------------------------------------

    def model_kind(self) -> str:
        """``torchscript`` or ``torch.export``, from the content; refuses checkpoints."""
        if is_torchscript(self.path):
            return TORCHSCRIPT
        if is_torch_export(self.path):
            return EXPORT
        if is_torch_pickle(self.path):
            raise ModelLoadError(EXPORT_ADVICE.format(path=self.path))
        raise ModelLoadError(
            f"{self.path} is neither a TorchScript archive (torch.jit.save) nor a "
            "torch.export program (torch.export.save)"
        )

    def load(self) -> None:
        # every member's CRC-32, which PyTorch's reader skips: a damaged weight fails here
        check_archive(self.path)
        self.kind = self.model_kind()  # before the import: a refusal needs no torch
        torch = _torch()
        self.device = self.resolve_device()
        if "intra_op_threads" in self.options:
            # process-wide in PyTorch: the one model this process serves owns it
            torch.set_num_threads(self.options["intra_op_threads"])
        self._torch_device = (
            torch.device("cuda", self.device.index) if self.device.is_cuda else torch.device("cpu")
        )
        self._half = self._wants_half()
        self._staging = self._pinned_staging(torch)
        self._pipeline: ImagePipeline | None = None
        self._decoder = self._gpu_decoder(torch)
        if self.kind == TORCHSCRIPT:
            inputs, outputs = self._load_torchscript(torch)
        else:
            if {"input_shape", "input_dtype"} & set(self.options):
                raise ModelLoadError(
                    "-O input_shape and -O input_dtype apply to TorchScript archives only; "
                    f"{self.path} is a torch.export program and records its own shapes"
                )
            inputs, outputs = self._load_export(torch)
        if self._half and self.kind != TORCHSCRIPT:
            # .half() misses the constants torch.export lifts: every floating tensor goes
            cast = to_half(torch, self._module)
            if cast:
                logger.info("-O half=true: cast %d lifted constant(s) too", len(cast))
        self._torch = torch
        if outputs is None:
            outputs = self._dry_run(inputs)
        elif self._half:
            # a model that cannot run in float16 fails here, at load, not on a request
            self.signature = Signature(inputs=inputs, outputs=outputs, name=self.kind)
            with map_errors("pytorch", "float16 trial run", ModelLoadError):
                half_probe(lambda arrays: self._call(arrays, [s.name for s in inputs]), inputs)
        self.signature = Signature(inputs=inputs, outputs=outputs, name=self.kind)
        self._fixed = {s.name: s.shape[0] for s in inputs if s.batched and s.shape[0]}

    def _wants_half(self) -> bool:
        half: bool = self.option("half")
        if half and not self.device.is_cuda:
            logger.warning(
                "-O half=true applies on a GPU only; running in float32 on %s", self.device
            )
            return False
        return half

    def _pinned_staging(self, torch: Any) -> PinnedStaging | None:
        pinned = self.option("pinned")
        if not self.device.is_cuda:
            return None  # on the CPU the model reads the NumPy memory itself: nothing to copy
        return PinnedStaging(torch, self._torch_device) if pinned else None

    def _gpu_decoder(self, torch: Any) -> tuple[Any, Any] | None:
        """torchvision's nvJPEG decoder for ``-O gpu_decode=true``, checked at load."""
        if not self.option("gpu_decode"):
            return None
        if not self.device.is_cuda:
            raise ModelLoadError(
                f"-O gpu_decode=true decodes JPEGs with nvJPEG and needs a CUDA device, but "
                f"this model runs on {self.device}. Serve it with --device cuda on a machine "
                "with a GPU and CUDA builds of torch and torchvision, or leave the option "
                "out: JPEGs are then decoded on the CPU."
            )
        return load_decoder(torch)

    def accepts_encoded_images(self, plan: ImagePlan) -> bool:
        """With ``-O gpu_decode=true``: JPEGs come as bytes and are decoded by nvJPEG.

        Builds the GPU pipeline for ``plan`` and runs one JPEG through it, so that a GPU
        decoder that cannot start fails the load, not the first request.
        """
        if self._decoder is None or len(self.signature.inputs) != 1:
            return False
        decode, read_modes = self._decoder
        pipeline = ImagePipeline(self._torch, plan, self._torch_device, decode, read_modes)
        try:
            with self._torch.inference_mode():
                pipeline.warm_up()
        except Exception as exc:  # nvJPEG or CUDA missing pieces: say so at load
            raise ModelLoadError(
                f"-O gpu_decode=true: GPU JPEG decoding does not work here: {exc}"
            ) from exc
        self._pipeline = pipeline
        return True

    def _load_torchscript(
        self, torch: Any
    ) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...] | None]:
        extra = {EXTRA_FILE: ""}
        with map_errors("pytorch", "load", ModelLoadError), warnings.catch_warnings():
            # torch >= 2.10 marks TorchScript deprecated on every load; say it once, plainly
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(
                str(self.path), map_location=self._torch_device, _extra_files=extra
            )
        logger.info(
            "%s is TorchScript, which PyTorch deprecates; torch.export (.pt2) is its successor "
            "and scorepack serves both",
            self.path.name,
        )
        module.eval()
        if self._half:
            module.half()  # before freezing: frozen weights are constants .half() cannot reach
        self._module = self._optimized(torch, module)
        self._in_spec = None
        arguments = [a.name for a in module.forward.schema.arguments][1:]  # drop self
        stored_inputs, stored_outputs = read_signature_file(extra[EXTRA_FILE])
        if stored_inputs and len(stored_inputs) != len(arguments):
            raise ModelLoadError(
                f"{EXTRA_FILE} lists {len(stored_inputs)} inputs but forward() takes "
                f"{len(arguments)}"
            )
        names = [s.name for s in stored_inputs] if stored_inputs else _positional(arguments)
        shapes = (
            parse_shape_option(self.options["input_shape"], names)
            if "input_shape" in self.options
            else {}
        )
        dtypes = (
            parse_dtype_option(self.options["input_dtype"], names)
            if "input_dtype" in self.options
            else {}
        )
        inputs = merge_inputs(names, stored_inputs, shapes, dtypes)
        if inputs is None:
            raise ModelLoadError(
                f"{self.path} is a TorchScript archive, which does not record input shapes. "
                f"Give them when serving: -O input_shape=3x224x224 (one input) or "
                f"-O input_shape={','.join(n + ':...' for n in names)}; or store them in the "
                f"archive with torch.jit.save(..., _extra_files=scorepack_pytorch."
                f"signature_files([...])). Or export with torch.export (.pt2), which keeps them."
            )
        return inputs, stored_outputs or None

    def _optimized(self, torch: Any, module: Any) -> Any:
        """The TorchScript module frozen and optimised for inference, when that works.

        Measured on ResNet50 on two CPU cores: 28 → 35 images/s at batch 1 and 12 → 33 at
        batch 32 (benchmarks/RESULTS.md). Scores move by float rounding only.
        """
        if not self.option("optimize"):
            return module
        try:
            with warnings.catch_warnings():
                # deprecated with the rest of TorchScript in torch >= 2.10, still the way to
                # optimise a TorchScript archive (torch.compile takes nn.Modules and .pt2)
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.optimize_for_inference(torch.jit.freeze(module))
        except Exception as exc:  # some scripted modules cannot be frozen; serve them as they are
            logger.warning(
                "could not optimise %s for inference (%s: %s); serving it unoptimised",
                self.path.name,
                type(exc).__name__,
                exc,
            )
            return module

    def _load_export(self, torch: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        with map_errors("pytorch", "load", ModelLoadError):
            program = torch.export.load(str(self.path))
            if self.device.is_cuda:
                from torch.export.passes import move_to_device_pass

                # moves weights and the devices baked into the graph (torch.ones(device=…))
                program = move_to_device_pass(program, self._torch_device)
            self._module = program.module()
        graph_signature = program.graph_signature
        user_inputs = set(graph_signature.user_inputs)
        placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
        inputs = []
        for node in placeholders:
            if node.name not in user_inputs:
                continue
            value: Any = node.meta.get("val")
            if not hasattr(value, "dtype"):
                raise ModelLoadError(
                    f"input {node.name!r} of {self.path} is not a tensor; scorepack feeds tensors"
                )
            dims = _dims(value.shape)
            inputs.append(
                TensorSpec(node.name, numpy_dtype(value.dtype), dims, batched=len(dims) > 0)
            )
        self._in_spec = program.call_spec.in_spec
        output_node = next(n for n in program.graph.nodes if n.op == "output")
        user_outputs = [
            arg
            for arg, spec in zip(output_node.args[0], graph_signature.output_specs, strict=True)
            if spec.kind.name == "USER_OUTPUT"
        ]
        names = _output_names(program.call_spec.out_spec, len(user_outputs))
        outputs = []
        for name, arg in zip(names, user_outputs, strict=True):
            value = getattr(arg, "meta", {}).get("val")
            if not hasattr(value, "dtype"):
                raise ModelLoadError(f"output {name!r} of {self.path} is not a tensor")
            dims = _dims(value.shape)
            outputs.append(TensorSpec(name, numpy_dtype(value.dtype), dims, batched=len(dims) > 0))
        return tuple(inputs), tuple(outputs)

    def _dry_run(self, inputs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
        """Find a TorchScript model's outputs by running it once on zeros."""
        free = [s.name for s in inputs if None in s.item_shape]
        if free:
            raise ModelLoadError(
                f"input(s) {', '.join(free)} have dimensions of any size, so the outputs cannot "
                f"be found by a trial run; list the outputs in the archive's {EXTRA_FILE} "
                "(scorepack_pytorch.signature_files(inputs, outputs))"
            )
        zeros = {}
        for spec in inputs:
            # no free dimensions are left here: every dimension but the batch is an int
            item = [int(d or 1) for d in spec.item_shape]
            shape = [spec.shape[0] or 1, *item] if spec.batched else item
            zeros[spec.name] = np.zeros(shape, dtype=spec.dtype)
        with map_errors("pytorch", "trial run", ModelLoadError):
            result = self._call(zeros, [s.name for s in inputs])
        outputs = []
        for name, tensor in result:
            dims = (None, *tensor.shape[1:]) if tensor.dim() > 0 else ()
            dtype = (
                "float32"
                if self._half and tensor.is_floating_point()
                else numpy_dtype(tensor.dtype)
            )
            outputs.append(TensorSpec(name, dtype, tuple(dims), batched=tensor.dim() > 0))
        return tuple(outputs)

    # --- scoring ---------------------------------------------------------------------

    def _call(
        self, arrays: Mapping[str, np.ndarray], names: Sequence[str] | None
    ) -> list[tuple[str, Any]]:
        """Run the module on named arrays; return (output name, tensor) pairs."""
        torch = self._torch
        tensors = []
        with torch.inference_mode():
            for name in self.signature.input_names if names is None else names:
                tensor = self._tensor(name, arrays[name])
                if self._half and tensor.is_floating_point():
                    tensor = tensor.half()
                tensors.append(tensor)
            if self._in_spec is not None:
                from torch.utils._pytree import tree_unflatten

                args, kwargs = tree_unflatten(tensors, self._in_spec)
                result = self._module(*args, **kwargs)
            else:
                result = self._module(*tensors)
        return self._name_outputs(result)

    def _tensor(self, name: str, array: np.ndarray) -> Any:
        """One input on the model's device: staged through pinned memory on a GPU, or
        decoded there from JPEG bytes (``accepts_encoded_images``)."""
        torch = self._torch
        if array.dtype == object:
            if self._pipeline is None:
                raise PredictError(f"input {name!r} holds objects, not numbers")
            tensor = self._pipeline(list(array))
            size = self._fixed.get(name, 0)
            if tensor.shape[0] < size:  # a fixed-batch model: zero rows, as _pad does
                filler = tensor.new_zeros((size - tensor.shape[0], *tensor.shape[1:]))
                tensor = torch.cat([tensor, filler])
            return tensor
        if self._staging is not None and array.ndim > 0:
            return self._staging.to_device(name, array)
        # the batcher's arrays may be read-only views; torch wants writable memory
        return torch.from_numpy(np.require(array, requirements=["C", "W"])).to(self._torch_device)

    def _name_outputs(self, result: Any) -> list[tuple[str, Any]]:
        from torch.utils._pytree import tree_flatten

        torch = self._torch
        if isinstance(result, Mapping):
            pairs = [(str(k), v) for k, v in result.items()]
        else:
            # nested tuples and lists flatten in the order torch.export numbers them
            leaves = tree_flatten(result)[0]
            known = self._signature.output_names if self._signature is not None else []
            names = (
                known
                if len(known) == len(leaves)
                else [POSITIONAL_OUTPUT.format(i) for i in range(len(leaves))]
            )
            pairs = list(zip(names, leaves, strict=True))
        for name, value in pairs:
            if not isinstance(value, torch.Tensor):
                raise PredictError(
                    f"output {name!r} is a {type(value).__name__}, not a tensor; return a "
                    "tensor, a tuple of tensors or a dict of tensors from forward()"
                )
        return pairs

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = next(iter(inputs.values())).shape[0]
        feed, padded = self._pad(inputs, rows)
        with map_errors("pytorch"):
            pairs = self._call(feed, None)
            outputs = {}
            for name, tensor in pairs:
                if self._half and tensor.is_floating_point():
                    tensor = tensor.float()
                # a blocking copy: it waits for the stream, so the inputs' pinned staging
                # buffers are free again when predict returns
                value = tensor.detach().cpu().numpy()
                outputs[name] = value[:rows] if padded else value
        return outputs

    def _pad(self, inputs: dict[str, np.ndarray], rows: int) -> tuple[dict[str, np.ndarray], bool]:
        """Fill a short batch up to an exported fixed batch size with zero rows."""
        padded = False
        feed = dict(inputs)
        for name, size in self._fixed.items():
            value = feed[name]
            if value.shape[0] < size and value.dtype != object:  # JPEGs: padded once decoded
                filler = np.zeros((size - value.shape[0], *value.shape[1:]), dtype=value.dtype)
                feed[name] = np.concatenate([value, filler])
                padded = True
        return feed, padded

    def unload(self) -> None:
        self._module = None
        self._staging = None
        self._pipeline = None
        # a torch.export program's GraphModule refers to itself through its graph, so only
        # the collector frees its weights; collect before empty_cache, which hands the
        # caching allocator's free blocks back to the driver and cannot reach live ones
        gc.collect()
        if self.device.is_cuda and hasattr(self, "_torch"):
            self._torch.cuda.empty_cache()

    def describe(self) -> dict[str, str]:
        info = super().describe()
        if hasattr(self, "kind"):
            info["format"] = self.kind
            info["precision"] = "float16" if self._half else "model's own"
        if hasattr(self, "_decoder") and self.device.is_cuda:
            info["pinned"] = "on" if self.option("pinned") else "off"
            info["decode"] = "nvjpeg (GPU)" if self._pipeline is not None else "cpu"
        if hasattr(self, "_torch") and not self.device.is_cuda:
            info["threads"] = str(self._torch.get_num_threads())
        return info


def _output_names(out_spec: Any, count: int) -> list[str]:
    """A torch.export program's output names, matching :meth:`TorchBackend._name_outputs`."""
    children = (
        out_spec.children()
        if callable(getattr(out_spec, "children", None))
        else getattr(out_spec, "children_specs", [])
    )
    if (
        getattr(out_spec, "type", None) is dict
        and len(children) == count
        and all(c.is_leaf() for c in children)
    ):
        return [str(k) for k in out_spec.context]
    return [POSITIONAL_OUTPUT.format(i) for i in range(count)]
