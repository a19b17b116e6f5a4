"""Limits on the work one image body may ask for, checked before Pillow reads it.

The pixel limit (``--max-image-pixels``) bounds what a well-formed image costs; these
bound what a hostile one within it could still cost. Each was measured on Pillow 13 with
a body under the default 16 MiB limit (``--max-body-bytes``); each limit sits far above
what an encoder writes:

- **A side over 65,535 pixels** (:data:`MAX_IMAGE_SIDE`, 413). A 1 x 39,999,999 PNG is
  under the pixel limit, but Pillow keeps a pointer per row and resizing it builds
  weights for every source pixel of that side: 1.1 GB and 1.4 s of CPU for a 155 kB body,
  against 200 MB for a square image of the same pixel count. 65,535 is JPEG's own limit.
- **A JPEG with more than 100 scans** (:data:`MAX_JPEG_SCANS`, 413). A progressive JPEG
  decodes scan by scan, each pass over every block of the image; empty scans cost 11
  bytes each, so 1,000 of them in a 152 kB body cost 2.4 s at 6000 x 6000, and 16 MiB of
  them hours. libjpeg's own progressive scripts write 6 (greyscale) to 10 (colour) scans;
  libjpeg-turbo's ``djpeg -maxscans`` and TurboJPEG's scan limit exist for this attack.
- **A JPEG with more than 1,000 segments before its first scan, or more than 64 KiB of
  padding between them** (:data:`MAX_JPEG_SEGMENTS`, :data:`MAX_JPEG_PADDING`, 400):
  Pillow parses the header in Python, a byte at a time between segments, and keeps every
  APP/COM segment: four million empty comments took 2.6 s and 335 MB.
- **A PNG with more than 4,096 chunks plus one per row** (:data:`MAX_PNG_CHUNKS`, 400):
  Pillow reads chunks one by one in Python and keeps unknown ones: 1.3 million empty
  chunks took 2.4 s and 207 MB. An encoder writing one IDAT chunk per row stays within it.

Pillow's own limits stay as they are: ``PngImagePlugin.MAX_TEXT_CHUNK`` (1 MiB per
decompressed text or ICC chunk) and ``MAX_TEXT_MEMORY`` (64 MiB for all of them) refuse
compressed-text bombs with an error (a 400 here); ``ImageFile.LOAD_TRUNCATED_IMAGES``
stays False, so a truncated image is a 400, never grey pixels; and
``Image.MAX_IMAGE_PIXELS`` is not consulted, because the header is opened through the
format's plugin and checked against scorepack's own pixel limit (:mod:`scorepack.codecs`).
"""

from __future__ import annotations

import re

from .errors import ImageTooComplexError, InvalidImageError

__all__ = [
    "MAX_IMAGE_SIDE",
    "MAX_JPEG_PADDING",
    "MAX_JPEG_SCANS",
    "MAX_JPEG_SEGMENTS",
    "MAX_PNG_CHUNKS",
    "check_jpeg",
    "check_png",
    "check_side",
]

MAX_IMAGE_SIDE = 65_535
MAX_JPEG_SCANS = 100
MAX_JPEG_SEGMENTS = 1_000
MAX_JPEG_PADDING = 64 * 1024
MAX_PNG_CHUNKS = 4_096

# a marker: 0xFF then a code that is not a stuffed zero, a fill byte or a restart marker
# (those three are what 0xFF is followed by inside entropy-coded data). Two fixed bytes,
# so a search is linear however many 0xFF bytes a body holds.
_MARKER = re.compile(rb"\xff[^\x00\xff\xd0-\xd7]")
_SOS, _EOI = 0xDA, 0xD9
_NO_LENGTH = {0x01, 0xD8}  # TEM, SOI (restarts never match _MARKER)
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}  # start-of-frame codes of progressive JPEGs


def check_side(width: int, height: int) -> None:
    """Refuse (413) an image with a side over :data:`MAX_IMAGE_SIDE`."""
    if max(width, height) > MAX_IMAGE_SIDE:
        raise ImageTooComplexError(
            f"The image is {width}x{height}: a side over {MAX_IMAGE_SIDE} pixels is not "
            "decoded (whatever its pixel count). Resize it before sending."
        )


def check_jpeg(body: bytes) -> None:
    """Walk a JPEG's markers up to its first scan (and on to its end when it is a
    progressive JPEG that may hold more than :data:`MAX_JPEG_SCANS` scans); refuse what
    the module docstring lists."""
    pos, segments, scans, progressive = 2, 0, 0, False
    while True:
        if scans:
            found = _MARKER.search(body, pos)  # past entropy-coded data, at C speed
        else:
            # the header: a marker comes next, after at most MAX_JPEG_PADDING bytes
            found = _MARKER.search(body, pos, pos + MAX_JPEG_PADDING + 2)
            if found is None and pos + MAX_JPEG_PADDING + 2 < len(body):
                raise InvalidImageError(
                    f"The JPEG has more than {MAX_JPEG_PADDING} bytes of padding or junk "
                    "between two of its header segments."
                )
        if found is None:
            return  # truncated: Pillow says so
        code, pos = body[found.start() + 1], found.end()
        if code == _EOI:
            return
        if code in _NO_LENGTH:
            continue
        length = int.from_bytes(body[pos : pos + 2], "big")
        if length < 2:
            return  # a corrupt segment length: Pillow's own error says it best
        pos += length
        if not scans:
            segments += 1
            if segments > MAX_JPEG_SEGMENTS:
                raise InvalidImageError(
                    f"The JPEG has more than {MAX_JPEG_SEGMENTS} segments (APP, COM, "
                    "tables…) before its image data."
                )
            progressive = progressive or code in _PROGRESSIVE
        if code == _SOS:
            scans += 1
            # only a progressive JPEG decodes scan after scan (a sequential one with a
            # scan too many is an error); entropy-coded data never holds FF DA, so a
            # count of them bounds the scans left
            if scans == 1 and (not progressive or body.count(b"\xff\xda", pos) < MAX_JPEG_SCANS):
                return
            if scans > MAX_JPEG_SCANS:
                raise ImageTooComplexError(
                    f"The JPEG has more than {MAX_JPEG_SCANS} scans (a progressive JPEG has "
                    "about 10): each scan is a pass over the whole image. Re-encode it."
                )


def check_png(body: bytes) -> None:
    """Count a PNG's chunks as far as Pillow reads them (to IEND, or to the second frame
    of an APNG: only the first is decoded); refuse more than :data:`MAX_PNG_CHUNKS` plus
    one per row."""
    # IHDR comes first (else Pillow refuses the file); its height bounds the rows
    height = int.from_bytes(body[20:24], "big") if body[12:16] == b"IHDR" else 0
    limit = MAX_PNG_CHUNKS + min(height, MAX_IMAGE_SIDE)
    pos, chunks, seen_data = 8, 0, False
    while pos + 8 <= len(body):
        kind = body[pos + 4 : pos + 8]
        if kind == b"IEND" or (kind == b"fcTL" and seen_data):
            return
        seen_data = seen_data or kind == b"IDAT"
        chunks += 1
        if chunks > limit:
            raise InvalidImageError(
                f"The PNG has more than {limit} chunks ({MAX_PNG_CHUNKS} plus one per row)."
            )
        pos += 12 + int.from_bytes(body[pos : pos + 4], "big")
