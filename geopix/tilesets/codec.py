"""Tile image bytes: RGBA arrays to PNG/WebP/JPEG and back."""

from __future__ import annotations

import io
from typing import Literal

import numpy as np

from geopix.errors import TileFormatError

TileFormat = Literal["png", "webp", "jpg"]
#: Tile file extension → (PIL format, MIME type).
TILE_FORMATS: dict[TileFormat, tuple[str, str]] = {
    "png": ("PNG", "image/png"),
    "webp": ("WEBP", "image/webp"),
    "jpg": ("JPEG", "image/jpeg"),
}
JPEG_BACKGROUND = (255, 255, 255)


def media_type(fmt: str) -> str:
    if fmt not in TILE_FORMATS:
        raise TileFormatError(f"tile format {fmt!r} is unknown; expected one of {', '.join(TILE_FORMATS)}")
    return TILE_FORMATS[fmt][1]


def encode_tile(rgba: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    """``(4, T, T)`` uint8 → file bytes; opaque tiles drop the alpha channel (smaller files)."""
    from PIL import Image

    opaque = bool((rgba[3] == 255).all())
    hwc = np.ascontiguousarray(rgba.transpose(1, 2, 0))
    buf = io.BytesIO()
    if fmt == "jpg":
        a = hwc[..., 3:4].astype(np.float32) / 255.0
        rgb = hwc[..., :3] * a + np.array(JPEG_BACKGROUND, np.float32) * (1 - a)
        Image.fromarray(np.round(rgb).astype(np.uint8), "RGB").save(buf, format="JPEG", quality=quality)
    elif fmt == "webp":
        img = Image.fromarray(hwc[..., :3], "RGB") if opaque else Image.fromarray(hwc, "RGBA")
        img.save(buf, format="WEBP", quality=quality, method=4)
    else:
        img = Image.fromarray(hwc[..., :3], "RGB") if opaque else Image.fromarray(hwc, "RGBA")
        img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def decode_tile(data: bytes) -> np.ndarray:
    """File bytes → ``(4, T, T)`` uint8 RGBA."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGBA")).transpose(2, 0, 1).copy()


#: Bytes a whole tile file of each format ends with (or carries near its end).
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of every PNG
_TAIL = 64  # bytes searched for an end marker (a few writers pad after it)


def damage(data: bytes, fmt: str) -> str | None:
    """Why ``data`` is not a whole ``fmt`` tile (empty, another format, cut short), or ``None`` when it is.

    Only the first and last bytes are looked at: cheap enough for every tile a server sends, and
    enough for what interrupted copies and cut archives leave (an empty file, a file ending mid-image).
    """
    if not data:
        return "is empty (0 bytes)"
    tail = data[-_TAIL:]
    if fmt == "png":
        if not data.startswith(_PNG_SIGNATURE):
            return "is not a PNG image"
        if _PNG_END not in tail:
            return f"is a cut-short PNG image ({len(data)} bytes, no IEND chunk at its end)"
    elif fmt == "jpg":
        if not data.startswith(b"\xff\xd8\xff"):
            return "is not a JPEG image"
        if b"\xff\xd9" not in tail:
            return f"is a cut-short JPEG image ({len(data)} bytes, no end-of-image marker)"
    elif fmt == "webp":
        if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
            return "is not a WebP image"
        declared = int.from_bytes(data[4:8], "little") + 8
        if len(data) < declared:
            return f"is a cut-short WebP image ({len(data)} of {declared} bytes)"
    return None
