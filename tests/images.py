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


def bands(width: int, height: int, colors: list[tuple[int, int, int]]) -> Image.Image:
    """Vertical bands of equal width, one per colour, left to right."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    step = width // len(colors)
    for i, color in enumerate(colors):
        pixels[:, i * step : (i + 1) * step] = color
    return Image.fromarray(pixels)


def _png_chunks(body: bytes) -> list[tuple[int, bytes, int]]:
    """(offset, type, data length) of every PNG chunk."""
    chunks, pos = [], 8
    while pos + 8 <= len(body):
        length = int.from_bytes(body[pos : pos + 4], "big")
        chunks.append((pos, body[pos + 4 : pos + 8], length))
        pos += 12 + length
    return chunks


def with_declared_size(body: bytes, width: int, height: int) -> bytes:
    """The same JPEG or PNG with a header that claims ``width`` x ``height`` pixels
    (the pixel data is not changed, so it could never be decoded at that size)."""
    import zlib

    if body.startswith(b"\x89PNG"):
        pos, kind, length = _png_chunks(body)[0]
        assert kind == b"IHDR"
        size = width.to_bytes(4, "big") + height.to_bytes(4, "big")
        data = size + body[pos + 16 : pos + 8 + length]
        crc = zlib.crc32(b"IHDR" + data).to_bytes(4, "big")
        return body[: pos + 8] + data + crc + body[pos + 12 + length :]
    pos = 2
    while pos < len(body):
        marker, length = body[pos + 1], int.from_bytes(body[pos + 2 : pos + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):  # start of frame: precision, height, width
            head = body[: pos + 5]
            return head + height.to_bytes(2, "big") + width.to_bytes(2, "big") + body[pos + 9 :]
        pos += 2 + length
    raise ValueError("no JPEG start-of-frame marker")


def truncated_jpeg(body: bytes) -> bytes:
    """Cut in the middle of the entropy-coded scan data (headers all intact)."""
    scan = body.index(b"\xff\xda")
    start = scan + 2 + int.from_bytes(body[scan + 2 : scan + 4], "big")
    return body[: start + (len(body) - start) // 2]


def truncated_png(body: bytes) -> bytes:
    """Cut in the middle of the first IDAT chunk's compressed data."""
    for pos, kind, length in _png_chunks(body):
        if kind == b"IDAT":
            return body[: pos + 8 + length // 2]
    raise ValueError("no IDAT chunk")
