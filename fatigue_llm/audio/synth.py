"""Test speech and cabin noise: real synthesised speech from espeak-ng (Debian package) and generated noise.

espeak-ng is a formant synthesiser: its speech has a real F0 contour, voicing, syllables and pauses, and its
rate (-s, words per minute), pitch (-p) and pitch range (SSML <prosody range>) are set exactly, which is what
tests of rate / pitch-range measures need. Used by test/core/test_voice.py and bench/bench_audio.py.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

SENTENCES = (
    "I have been driving for about two hours now and the motorway is quiet tonight.",
    "We should stop at the next service station for a coffee and a short walk.",
    "The weather report said there might be some fog later on near the river.",
    "My sister called this morning to tell me about her new job in the city.",
    "Please remind me to buy bread and milk before we get home this evening.",
    "The children were singing in the back seat for most of the afternoon.",
    "Turn left at the roundabout and then follow the signs towards the harbour.",
    "I think the radio station is playing the same song for the third time.",
)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(path: Path, text: str, words_per_minute: int = 160, pitch: int = 50, pitch_range: str = "medium",
          voice: str = "en") -> Path:
    """Write ``text`` spoken by espeak-ng to a 22.05 kHz 16-bit WAV. pitch 0-99; pitch_range: an SSML
    prosody range (x-low, low, medium, high, x-high). Raises RuntimeError when espeak-ng is missing or fails."""
    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed (scripts/install_system_deps.sh)")
    ssml = f'<speak><prosody range="{pitch_range}">{escape(text)}</prosody></speak>'
    command = ["espeak-ng", "-m", "-v", voice, "-s", str(words_per_minute), "-p", str(pitch), "-w", str(path), ssml]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0 or not Path(path).is_file():
        raise RuntimeError(f"espeak-ng failed ({result.returncode}): {result.stderr.strip()}")
    return Path(path)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit mono WAV -> (float32 samples, sample rate)."""
    with wave.open(str(path), "rb") as wav:
        data = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.float32) / 32768.0
        return data.reshape(-1, wav.getnchannels()).mean(axis=1), wav.getframerate()


def write_wav(path: Path, samples: np.ndarray, sample_rate: int, channels: int = 1) -> Path:
    """float samples (n,) or (n, channels) in [-1, 1] -> 16-bit PCM WAV."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())
    return Path(path)


def cabin_noise(duration_s: float, sample_rate: int = 16000, level: float = 0.05, seed: int = 0) -> np.ndarray:
    """Road and engine noise: brown (1/f^2) rumble, pink hiss and a 30 Hz engine order with harmonics."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * sample_rate)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1.0 / sample_rate), 20.0)
    rumble = np.fft.irfft(spectrum / f, n)
    hiss = np.fft.irfft(spectrum / np.sqrt(f), n)
    t = np.arange(n) / sample_rate
    engine = sum(np.sin(2 * np.pi * 30.0 * k * t + k) / k for k in range(1, 8))
    parts = [rumble / np.std(rumble), 0.3 * hiss / np.std(hiss), 0.5 * engine / np.std(engine)]
    noise = sum(parts)
    return (level * noise / np.std(noise)).astype(np.float32)


def pause(duration_s: float, sample_rate: int) -> np.ndarray:
    return np.zeros(int(duration_s * sample_rate), np.float32)
