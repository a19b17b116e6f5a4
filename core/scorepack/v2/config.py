"""The model configuration extension: a served model as Triton's ``ModelConfig``.

Triton's tools ask for a model's configuration before anything else (``perf_analyzer``
reads ``max_batch_size``, the inputs and the outputs from it and stops without it). One
answer for both adapters: V2 REST returns :func:`model_config` as it is (the JSON form of
``inference.ModelConfig`` from ``model_config.proto``, field names as in the proto, enums
by name, 64-bit integers as numbers, as Triton prints it); gRPC parses the same mapping
into the message (``ModelConfigResponse.config``).

Derived from what the model and its settings say, never written by hand:

* ``platform``: what :func:`~.metadata.platform_of` says (as in model metadata), and
  ``backend`` Triton's name for the same framework (``onnxruntime``, ``tensorflow``,
  ``pytorch``), or the plugin's module for a plugin.
* ``max_batch_size``: the most rows one model call takes (the batcher's limit: the
  ``max_batch_size`` setting, capped by a batch dimension the model fixes). It is 0, as
  Triton writes a model that does not batch, when that limit is 1 or an input has no
  batch dimension; the ``dims`` then give each tensor's whole shape, the first dimension
  included (-1 where any size goes: scorepack still takes a request of several rows there,
  and runs it one row a call).
* ``input``/``output``: the signature that model metadata gives, ``data_type`` as
  ``TYPE_FP32``... (``TYPE_STRING`` for BYTES), ``dims`` without the batch dimension when
  ``max_batch_size`` > 0 (Triton's rule), -1 for a dimension of any size; an image input
  says its layout (``FORMAT_NHWC``/``FORMAT_NCHW``).
* ``dynamic_batching`` (models that batch): ``preferred_batch_size`` is the batch size the
  batcher gathers to when it is below the limit (set, measured at load or tuned under load:
  ``preferred_batch_size``), ``max_queue_delay_microseconds`` is ``max_delay_ms``, and
  ``default_queue_policy`` has ``max_queue_size`` and, as ``default_timeout_microseconds``,
  ``timeout_ms`` (scorepack's bounds a request's whole wait, queue and model call, and
  answers 504 when it passes: ``timeout_action`` REJECT).
* ``version_policy``: every version in the repository is served (``all``); a model without
  versions has one (``latest``, 1).
* ``instance_group``: one model thread per version, on the CPU or one GPU.
"""

from __future__ import annotations

from typing import Any

from ..repository import READY, Repository
from ..scorer import Scorer
from ..signature import TensorSpec
from .datatypes import datatype_of
from .metadata import not_ready, platform_of

__all__ = ["config_max_batch_size", "model_config", "triton_data_type"]

#: Triton's backend names for the built-in plugins (``platform`` comes from metadata)
_BACKENDS = {
    "scorepack_tensorflow": "tensorflow",
    "scorepack_onnx": "onnxruntime",
    "scorepack_pytorch": "pytorch",
}


def triton_data_type(spec: TensorSpec) -> str:
    """``TYPE_FP32``... for a tensor; V2's BYTES is Triton's ``TYPE_STRING``."""
    datatype = datatype_of(spec.dtype)
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def config_max_batch_size(scorer: Scorer) -> int:
    """``max_batch_size`` as Triton means it: the most rows one model call takes, or 0
    for a model that does not batch (see the module's docstring)."""
    rows = scorer.batcher.max_rows
    specs = (*scorer.signature.inputs, *scorer.signature.outputs)
    if rows <= 1 or not all(s.batched and s.shape for s in specs):
        return 0
    return rows


def model_config(repository: Repository, name: str, version: str | None = None) -> dict[str, Any]:
    """The configuration of model ``name`` (the version asked for, or the one requests
    go to) as Triton's ``ModelConfig`` in JSON form.

    Raises :class:`~scorepack.errors.ModelNotFoundError` for an unknown name or version
    and :class:`~scorepack.errors.NotReadyError` for a version that is not ready (the
    signature is only known once the model is loaded).
    """
    state = repository.state(name, version)
    scorer = repository.find(name, state.version)
    if scorer is None or state.state != READY:
        raise not_ready(state)
    max_batch_size = config_max_batch_size(scorer)
    signature = scorer.signature
    plan = scorer.image_plan
    inputs = []
    for spec in signature.inputs:
        entry = _tensor(spec, max_batch_size)
        entry["format"] = "FORMAT_NONE"
        if plan is not None and spec.name == plan.input and len(spec.item_shape) == 3:
            entry["format"] = f"FORMAT_{plan.layout}"
        entry.update(is_shape_tensor=False, allow_ragged_batch=False, optional=False)
        inputs.append(entry)
    outputs = []
    for spec in signature.outputs:
        entry = _tensor(spec, max_batch_size)
        entry.update(label_filename="", is_shape_tensor=False)
        outputs.append(entry)
    module = type(scorer.backend).__module__.split(".")[0]
    device = scorer.backend.device
    versioned = any(v is not None for v in repository.versions(name))
    config: dict[str, Any] = {
        "name": name,
        "platform": platform_of(scorer),
        "backend": _BACKENDS.get(module, module),
        "version_policy": {"all": {}} if versioned else {"latest": {"num_versions": 1}},
        "max_batch_size": max_batch_size,
        "input": inputs,
        "output": outputs,
        "instance_group": [
            {
                "name": f"{name}_0",
                "kind": "KIND_GPU" if device.is_cuda else "KIND_CPU",
                "count": 1,
                "gpus": [device.index] if device.is_cuda else [],
            }
        ],
    }
    if max_batch_size > 0:
        batching = scorer.config.batching
        preferred = scorer.batcher.batch_rows
        config["dynamic_batching"] = {
            "preferred_batch_size": [preferred] if preferred < max_batch_size else [],
            "max_queue_delay_microseconds": round(batching.max_delay_ms * 1000),
            "preserve_ordering": False,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": round(batching.timeout_ms * 1000),
                "allow_timeout_override": False,
                "max_queue_size": batching.max_queue_size,
            },
        }
    return config


def _tensor(spec: TensorSpec, max_batch_size: int) -> dict[str, Any]:
    shape = spec.item_shape if max_batch_size > 0 else spec.shape
    return {
        "name": spec.name,
        "data_type": triton_data_type(spec),
        "dims": [-1 if d is None else d for d in shape],
    }
