"""sensor_msgs/Image payload decoding and bgr8 encoding."""

from __future__ import annotations

import numpy as np
import pytest

from fatigue_llm.perception.image import ImageEncodingError, decode_image, encode_bgr8

RNG = np.random.default_rng(7)
BGR = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def payload(pixels: np.ndarray, pad: int = 0) -> tuple[int, bytes]:
    """(step, data) of an image with `pad` extra bytes at the end of every row."""
    rows = pixels.reshape(pixels.shape[0], -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((rows.shape[0], pad), 0xAB, np.uint8)], axis=1)
    return padded.shape[1], padded.tobytes()


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("encoding, pixels", [
    ("bgr8", BGR),
    ("rgb8", BGR[:, :, ::-1]),
    ("bgra8", np.dstack([BGR, np.full(BGR.shape[:2], 9, np.uint8)])),
    ("rgba8", np.dstack([BGR[:, :, ::-1], np.full(BGR.shape[:2], 9, np.uint8)])),
])
def test_colour_encodings_decode_to_bgr(encoding: str, pixels: np.ndarray, pad: int) -> None:
    step, data = payload(np.ascontiguousarray(pixels), pad)
    frame = decode_image(encoding, 5, 7, step, data)
    assert frame.dtype == np.uint8 and frame.shape == (5, 7, 3)
    np.testing.assert_array_equal(frame, BGR)
    assert frame.flags.writeable and frame.flags.c_contiguous


@pytest.mark.parametrize("pad", [0, 2])
def test_mono8_keeps_grey(pad: int) -> None:
    grey = BGR[:, :, 0].copy()
    step, data = payload(grey, pad)
    frame = decode_image("mono8", 5, 7, step, data)
    assert frame.shape == (5, 7)
    np.testing.assert_array_equal(frame, grey)


@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16_is_scaled_over_the_full_range(bigendian: bool) -> None:
    values = np.array([[0, 257, 32768, 65535]], dtype=">u2" if bigendian else "<u2")
    step, data = payload(values, pad=2)
    frame = decode_image("mono16", 1, 4, step, data, is_bigendian=bigendian)
    assert frame.dtype == np.uint8
    np.testing.assert_array_equal(frame, [[0, 1, 128, 255]])


def test_mono16_endianness_matters() -> None:
    data = np.array([[256]], "<u2").tobytes()   # 0x0100: little-endian 256, big-endian 1
    assert decode_image("mono16", 1, 1, 2, data)[0, 0] == 1
    assert decode_image("mono16", 1, 1, 2, data, is_bigendian=True)[0, 0] == 0


def test_decoded_frame_does_not_alias_the_message() -> None:
    data = bytearray(BGR.tobytes())
    frame = decode_image("bgr8", 5, 7, 21, bytes(data))
    frame[:] = 0
    assert decode_image("bgr8", 5, 7, 21, bytes(data)).any()


@pytest.mark.parametrize("args, match", [
    (("yuv422", 5, 7, 14, b"\0" * 70), "unsupported image encoding 'yuv422'"),
    (("16UC1", 5, 7, 14, b"\0" * 70), "16UC1"),
    (("bgr8", 5, 7, 21, b"\0" * 104), "expected step x height = 105"),
    (("bgr8", 5, 7, 20, b"\0" * 100), "step is shorter than one row"),
    (("mono8", 0, 7, 7, b""), "must be > 0"),
    (("rgb8", 5, -1, 21, b"\0" * 105), "must be > 0"),
])
def test_bad_payloads_raise_naming_encoding_and_size(args, match: str) -> None:
    with pytest.raises(ImageEncodingError, match=match) as info:
        decode_image(*args)
    assert args[0] in str(info.value) and f"{args[1]}x{args[2]}" in str(info.value)


def test_encode_bgr8_round_trip_and_grey() -> None:
    height, width, step, data = encode_bgr8(BGR)
    assert (height, width, step, len(data)) == (5, 7, 21, 105)
    np.testing.assert_array_equal(decode_image("bgr8", height, width, step, data), BGR)
    grey = BGR[:, :, 1].copy()
    h, w, s, d = encode_bgr8(grey)
    np.testing.assert_array_equal(decode_image("bgr8", h, w, s, d), np.dstack([grey] * 3))
    # non-contiguous input is fine
    np.testing.assert_array_equal(decode_image("bgr8", *encode_bgr8(BGR[:, ::2])), BGR[:, ::2])


@pytest.mark.parametrize("frame", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8),
                                   np.zeros((0, 4, 3), np.uint8), "not an array"])
def test_encode_bgr8_rejects_other_frames(frame) -> None:
    with pytest.raises(ImageEncodingError, match="bgr8"):
        encode_bgr8(frame)
