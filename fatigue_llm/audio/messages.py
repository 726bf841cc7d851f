"""fatigue_msgs <-> audio core conversions (ROS message types, but no rclpy: usable without a node)."""

from __future__ import annotations

import math

import numpy as np
from fatigue_msgs.msg import AudioChunk, VoiceFeatures

from fatigue_llm.audio.pcm import decode_pcm
from fatigue_llm.audio.types import AudioError, VoiceMeasure
from fatigue_llm.ros.convert import seconds_to_time, time_to_seconds

_FLOATS = ("block_duration", "speech_duration", "voiced_duration", "f0_mean", "f0_std", "jitter", "shimmer",
           "hnr", "speech_rate", "voice_quality")


def voice_to_msg(measure: VoiceMeasure, frame_id: str = "cabin_microphone") -> VoiceFeatures:
    msg = VoiceFeatures()
    msg.header.stamp = seconds_to_time(measure.timestamp_s)
    msg.header.frame_id = frame_id
    for name in _FLOATS:
        setattr(msg, name, float(getattr(measure, name)))
    msg.speech_fraction = float(measure.speech_fraction)
    msg.baseline_ready = measure.baseline_ready
    msg.reason = measure.reason
    return msg


def msg_to_voice(msg: VoiceFeatures) -> VoiceMeasure:
    """Raises ValueError for a voice_quality outside [0, 1] or negative durations (the caller rejects it)."""
    values = {name: float(getattr(msg, name)) for name in _FLOATS}
    quality = values["voice_quality"]
    if not math.isnan(quality) and not 0.0 <= quality <= 1.0:
        raise ValueError(f"voice_quality {quality!r} is outside [0, 1]")
    if not all(values[n] >= 0 for n in ("block_duration", "speech_duration", "voiced_duration")):
        raise ValueError("voice durations must be finite and >= 0")
    return VoiceMeasure(timestamp_s=time_to_seconds(msg.header.stamp), baseline_ready=msg.baseline_ready,
                        reason=msg.reason, **values)


def samples_to_chunk(samples: np.ndarray, sample_rate: int, start_s: float,
                     frame_id: str = "cabin_microphone") -> AudioChunk:
    """Mono float samples in [-1, 1] -> an S16LE AudioChunk stamped at its first sample."""
    msg = AudioChunk()
    msg.header.stamp = seconds_to_time(start_s)
    msg.header.frame_id = frame_id
    msg.info.channels = 1
    msg.info.sample_rate = int(sample_rate)
    msg.info.sample_format = "S16LE"
    msg.info.bitrate = 0
    msg.info.coding_format = "wave"
    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2")
    msg.audio.data = pcm.tobytes()
    return msg


def chunk_to_samples(msg: AudioChunk) -> tuple[float, np.ndarray, int]:
    """(stamp of the first sample s, mono float32 samples, sample rate). Raises AudioError for bad formats."""
    info = msg.info
    if info.sample_rate <= 0:
        raise AudioError(f"AudioChunk sample_rate must be > 0, got {info.sample_rate}")
    samples = decode_pcm(bytes(msg.audio.data), info.sample_format, int(info.channels), info.coding_format)
    return time_to_seconds(msg.header.stamp), samples, int(info.sample_rate)
