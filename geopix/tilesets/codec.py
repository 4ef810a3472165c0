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
