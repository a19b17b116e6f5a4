"""Test images, made on the fly (nothing is downloaded)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def image(width: int = 64, height: int = 48, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A smooth random image (JPEG-friendly) in any Pillow mode."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    rgb = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    return rgb.convert(mode) if mode != "RGB" else rgb


def encode(img: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def jpeg(width: int = 64, height: int = 48, mode: str = "RGB", seed: int = 0) -> bytes:
    return encode(image(width, height, mode, seed), "JPEG", quality=90)


def png(width: int = 64, height: int = 48, mode: str = "RGB", seed: int = 0) -> bytes:
    return encode(image(width, height, mode, seed), "PNG")
