"""sensor_msgs/Image payloads <-> numpy frames, without cv_bridge (plain bytes in, BGR or grey uint8 out)."""

from __future__ import annotations

import cv2
import numpy as np


class ImageEncodingError(ValueError):
    """An image payload that cannot be decoded; the message names the encoding and the sizes."""


# encoding -> (channels, bytes per channel)
ENCODINGS: dict[str, tuple[int, int]] = {
    "bgr8": (3, 1),
    "rgb8": (3, 1),
    "bgra8": (4, 1),
    "rgba8": (4, 1),
    "mono8": (1, 1),
    "mono16": (1, 2),
}
_TO_BGR = {"rgb8": cv2.COLOR_RGB2BGR, "bgra8": cv2.COLOR_BGRA2BGR, "rgba8": cv2.COLOR_RGBA2BGR}


def decode_image(encoding: str, height: int, width: int, step: int, data: bytes,
                 is_bigendian: bool = False) -> np.ndarray:
    """A sensor_msgs/Image payload as an HxWx3 BGR uint8 frame (colour encodings) or HxW uint8 (mono).

    Rows may be padded (`step` > width x bytes per pixel); the padding is dropped. mono16 is scaled to 8 bits
    over the full 16-bit range (value / 257, as cv_bridge does), honouring `is_bigendian`. The result never
    aliases `data`.

    Raises ImageEncodingError for an unsupported encoding, non-positive sizes, a step shorter than a row, or
    a payload whose length is not step x height.
    """
    spec = ENCODINGS.get(encoding)
    if spec is None:
        raise ImageEncodingError(
            f"unsupported image encoding '{encoding}' ({height}x{width}); supported: {', '.join(ENCODINGS)}")
    channels, depth = spec
    row_bytes = width * channels * depth
    where = f"{encoding} image {height}x{width}, step {step}, {len(data)} bytes"
    if height <= 0 or width <= 0:
        raise ImageEncodingError(f"{where}: height and width must be > 0")
    if step < row_bytes:
        raise ImageEncodingError(f"{where}: step is shorter than one row ({row_bytes} bytes)")
    if len(data) != step * height:
        raise ImageEncodingError(f"{where}: expected step x height = {step * height} bytes")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(height, step)[:, :row_bytes]
    if depth == 2:
        wide = rows.copy().view(">u2" if is_bigendian else "<u2").reshape(height, width)
        return ((wide.astype(np.uint32) + 128) // 257).astype(np.uint8)
    pixels = rows.reshape(height, width, channels) if channels > 1 else rows
    if encoding in _TO_BGR:
        return cv2.cvtColor(np.ascontiguousarray(pixels), _TO_BGR[encoding])
    return pixels.copy()


def encode_bgr8(frame: np.ndarray) -> tuple[int, int, int, bytes]:
    """(height, width, step, data) of a bgr8 sensor_msgs/Image for an HxWx3 BGR or HxW grey uint8 frame.

    Raises ImageEncodingError for other shapes or dtypes.
    """
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.size == 0:
        raise ImageEncodingError(f"bgr8 needs a non-empty uint8 frame, got {_describe(frame)}")
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    elif frame.ndim != 3 or frame.shape[2] != 3:
        raise ImageEncodingError(f"bgr8 needs an HxWx3 or HxW frame, got {_describe(frame)}")
    height, width = frame.shape[:2]
    return height, width, width * 3, np.ascontiguousarray(frame).tobytes()


def _describe(frame: object) -> str:
    if isinstance(frame, np.ndarray):
        return f"shape {frame.shape}, dtype {frame.dtype}"
    return type(frame).__name__
