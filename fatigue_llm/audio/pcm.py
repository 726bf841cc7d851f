"""PCM bytes -> float samples in [-1, 1], mono, at the analysis rate; and what makes a block unusable."""

from __future__ import annotations

from math import gcd

import numpy as np

from fatigue_llm.audio.config import ANALYSIS_RATE, MIN_SAMPLE_RATE
from fatigue_llm.audio.types import AudioError

MAX_SAMPLE_RATE = 384000
FULL_SCALE = 0.99       # |x| at or above this is "at the rail"
SILENT_PEAK = 1e-4      # a block whose peak stays below this (~3 LSB of 16-bit audio) carries no signal

# GStreamer / audio_common sample formats -> numpy dtype and the value of full scale
SAMPLE_FORMATS = {
    "S16LE": ("<i2", 32768.0),
    "S32LE": ("<i4", 2147483648.0),
    "F32LE": ("<f4", 1.0),
    "U8": ("u1", 128.0),
}
PCM_CODINGS = ("", "wave", "wav", "raw", "pcm")


def decode_pcm(data: bytes, sample_format: str, channels: int, coding_format: str = "wave") -> np.ndarray:
    """Interleaved PCM bytes -> mono float32 in [-1, 1] (channels averaged).

    Raises AudioError for a compressed coding format, an unknown sample format, zero channels or a byte count
    that is not a whole number of frames.
    """
    if coding_format.lower() not in PCM_CODINGS:
        raise AudioError(f"coding format {coding_format!r} is not PCM; send raw PCM ({', '.join(SAMPLE_FORMATS)})")
    fmt = (sample_format or "S16LE").upper()
    if fmt not in SAMPLE_FORMATS:
        raise AudioError(f"sample format {sample_format!r} is not supported; use one of {', '.join(SAMPLE_FORMATS)}")
    if channels < 1:
        raise AudioError(f"channels must be >= 1, got {channels}")
    dtype, scale = SAMPLE_FORMATS[fmt]
    width = np.dtype(dtype).itemsize * channels
    if len(data) % width:
        raise AudioError(f"{len(data)} bytes is not a whole number of {channels}-channel {fmt} frames")
    samples = np.frombuffer(data, dtype=dtype).astype(np.float32)
    if fmt == "U8":
        samples -= 128.0
    samples /= scale
    return mono(samples.reshape(-1, channels))


def mono(frames: np.ndarray) -> np.ndarray:
    """(n, channels) or (n,) -> (n,) float32."""
    frames = np.asarray(frames, dtype=np.float32)
    return frames.mean(axis=1, dtype=np.float32) if frames.ndim == 2 else frames


def check_sample_rate(sample_rate: int) -> None:
    """Raises AudioError for a rate the measures cannot use (too low to hold F0 harmonics, or absurd)."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"sample rate {sample_rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz: "
                         f"voice measures need at least {MIN_SAMPLE_RATE} Hz (telephone band)")


def to_analysis_rate(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Resample to ANALYSIS_RATE (polyphase, anti-aliased). Raises AudioError for an unusable rate."""
    check_sample_rate(sample_rate)
    if sample_rate == ANALYSIS_RATE:
        return np.asarray(samples, dtype=np.float32)
    from scipy.signal import resample_poly

    common = gcd(int(sample_rate), ANALYSIS_RATE)
    return resample_poly(samples, ANALYSIS_RATE // common, int(sample_rate) // common).astype(np.float32)


def unusable_reason(samples: np.ndarray, clip_fraction: float) -> str:
    """Why a block of samples cannot be measured ("" when it can): non-finite, silent or clipped audio."""
    if samples.size == 0:
        return "no audio"
    if not np.isfinite(samples).all():
        return "audio holds non-finite samples (NaN / inf)"
    peak = float(np.max(np.abs(samples)))
    if peak < SILENT_PEAK:
        return "no signal: the audio is all zero (microphone muted or disconnected)"
    at_rail = float(np.mean(np.abs(samples) >= FULL_SCALE))
    if at_rail > clip_fraction:
        return f"clipped: {at_rail:.1%} of samples at full scale (lower the microphone gain)"
    return ""
