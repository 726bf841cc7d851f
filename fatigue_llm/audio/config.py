"""Parameters of the voice (audio) node and its core (one frozen dataclass; see fatigue_llm.config)."""

from __future__ import annotations

from dataclasses import dataclass

from fatigue_llm.config import ConfigError

VOICE_TOPIC = "driver/voice"  # fatigue_msgs/VoiceFeatures, relative like every topic in fatigue_llm.topics
SOURCES = ("", "file", "device", "topic")
ANALYSIS_RATE = 16000  # Hz; every input is resampled to this (webrtcvad takes 8/16/32/48 kHz)
MIN_SAMPLE_RATE = 8000  # Hz; below this, F0 and its perturbations cannot be measured


@dataclass(frozen=True)
class AudioConfig:
    # --- input: "" = idle (no cabin microphone; the default launch publishes nothing), "file" = wav_path,
    # "device" = an ALSA / PortAudio input via sounddevice, "topic" = fatigue_msgs/AudioChunk on audio_topic
    source: str = ""
    wav_path: str = ""              # PCM WAV file for source "file"
    playback_rate: float = 1.0      # 1.0 = real time for the file; 0 = as fast as possible
    loop: bool = False              # restart the file at its end
    device: str = ""                # sounddevice input name or index for source "device"; "" = default input
    device_sample_rate: int = 16000  # Hz asked of the device
    audio_topic: str = "audio/cabin"  # fatigue_msgs/AudioChunk input for source "topic"
    chunk_duration: float = 0.1     # s of audio read from a file / device at a time

    # --- analysis
    block_duration: float = 5.0     # s of audio per published VoiceFeatures (the feature window averages them)
    min_voiced: float = 1.0         # s of voiced speech a block needs for its measures (else NaN, with a reason)
    baseline_voiced: float = 15.0   # s of voiced speech from the first blocks that form the driver's baseline
    vad_aggressiveness: int = 2     # webrtcvad 0 (lenient) .. 3 (strict)
    pitch_floor: float = 60.0       # Hz; Praat's F0 search range (adult voices: ~60-400 Hz)
    pitch_ceiling: float = 400.0    # Hz
    clip_fraction: float = 0.002    # block is clipped when more of its samples than this sit at full scale

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"parameter 'source' must be one of {list(SOURCES)}, got {self.source!r}")
        if self.source == "file" and not self.wav_path:
            raise ConfigError("parameter 'wav_path' must name a WAV file when source is 'file'")
        if self.source == "topic" and not self.audio_topic:
            raise ConfigError("parameter 'audio_topic' must be set when source is 'topic'")
        for name in ("chunk_duration", "block_duration", "min_voiced", "baseline_voiced", "pitch_floor"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"parameter '{name}' must be > 0, got {getattr(self, name)}")
        if self.playback_rate < 0:
            raise ConfigError(f"parameter 'playback_rate' must be >= 0, got {self.playback_rate}")
        if self.min_voiced > self.block_duration:
            raise ConfigError(f"parameter 'min_voiced' ({self.min_voiced}) must not exceed "
                              f"'block_duration' ({self.block_duration})")
        if self.vad_aggressiveness not in (0, 1, 2, 3):
            raise ConfigError(f"parameter 'vad_aggressiveness' must be 0..3, got {self.vad_aggressiveness}")
        if not self.pitch_floor < self.pitch_ceiling:
            raise ConfigError(f"parameter 'pitch_floor' ({self.pitch_floor}) must be below "
                              f"'pitch_ceiling' ({self.pitch_ceiling})")
        if not 0.0 < self.clip_fraction < 1.0:
            raise ConfigError(f"parameter 'clip_fraction' must be in (0, 1), got {self.clip_fraction}")
        if self.device_sample_rate < MIN_SAMPLE_RATE:
            raise ConfigError(f"parameter 'device_sample_rate' must be >= {MIN_SAMPLE_RATE} Hz, "
                              f"got {self.device_sample_rate}")
