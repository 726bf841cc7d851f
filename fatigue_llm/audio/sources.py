"""Cabin audio sources: a PCM WAV file, or a live input device through sounddevice (PortAudio / ALSA).

Each source iterates (media time of the chunk's first sample in s, mono float32 samples, sample rate).
The node's third source, fatigue_msgs/AudioChunk on a topic, is decoded by ``pcm.decode_pcm``.
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fatigue_llm.audio.pcm import check_sample_rate, mono
from fatigue_llm.audio.types import AudioError


class AudioSourceError(AudioError):
    """A source cannot be opened or read (missing file, not PCM WAV, no PortAudio, no such device)."""


def _pcm_to_float(raw: bytes, width: int) -> np.ndarray:
    if width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(raw, "u1").astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    if width == 3:
        b = np.frombuffer(raw, "u1").reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return (np.where(value >= 1 << 23, value - (1 << 24), value) / float(1 << 23)).astype(np.float32)
    if width == 4:
        return np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    raise AudioSourceError(f"{width * 8}-bit samples are not supported")


class WavSource:
    """A PCM WAV file in chunks of ``chunk_duration`` s. Raises AudioSourceError naming the file."""

    def __init__(self, path: str | Path, chunk_duration: float = 0.1) -> None:
        self.path = Path(path)
        try:
            self._wav = wave.open(str(self.path), "rb")  # noqa: SIM115 - closed by close() / __exit__
        except FileNotFoundError:
            raise AudioSourceError(f"{self.path}: no such WAV file") from None
        except (wave.Error, EOFError, OSError) as error:
            raise AudioSourceError(f"{self.path}: not a PCM WAV file ({error}); convert it to 16-bit PCM WAV"
                                   ) from None
        self.sample_rate = self._wav.getframerate()
        self.channels = self._wav.getnchannels()
        self._width = self._wav.getsampwidth()
        self.frames = self._wav.getnframes()
        try:
            check_sample_rate(self.sample_rate)
            if self._width not in (1, 2, 3, 4):
                raise AudioSourceError(f"{self._width * 8}-bit samples are not supported")
        except AudioError as error:
            self._wav.close()
            raise AudioSourceError(f"{self.path}: {error}") from None
        self._chunk = max(1, int(round(chunk_duration * self.sample_rate)))
        self.read_frames = 0
        self.truncated = False  # the header promised more frames than the file holds

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    def __iter__(self) -> Iterator[tuple[float, np.ndarray, int]]:
        self._wav.rewind()
        self.read_frames, self.truncated = 0, False
        while self.read_frames < self.frames:
            try:
                raw = self._wav.readframes(self._chunk)
            except (wave.Error, EOFError, OSError) as error:
                raise AudioSourceError(f"{self.path}: read failed after {self.read_frames} frames ({error})"
                                       ) from None
            count = len(raw) // (self._width * self.channels)
            if count == 0:
                self.truncated = True  # header says more: the file was cut
                return
            raw = raw[:count * self._width * self.channels]
            samples = mono(_pcm_to_float(raw, self._width).reshape(-1, self.channels))
            yield self.read_frames / self.sample_rate, samples, self.sample_rate
            self.read_frames += count

    def close(self) -> None:
        self._wav.close()

    def __enter__(self) -> WavSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _sounddevice():
    try:
        import sounddevice
    except ImportError:
        raise AudioSourceError("source 'device' needs the sounddevice package (requirements.txt, # voice)") from None
    except OSError as error:  # sounddevice raises OSError when the PortAudio library is missing
        raise AudioSourceError(f"sounddevice cannot load PortAudio ({error}): install libportaudio2 "
                               "(scripts/install_system_deps.sh)") from None
    return sounddevice


class DeviceSource:
    """A live input device (ALSA through PortAudio), mono float32, read in chunks of ``chunk_duration`` s.

    ``device`` is a sounddevice name or index ("" = the default input). Media time counts samples from the
    start, so chunk times follow on exactly; the node adds the clock time of the start.
    """

    def __init__(self, device: str = "", sample_rate: int = 16000, chunk_duration: float = 0.1) -> None:
        sd = _sounddevice()
        check_sample_rate(sample_rate)
        self.sample_rate = sample_rate
        self._chunk = max(1, int(round(chunk_duration * sample_rate)))
        selected = int(device) if device.strip().isdigit() else (device or None)
        try:
            self._stream = sd.InputStream(device=selected, channels=1, samplerate=sample_rate, dtype="float32",
                                          blocksize=self._chunk)
            self._stream.start()
        except (sd.PortAudioError, ValueError) as error:
            raise AudioSourceError(f"cannot open audio input {device or '(default)'} at {sample_rate} Hz: {error}. "
                                   f"Inputs: {self.inputs(sd)}") from None
        self.overflows = 0
        self._read = 0

    @staticmethod
    def inputs(sd) -> str:
        try:
            names = [f"{i}: {d['name']}" for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]
        except Exception:  # noqa: BLE001 - only for the message
            return "(cannot list)"
        return "; ".join(names) or "none"

    def __iter__(self) -> Iterator[tuple[float, np.ndarray, int]]:
        while self._stream.active:
            data, overflowed = self._stream.read(self._chunk)
            self.overflows += bool(overflowed)
            yield self._read / self.sample_rate, mono(data), self.sample_rate
            self._read += len(data)

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()

    def __enter__(self) -> DeviceSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
