"""Float16 for ``-O half=true``: every floating tensor a model holds, not just its weights.

``module.half()`` casts parameters and buffers. A ``torch.export`` program's
``.module()`` also holds *lifted constants* — tensors the traced code made or captured
(``x @ self.table`` with ``table`` a plain attribute, ``torch.tensor([...])`` in
``forward``) — as plain attributes, which ``.half()`` does not reach: the program then
mixes float16 and float32 and fails on every batch. :func:`to_half` casts those too.
:func:`half_probe` runs the cast model once at load, so a model that still cannot run in
float16 fails its load, not its first request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["half_probe", "to_half"]


def to_half(torch: Any, module: Any) -> list[str]:
    """Cast ``module``'s parameters, buffers and plain tensor attributes to float16.

    Returns the names of the plain attributes cast (the lifted constants ``.half()``
    would have missed).
    """
    module.half()
    cast = []
    for prefix, sub in module.named_modules():
        for name, value in list(vars(sub).items()):
            if (
                isinstance(value, torch.Tensor)
                and value.is_floating_point()
                and value.dtype != torch.float16
            ):
                setattr(sub, name, value.half())
                cast.append(f"{prefix}.{name}" if prefix else name)
    return cast


def probe_inputs(specs: Any) -> dict[str, np.ndarray] | None:
    """One row of zeros per input, or None when a dimension besides the batch is free."""
    arrays = {}
    for spec in specs:
        if None in spec.item_shape or spec.dtype == "object":
            return None
        item = [int(d) for d in spec.item_shape if d is not None]
        shape = [spec.shape[0] or 1, *item] if spec.batched else item
        arrays[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return arrays


def half_probe(
    call: Callable[[Mapping[str, np.ndarray]], list[tuple[str, Any]]], specs: Any
) -> bool:
    """Run the float16 model once on zeros; raises what the framework raises. False when
    the inputs have free dimensions and no probe could be made."""
    arrays = probe_inputs(specs)
    if arrays is None:
        return False
    for _name, tensor in call(arrays):
        tensor.float().cpu()  # wait for the device: a kernel failure surfaces here
    return True
