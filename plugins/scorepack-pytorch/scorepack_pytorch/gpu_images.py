"""JPEG decoding and image preprocessing on the GPU, for ``-O gpu_decode=true``.

nvJPEG decodes a whole batch of JPEGs in one call (``torchvision.io.decode_jpeg`` given a
list and ``device="cuda"``). The resize, colour order, scale/mean/std and layout that
:meth:`scorepack.preprocess.ImagePlan.apply` does with Pillow and NumPy on the CPU then
run on the same device, and the batch goes into the model without returning to the host.

Everything after the decode is plain torch and runs on any device, which is how the CPU
tests check it against the core's own path. The resize matches
:meth:`ImagePlan.resize_image <scorepack.preprocess.ImagePlan.resize_image>`: ``stretch``
is ``interpolate(mode="bilinear", antialias=True)`` (PyTorch's antialiased bilinear
follows Pillow's); ``crop`` resamples a box with fractional edges, which ``interpolate``
cannot express (an integer crop of a resized image was 17 levels off Pillow at the 99th
percentile on the sample photo), so it applies Pillow's own bilinear weights as two
matrix products.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from scorepack import import_framework
from scorepack.errors import InvalidImageError
from scorepack.preprocess import ImagePlan

from .compat import torchvision_release

__all__ = ["ImagePipeline", "load_decoder", "resample_weights", "torchvision_install"]

#: weight matrices kept for this many distinct image sizes (crop mode)
_WEIGHT_CACHE = 64


def torchvision_install(torch: Any) -> str:
    """The pip command for the torchvision build that matches the installed torch.

    torchvision 0.(N+15) goes with torch 2.N. A torch with a local CUDA tag (``+cu126``)
    came from PyTorch's index, so its torchvision does too; a torch without one came from
    the package index (whose Linux torch is a CUDA build), and so does its torchvision.
    """
    version = str(torch.__version__)
    release = torchvision_release(version)
    pin = f"=={release.rsplit('.', 1)[0]}.*" if release else ""
    local = version.partition("+")[2]
    index = f" --index-url https://download.pytorch.org/whl/{local}" if local else ""
    return (
        f"pip install 'torchvision{pin}'{index} "
        f"(the build matching torch {torch.__version__}; -O gpu_decode=true decodes JPEGs "
        "with its nvJPEG bindings)"
    )


def load_decoder(torch: Any) -> tuple[Callable[..., Any], Any]:
    """``torchvision.io.decode_jpeg`` and ``ImageReadMode``, or an error naming the install."""
    import_framework("torchvision", "pytorch", torchvision_install(torch))
    tv_io = importlib.import_module("torchvision.io")
    return tv_io.decode_jpeg, tv_io.ImageReadMode


def resample_weights(in_size: int, start: float, stop: float, out_size: int) -> np.ndarray:
    """Pillow's bilinear weights for one axis, shape ``(out_size, in_size)``: out = W @ in.

    The arithmetic of Pillow's ``precompute_coeffs`` for ``Image.resize(size, BILINEAR,
    box=...)``: output pixel ``i`` is a triangle-weighted average of the source pixels
    around ``start + (i + 0.5) * scale``, the triangle widened by the scale when shrinking
    (that is the antialiasing), reaching past the box into the rest of the image.
    """
    scale = (stop - start) / out_size
    width = max(scale, 1.0)
    centres = start + (np.arange(out_size) + 0.5) * scale
    source = np.arange(in_size)
    # zero outside Pillow's window [centre - width, centre + width), so no mask is needed
    weights = np.maximum(0.0, 1.0 - np.abs((source[None, :] + 0.5 - centres[:, None]) / width))
    total = weights.sum(axis=1, keepdims=True)
    np.divide(weights, total, out=weights, where=total != 0)
    return weights.astype(np.float32)


class ImagePipeline:
    """JPEG bytes in, one model-ready batch out, all on ``device``.

    ``decode`` is ``torchvision.io.decode_jpeg`` (or, in tests, any function with its
    signature); :meth:`preprocess` takes decoded ``uint8 [C, h, w]`` images of any sizes
    and applies ``plan``.
    """

    def __init__(
        self,
        torch: Any,
        plan: ImagePlan,
        device: Any,
        decode: Callable[..., Any] | None = None,
        read_modes: Any = None,
    ) -> None:
        self._torch = torch
        self.plan = plan
        self.device = device
        self._decode = decode
        self._mode = None
        if read_modes is not None:
            self._mode = read_modes.GRAY if plan.channels == 1 else read_modes.RGB
        # the constants ImagePlan folds (x * scale - mean) / std into, in float32 as there
        mean = np.broadcast_to(np.asarray(plan.mean, dtype=np.float32), (plan.channels,))
        std = np.broadcast_to(np.asarray(plan.std, dtype=np.float32), (plan.channels,))
        mul = (np.float32(plan.scale) / std).astype(np.float32)
        sub = (mean / std).astype(np.float32)
        self._mul = torch.from_numpy(mul.copy()).view(1, -1, 1, 1).to(device)
        self._sub = torch.from_numpy(sub.copy()).view(1, -1, 1, 1).to(device)
        self._dtype = getattr(torch, plan.dtype)
        self._weights: dict[tuple[int, int], tuple[Any, Any, slice, slice]] = {}

    def __call__(self, bodies: Sequence[bytes]) -> Any:
        """Decode and preprocess a batch of JPEGs: ``[len(bodies), ...model input row]``."""
        return self.preprocess(self.decode(bodies))

    def decode(self, bodies: Sequence[bytes]) -> list[Any]:
        """All JPEGs in one decoder call; a corrupt one fails the call (the batcher then
        retries its requests one by one, so only the corrupt one answers 400)."""
        if self._decode is None:
            raise RuntimeError("this ImagePipeline was made without a decoder")
        torch = self._torch
        # the decoder reads host tensors; bytes are immutable, torch wants writable memory
        data = [torch.frombuffer(bytearray(body), dtype=torch.uint8) for body in bodies]
        try:
            images = self._decode(data, mode=self._mode, device=self.device)
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError as exc:
            text = str(exc).strip().splitlines()
            raise InvalidImageError(
                f"A JPEG could not be decoded on the GPU: {text[0] if text else exc!r}"
            ) from exc
        return list(images) if isinstance(images, (list, tuple)) else [images]

    def preprocess(self, images: Sequence[Any]) -> Any:
        """``uint8 [C, h, w]`` images → one batch in the plan's size, layout and dtype."""
        torch = self._torch
        plan = self.plan
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault((int(image.shape[1]), int(image.shape[2])), []).append(i)
        if len(groups) == 1:
            ((height, width),) = groups
            batch = self._resize(torch.stack(list(images)).float(), height, width)
        else:
            # images of one size are resized together, then put back in request order
            batch = torch.empty(
                (len(images), plan.channels, plan.height, plan.width),
                dtype=torch.float32,
                device=self.device,
            )
            for (height, width), rows in groups.items():
                pixels = torch.stack([images[i] for i in rows]).float()
                batch[torch.tensor(rows, device=self.device)] = self._resize(pixels, height, width)
        # Pillow's resize hands on 8-bit pixels; round the same way before normalising
        batch = batch.round().clamp_(0, 255)
        if plan.color == "BGR" and plan.channels == 3:
            batch = batch.flip(1)
        if plan.dtype != "uint8":  # uint8 plans are identity plans (plan_image checks)
            batch = batch.mul_(self._mul).sub_(self._sub)
        batch = batch.to(self._dtype)
        if plan.layout == "NHWC":
            batch = batch.permute(0, 2, 3, 1)
        return batch.contiguous()

    def _resize(self, pixels: Any, height: int, width: int) -> Any:
        plan = self.plan
        if plan.resize == "stretch":
            if (height, width) == (plan.height, plan.width):
                return pixels  # Pillow returns the image unchanged
            return self._torch.nn.functional.interpolate(
                pixels,
                size=(plan.height, plan.width),
                mode="bilinear",
                align_corners=False,
                antialias=plan.height < height or plan.width < width,
            )
        rows, cols, row_span, col_span = self._crop_weights(height, width)
        return rows @ pixels[:, :, row_span, col_span] @ cols

    def _crop_weights(self, height: int, width: int) -> tuple[Any, Any, slice, slice]:
        """Row and column weights for ImagePlan's centre crop, trimmed to the pixels used."""
        cached = self._weights.get((height, width))
        if cached is not None:
            return cached
        plan = self.plan
        factor = max(plan.height / height, plan.width / width) / plan.crop_ratio
        box_w, box_h = plan.width / factor, plan.height / factor
        left, top = (width - box_w) / 2, (height - box_h) / 2
        rows = resample_weights(height, top, top + box_h, plan.height)
        cols = resample_weights(width, left, left + box_w, plan.width)
        row_span, col_span = _used(rows), _used(cols)
        torch = self._torch
        entry = (
            torch.from_numpy(np.ascontiguousarray(rows[:, row_span])).to(self.device),
            torch.from_numpy(np.ascontiguousarray(cols[:, col_span].T)).to(self.device),
            row_span,
            col_span,
        )
        if len(self._weights) >= _WEIGHT_CACHE:
            self._weights.clear()
        self._weights[(height, width)] = entry
        return entry

    def warm_up(self) -> None:
        """Decode and preprocess one small JPEG, so the first request does not pay for
        starting nvJPEG and compiling the kernels."""
        from PIL import Image

        size = (max(16, self.plan.width * 2), max(16, self.plan.height * 2))
        buffer = io.BytesIO()
        Image.new("RGB", size, (120, 80, 40)).save(buffer, "JPEG")
        self([buffer.getvalue()])


def _used(weights: np.ndarray) -> slice:
    """The source pixels some output pixel reads."""
    used = np.flatnonzero(weights.any(axis=0))
    return slice(int(used[0]), int(used[-1]) + 1) if used.size else slice(0, weights.shape[1])
