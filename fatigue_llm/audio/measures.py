"""Speech in a block of audio (webrtcvad) and its acoustic measures (Praat, through praat-parselmouth).

All functions take mono float32 samples at ANALYSIS_RATE. Nothing here keeps state between blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fatigue_llm.audio.config import ANALYSIS_RATE

NAN = math.nan
VAD_FRAME_S = 0.03           # webrtcvad takes 10, 20 or 30 ms frames
VAD_BRIDGE_S = 0.3           # pauses up to this long stay inside one stretch of speech (stop closures, breaths)
VAD_MIN_RUN_S = 0.09         # shorter "speech" is a click or a bump, not a syllable
PITCH_STEP_S = 0.01
# de Jong & Wempe (2009): a syllable nucleus is an intensity peak at most 25 dB below the loudest speech
# (99th percentile), preceded by a dip of at least 2 dB, and voiced.
NUCLEUS_RANGE_DB = 25.0
NUCLEUS_DIP_DB = 2.0
INTENSITY_WINDOW_S = 0.04
MIN_VOICED_FRACTION = 0.2  # of a speech stretch's pitch frames


@dataclass(frozen=True)
class Acoustics:
    speech_duration: float = 0.0   # s of voiced-gated speech stretches
    voiced_duration: float = 0.0
    f0_mean: float = NAN
    f0_std: float = NAN
    jitter: float = NAN
    shimmer: float = NAN
    hnr: float = NAN
    nuclei: int = 0


def speech_mask(samples: np.ndarray, aggressiveness: int) -> np.ndarray:
    """One boolean per VAD_FRAME_S frame: speech (True) or not, after bridging short pauses."""
    import webrtcvad

    vad = webrtcvad.Vad(aggressiveness)
    n = int(round(VAD_FRAME_S * ANALYSIS_RATE))
    count = len(samples) // n
    pcm = (np.clip(samples[:count * n], -1.0, 1.0) * 32767.0).astype("<i2")
    frames = pcm.reshape(count, n)
    mask = np.fromiter((vad.is_speech(frame.tobytes(), ANALYSIS_RATE) for frame in frames), bool, count)
    return _drop_short(_bridge(mask, int(VAD_BRIDGE_S / VAD_FRAME_S)), int(round(VAD_MIN_RUN_S / VAD_FRAME_S)))


def _runs(mask: np.ndarray, value: bool) -> list[tuple[int, int]]:
    """[start, end) index ranges where mask == value."""
    padded = np.concatenate(([not value], mask == value, [not value])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2], strict=True))


def _bridge(mask: np.ndarray, max_gap: int) -> np.ndarray:
    out = mask.copy()
    for start, end in _runs(mask, False):
        if start > 0 and end < len(mask) and end - start <= max_gap:
            out[start:end] = True
    return out


def _drop_short(mask: np.ndarray, min_run: int) -> np.ndarray:
    out = mask.copy()
    for start, end in _runs(mask, True):
        if end - start < min_run:
            out[start:end] = False
    return out


def _speech_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Speech stretches as [start, end) sample ranges."""
    n = int(round(VAD_FRAME_S * ANALYSIS_RATE))
    return [(start * n, end * n) for start, end in _runs(mask, True)]


def acoustics(samples: np.ndarray, mask: np.ndarray, pitch_floor: float, pitch_ceiling: float) -> Acoustics:
    """Speech duration, F0 statistics, jitter, shimmer, HNR and syllable nuclei of the speech in ``samples``.

    The speech stretches of ``mask`` are joined end to end and analysed with Praat. A stretch less than
    MIN_VOICED_FRACTION voiced is not speech (webrtcvad takes broadband noise, a fan or a road for speech;
    a voice has a pitch): it is dropped from the speech duration.
    """
    import parselmouth
    from parselmouth.praat import call

    runs = _speech_runs(mask)
    speech = np.concatenate([samples[a:b] for a, b in runs]) if runs else np.zeros(0, np.float32)
    if len(speech) < int(0.1 * ANALYSIS_RATE):
        return Acoustics()
    sound = parselmouth.Sound(speech.astype(np.float64), sampling_frequency=ANALYSIS_RATE)
    pitch = sound.to_pitch_ac(time_step=PITCH_STEP_S, pitch_floor=pitch_floor, pitch_ceiling=pitch_ceiling)
    selected = pitch.selected_array
    f0, times = selected["frequency"], pitch.xs()
    voiced = f0 > 0
    speech_duration = 0.0
    offset = 0
    for a, b in runs:
        inside = (times >= offset / ANALYSIS_RATE) & (times < (offset + b - a) / ANALYSIS_RATE)
        if inside.any() and voiced[inside].mean() >= MIN_VOICED_FRACTION:
            speech_duration += (b - a) / ANALYSIS_RATE
        offset += b - a
    voiced_duration = float(voiced.sum()) * PITCH_STEP_S
    if voiced.sum() < 10:
        return Acoustics(speech_duration=speech_duration, voiced_duration=voiced_duration)
    semitones = 12.0 * np.log2(f0[voiced] / np.median(f0[voiced]))
    points = call([sound, pitch], "To PointProcess (cc)")
    jitter = call(points, "Get jitter (local)", 0.0, 0.0, 0.0001, 0.02, 1.3)
    shimmer = call([sound, points], "Get shimmer (local)", 0.0, 0.0, 0.0001, 0.02, 1.3, 1.6)
    # HNR from the normalised autocorrelation peak r of each voiced frame, 10 log10(r / (1 - r)) (Boersma 1993):
    # the quantity Praat's Harmonicity objects hold, here from the pitch analysis already done (Praat's own
    # Harmonicity (cc) reads ~2 dB higher with its longer window and costs 8x the time; the score is relative)
    r = np.clip(selected["strength"][voiced], 1e-6, 1.0 - 1e-6)
    return Acoustics(
        speech_duration=speech_duration,
        voiced_duration=voiced_duration,
        f0_mean=float(np.mean(f0[voiced])),
        f0_std=float(np.std(semitones)),
        jitter=_finite(jitter),
        shimmer=_finite(shimmer),
        hnr=float(np.mean(10.0 * np.log10(r / (1.0 - r)))),
        nuclei=syllable_nuclei(speech, times, voiced),
    )


def _finite(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else NAN


def intensity_db(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frame centre times in s, intensity in dB) with a Hann window every PITCH_STEP_S."""
    n = int(INTENSITY_WINDOW_S * ANALYSIS_RATE)
    hop = int(PITCH_STEP_S * ANALYSIS_RATE)
    if len(samples) < n:
        return np.zeros(0), np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(samples, n)[::hop]
    window = np.hanning(n).astype(np.float32)
    power = (frames * window) ** 2
    db = 10.0 * np.log10(power.mean(axis=1) / window.mean() ** 2 + 1e-12)
    times = (np.arange(len(frames)) * hop + n / 2) / ANALYSIS_RATE
    return times, db


def syllable_nuclei(samples: np.ndarray, pitch_times: np.ndarray, voiced: np.ndarray) -> int:
    """Count syllable nuclei (de Jong & Wempe 2009): voiced intensity peaks with a dip before each."""
    times, db = intensity_db(samples)
    if db.size < 3:
        return 0
    threshold = np.percentile(db, 99) - NUCLEUS_RANGE_DB
    peaks = np.flatnonzero((db[1:-1] > db[:-2]) & (db[1:-1] >= db[2:])) + 1
    peaks = peaks[db[peaks] > threshold]
    nuclei: list[int] = []
    for peak in peaks:
        if nuclei and db[peak] - db[nuclei[-1]:peak + 1].min() < NUCLEUS_DIP_DB:
            if db[peak] > db[nuclei[-1]]:
                nuclei[-1] = peak  # no dip between them: one syllable, keep its higher top
            continue
        nuclei.append(peak)
    return sum(_voiced_at(times[peak], pitch_times, voiced) for peak in nuclei)


def _voiced_at(t: float, pitch_times: np.ndarray, voiced: np.ndarray) -> bool:
    if pitch_times.size == 0:
        return False
    i = int(np.clip(np.searchsorted(pitch_times, t), 0, len(voiced) - 1))
    return bool(voiced[max(i - 1, 0):i + 2].any())
