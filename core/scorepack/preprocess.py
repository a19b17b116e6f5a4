"""Image preprocessing, derived from the model's input signature.

The signature fixes what the model needs (size, layout, channels, dtype); a
:class:`PreprocessConfig` holds the user's overrides (resize mode, colour order, scale,
mean/std, or a named preset). :func:`plan_image` resolves both into an :class:`ImagePlan`,
once per model; :meth:`ImagePlan.apply` turns one decoded image into one input row.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .signature import Signature, TensorSpec

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["PRESETS", "ImagePlan", "PreprocessConfig", "plan_image"]

logger = logging.getLogger("scorepack.preprocess")

DEFAULT_SIZE = 224

#: named normalisations: value = (pixel * scale - mean) / std, per channel, in model order
PRESETS: Mapping[str, Mapping[str, Any]] = {
    # pixels as they are, 0..255
    "raw": {"scale": 1.0, "mean": (0.0,), "std": (1.0,), "color": "RGB"},
    # 0..1
    "unit": {"scale": 1 / 255, "mean": (0.0,), "std": (1.0,), "color": "RGB"},
    # torchvision's ImageNet normalisation
    "imagenet": {
        "scale": 1 / 255,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "color": "RGB",
    },
    # Keras ResNet50/VGG "caffe" mode: BGR, ImageNet means subtracted, no scaling
    "caffe": {"scale": 1.0, "mean": (103.939, 116.779, 123.68), "std": (1.0,), "color": "BGR"},
    # Keras Inception/MobileNet "tf" mode: -1..1
    "inception": {"scale": 1 / 127.5, "mean": (1.0,), "std": (1.0,), "color": "RGB"},
}

RESIZE_MODES = ("stretch", "crop")
LAYOUTS = ("NHWC", "NCHW")
COLORS = ("RGB", "BGR")


@dataclass(frozen=True)
class PreprocessConfig:
    """User overrides for image preprocessing; ``None`` means "derive from the model".

    ``value = (pixel * scale - mean) / std``, per channel. ``resize="crop"`` resizes the
    shorter side to ``size / crop_ratio`` and takes the centre (torchvision's 256→224);
    ``"stretch"`` resizes to the exact size, ignoring aspect ratio.
    """

    preset: str = "raw"
    input: str | None = None
    size: tuple[int, int] | None = None
    layout: str | None = None
    resize: str = "stretch"
    crop_ratio: float = 0.875
    color: str | None = None
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    #: decode at full resolution even when a reduced-size JPEG decode would do
    exact_decode: bool = False

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(
                f"resize must be one of {', '.join(RESIZE_MODES)}, not {self.resize!r}"
            )
        if self.layout is not None and self.layout.upper() not in LAYOUTS:
            raise ValueError(f"layout must be NHWC or NCHW, not {self.layout!r}")
        if self.color is not None and self.color.upper() not in COLORS:
            raise ValueError(f"color must be RGB or BGR, not {self.color!r}")
        if not 0 < self.crop_ratio <= 1:
            raise ValueError(f"crop_ratio must be in (0, 1], not {self.crop_ratio}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ValueError(f"size must be (height, width) of positive ints, not {self.size}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) not in (1, 3):
                raise ValueError(f"{name} takes 1 or 3 values, not {len(values)}")
        if self.std is not None and any(v == 0 for v in self.std):
            raise ValueError("std values must not be 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for manifests; ``None`` entries are left out."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in asdict(self).items()
            if v is not None
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessConfig:
        """The inverse of :meth:`to_dict`."""
        kwargs = dict(data)
        for key in ("size", "mean", "std"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


@dataclass(frozen=True)
class ImagePlan:
    """Everything needed to turn one image into one row of one model input."""

    input: str
    height: int
    width: int
    channels: int
    layout: str
    dtype: str
    resize: str
    crop_ratio: float
    color: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    exact_decode: bool = False
    _mul: np.ndarray = field(init=False, repr=False, compare=False)
    _sub: np.ndarray = field(init=False, repr=False, compare=False)
    _flat: tuple[np.ndarray, np.ndarray] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # fold (x * scale - mean) / std into one multiply and one subtract per pixel
        mean = np.broadcast_to(np.asarray(self.mean, dtype=np.float32), (self.channels,))
        std = np.broadcast_to(np.asarray(self.std, dtype=np.float32), (self.channels,))
        mul = (np.float32(self.scale) / std).astype(np.float32)
        sub = (mean / std).astype(np.float32)
        object.__setattr__(self, "_mul", mul)
        object.__setattr__(self, "_sub", sub)
        # per-channel constants broadcast over the last axis make NumPy loop three values
        # at a time (336 us for 224x224x3 here); one flat pass over constants laid out like
        # the pixels takes 64 us. Built once per model, for NHWC unless one scalar will do.
        flat = None
        if self.layout == "NHWC" and not self._uniform_rgb:
            count = self.height * self.width
            flat = (np.tile(mul, count), np.tile(sub, count))
        object.__setattr__(self, "_flat", flat)

    @property
    def _uniform_rgb(self) -> bool:
        return self.color == "RGB" and len(set(self._mul)) == 1 and len(set(self._sub)) == 1

    @property
    def pil_mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    @property
    def is_identity(self) -> bool:
        """True when pixel values go to the model unchanged."""
        return bool(np.all(self._mul == 1) and np.all(self._sub == 0))

    def describe(self) -> dict[str, Any]:
        """For ``inspect`` and manifests."""
        return {
            "input": self.input,
            "size": [self.height, self.width],
            "channels": self.channels,
            "layout": self.layout,
            "dtype": self.dtype,
            "resize": self.resize,
            "color": self.color,
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def decode_size(self, width: int, height: int) -> tuple[int, int]:
        """The smallest size an image of ``width`` x ``height`` may be decoded at.

        Below it, resizing would have to enlarge what it now shrinks. A JPEG decoder asked
        for this size (Pillow's ``draft``) scales by 1/2, 1/4 or 1/8 in the DCT domain and
        never goes below it.
        """
        if self.resize == "stretch":
            return min(width, self.width), min(height, self.height)
        factor = min(1.0, max(self.height / height, self.width / width) / self.crop_ratio)
        return max(1, math.ceil(width * factor)), max(1, math.ceil(height * factor))

    def resize_image(self, image: Image.Image) -> Image.Image:
        """Resize (and crop) to the model's size in one resampling pass."""
        from PIL import Image

        w0, h0 = image.size
        if self.resize == "stretch":
            if (w0, h0) == (self.width, self.height):
                return image
            return image.resize((self.width, self.height), Image.Resampling.BILINEAR)
        # crop: scale so the image covers the target, enlarge by 1/crop_ratio, take the centre
        factor = max(self.height / h0, self.width / w0) / self.crop_ratio
        box_w, box_h = self.width / factor, self.height / factor
        left, top = (w0 - box_w) / 2, (h0 - box_h) / 2
        return image.resize(
            (self.width, self.height),
            Image.Resampling.BILINEAR,
            box=(left, top, left + box_w, top + box_h),
        )

    def to_array(self, image: Image.Image) -> np.ndarray:
        """One input row from an image already in :attr:`pil_mode` and the right size.

        The pixels are read once and written once, straight into the model's layout and
        dtype: one multiply and one subtract per value, no intermediate float copy.
        """
        pixels = np.asarray(image)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if self.dtype == "uint8" and self.is_identity:
            if self.color == "BGR":
                pixels = pixels[:, :, ::-1]
            row = pixels.transpose(2, 0, 1) if self.layout == "NCHW" else pixels
            return np.ascontiguousarray(row)
        dtype = np.dtype(self.dtype)
        if self.layout == "NHWC" and self._uniform_rgb:
            # the same constants for every channel: two whole-array passes
            row = np.empty(pixels.shape, dtype=dtype)
            np.multiply(pixels, self._mul[0], out=row, casting="unsafe")
            np.subtract(row, self._sub[0], out=row, casting="unsafe")
            return row
        if self._flat is not None and pixels.shape == (self.height, self.width, self.channels):
            if self.color == "BGR":
                pixels = _reversed_channels(pixels)
            mul, sub = self._flat
            row = np.empty(pixels.shape, dtype=dtype)
            np.multiply(pixels.reshape(-1), mul, out=row.reshape(-1), casting="unsafe")
            np.subtract(row.reshape(-1), sub, out=row.reshape(-1), casting="unsafe")
            return row
        shape = (self.channels, *pixels.shape[:2]) if self.layout == "NCHW" else pixels.shape
        row = np.empty(shape, dtype=dtype)
        hwc = row.transpose(1, 2, 0) if self.layout == "NCHW" else row
        # NCHW: one contiguous plane per channel, written in one pass each
        for out_c in range(self.channels):
            in_c = self.channels - 1 - out_c if self.color == "BGR" else out_c
            target = hwc[:, :, out_c]
            np.multiply(pixels[:, :, in_c], self._mul[out_c], out=target, casting="unsafe")
            np.subtract(target, self._sub[out_c], out=target, casting="unsafe")
        return row

    def apply(self, image: Image.Image) -> np.ndarray:
        """Convert mode, resize and normalise one decoded image into one input row."""
        if image.mode.startswith("I"):
            image = _eight_bit(image)
        if image.mode != self.pil_mode:
            image = image.convert(self.pil_mode)
        return self.to_array(self.resize_image(image))


def _reversed_channels(pixels: np.ndarray) -> np.ndarray:
    """RGB → BGR as a new contiguous array: three plane copies take 37 us for 224x224 here,
    a copy through a reversed view (``[:, :, ::-1]``) 218 us."""
    out = np.empty_like(pixels)
    last = pixels.shape[2] - 1
    for c in range(pixels.shape[2]):
        out[:, :, c] = pixels[:, :, last - c]
    return out


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit greyscale image (PNG opens as ``I;16`` or ``I``) scaled to 8 bits.

    Pillow's ``convert`` clips such images to 0..255 instead of scaling them, which
    turns everything above 255 of 65535 white.
    """
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")


def _layout_of(item: Sequence[int | None]) -> str | None:
    """Guess NHWC or NCHW from a rank-3 item shape; None when it is no image."""
    first, last = item[0], item[-1]
    if last in (1, 3) and first not in (1, 3):
        return "NHWC"
    if first in (1, 3) and last not in (1, 3):
        return "NCHW"
    if last in (1, 3):
        return "NHWC"
    return None


def image_input(signature: Signature, name: str | None = None) -> TensorSpec | None:
    """The input an image goes to: ``name``, or the model's only image-shaped input."""
    if name is not None:
        return signature.input(name)
    images = [s for s in signature.inputs if len(s.item_shape) == 3 and _layout_of(s.item_shape)]
    return images[0] if len(images) == 1 else None


def plan_image(signature: Signature, config: PreprocessConfig | None = None) -> ImagePlan | None:
    """Resolve the image pipeline for a model, or None when no input takes images."""
    config = config or PreprocessConfig()
    spec = image_input(signature, config.input)
    if spec is None:
        return None
    item = spec.item_shape
    if len(item) != 3:
        raise ValueError(f"input {spec.name!r} has shape {spec.shape_text()}, not an image")
    layout = (config.layout or _layout_of(item) or "NHWC").upper()
    if layout == "NHWC":
        height, width, channels = item
    else:
        channels, height, width = item
    if channels not in (1, 3):
        raise ValueError(f"input {spec.name!r} has {channels} channels; images need 1 or 3")
    if config.size is not None:
        if (height not in (None, config.size[0])) or (width not in (None, config.size[1])):
            raise ValueError(
                f"input {spec.name!r} is fixed at {height}x{width}; cannot resize to "
                f"{config.size[0]}x{config.size[1]}"
            )
        height, width = config.size
    if height is None or width is None:
        logger.info(
            "input %r has no fixed size; using %d x %d", spec.name, DEFAULT_SIZE, DEFAULT_SIZE
        )
        height = height or DEFAULT_SIZE
        width = width or DEFAULT_SIZE
    preset = PRESETS[config.preset]
    dtype = np.dtype(spec.dtype).name
    if dtype not in ("uint8", "float16", "float32", "float64"):
        raise ValueError(f"input {spec.name!r} has dtype {dtype}; images need uint8 or float")
    plan = ImagePlan(
        input=spec.name,
        height=int(height),
        width=int(width),
        channels=int(channels),
        layout=layout,
        dtype=dtype,
        resize=config.resize,
        crop_ratio=config.crop_ratio,
        color=(config.color or preset["color"]).upper(),
        scale=float(config.scale if config.scale is not None else preset["scale"]),
        mean=tuple(config.mean if config.mean is not None else preset["mean"]),
        std=tuple(config.std if config.std is not None else preset["std"]),
        exact_decode=config.exact_decode,
    )
    if plan.dtype == "uint8" and not plan.is_identity:
        raise ValueError(
            f"input {spec.name!r} takes uint8 pixels; scale/mean/std cannot apply (use preset raw)"
        )
    return plan


def with_overrides(config: PreprocessConfig, **changes: Any) -> PreprocessConfig:
    """A copy of ``config`` with the non-None ``changes`` applied."""
    return replace(config, **{k: v for k, v in changes.items() if v is not None})
