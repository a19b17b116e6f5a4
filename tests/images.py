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


# --- hostile images: within the pixel limit, built to cost too much (imagelimits.py) -----


def _chunk(kind: bytes, data: bytes) -> bytes:
    import zlib

    crc = zlib.crc32(kind + data).to_bytes(4, "big")
    return len(data).to_bytes(4, "big") + kind + data + crc


def flat_png(width: int, height: int) -> bytes:
    """A grey PNG of any size, written row by row (Pillow would need the pixels in memory)."""
    import zlib

    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x7f" * (3 * width)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


def many_scans_jpeg(scans: int, width: int = 512, height: int = 512) -> bytes:
    """A progressive JPEG with ``scans`` more (empty, 11-byte) scans before its end: each
    one a pass of the decoder over every block of the image."""
    body = encode(Image.new("L", (width, height), 128), "JPEG", progressive=True, quality=10)
    # one component (id 1), DC refinement (Ss=Se=0, Ah=1, Al=0), one byte of data
    scan = b"\xff\xda\x00\x08\x01\x01\x00\x00\x00\x10\x00"
    return body[:-2] + scan * scans + b"\xff\xd9"


def many_segments_jpeg(segments: int) -> bytes:
    """A small JPEG with ``segments`` empty comment segments before its frame."""
    body = jpeg(32, 24)
    return body[:2] + b"\xff\xfe\x00\x02" * segments + body[2:]


def padded_jpeg(padding: int) -> bytes:
    """A small JPEG with ``padding`` fill bytes (0xFF) before its first segment."""
    body = jpeg(32, 24)
    return body[:2] + b"\xff" * padding + body[2:]


def many_chunks_png(chunks: int) -> bytes:
    """A small PNG with ``chunks`` empty private ancillary chunks before its data."""
    body = png(32, 24)
    header_end = 8 + 25  # signature, IHDR
    return body[:header_end] + _chunk(b"scPk", b"") * chunks + body[header_end:]


#: hostile images within the pixel limit -> (body, HTTP status, words the message holds);
#: every route and both hosts refuse them alike
HOSTILE_IMAGES: dict[str, tuple[bytes, int, list[str]]] = {
    "jpeg with 150 scans": (many_scans_jpeg(150), 413, ["more than 100 scans"]),
    "png 1 x 70000": (flat_png(1, 70_000), 413, ["1x70000", "65535"]),
    "png 70000 x 1": (flat_png(70_000, 1), 413, ["70000x1", "65535"]),
    "jpeg with 1100 segments": (many_segments_jpeg(1100), 400, ["1000 segments"]),
    "jpeg with 70 kB of fill bytes": (padded_jpeg(70_000), 400, ["padding"]),
    "png with 5000 chunks": (many_chunks_png(5000), 400, ["chunks"]),
}
