"""Plain data of the voice path: one measured block of cabin audio, and the errors of the audio core."""

from __future__ import annotations

import math
from dataclasses import dataclass

NAN = math.nan


class AudioError(ValueError):
    """Audio the voice path cannot use at all (unreadable file, unsupported format or sample rate)."""


@dataclass(frozen=True)
class VoiceMeasure:
    """The driver's voice over one block of audio (mirrors fatigue_msgs/VoiceFeatures).

    Every acoustic measure is NaN when it cannot be computed (no speech, clipped or silent audio, too little
    voiced speech); ``reason`` then says why ``voice_quality`` is NaN ("" when it is a number).
    """

    timestamp_s: float                  # end of the block
    block_duration: float               # s of audio analysed
    speech_duration: float = 0.0        # s of speech found by voice activity detection
    voiced_duration: float = 0.0        # s of speech with a pitch
    f0_mean: float = NAN                # Hz
    f0_std: float = NAN                 # semitones
    jitter: float = NAN                 # local jitter, fraction
    shimmer: float = NAN                # local shimmer, fraction
    hnr: float = NAN                    # dB
    speech_rate: float = NAN            # syllable nuclei per second of speech
    voice_quality: float = NAN          # [0, 1]; 1 = like the driver's alert baseline
    baseline_ready: bool = False
    reason: str = ""

    @property
    def speech_fraction(self) -> float:
        return self.speech_duration / self.block_duration if self.block_duration > 0 else NAN
