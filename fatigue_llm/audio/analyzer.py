"""Timestamped audio chunks -> one VoiceMeasure per ``block_duration`` of audio (streaming, per driver).

Timestamp-driven: each chunk says when its first sample was taken. Consecutive chunks must follow on;
a gap (a dropout, a paused file) closes the current block early, and a chunk that starts before the end of
the audio already taken is refused. Bad audio never raises from the measures: it gives a block whose
measures are NaN and whose ``reason`` says why.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from fatigue_llm.audio.config import AudioConfig
from fatigue_llm.audio.measures import acoustics, speech_mask
from fatigue_llm.audio.pcm import check_sample_rate, to_analysis_rate, unusable_reason
from fatigue_llm.audio.quality import VoiceBaseline
from fatigue_llm.audio.types import AudioError, VoiceMeasure

NAN = math.nan
GAP_S = 0.1  # timestamps of consecutive chunks may disagree with their sample counts by this much


class VoiceAnalyzer:
    """Buffers chunks into blocks, measures each block and scores it against the driver's baseline."""

    def __init__(self, config: AudioConfig | None = None) -> None:
        self.config = config or AudioConfig()
        self.config.validate()
        self.baseline = VoiceBaseline(self.config.baseline_voiced)
        self._chunks: list[np.ndarray] = []
        self._rate = 0
        self._start_s = NAN     # time of the first buffered sample
        self._count = 0         # samples buffered
        self._end_s = -math.inf  # end of the audio taken so far
        self._bad = ""          # why the buffered block is unusable (a chunk of non-finite samples)

    def reset(self) -> None:
        """Forget the buffered audio and the baseline (another driver)."""
        self.__init__(self.config)

    # --- input -------------------------------------------------------------------------------------------
    def add(self, samples: np.ndarray, sample_rate: int, timestamp_s: float) -> list[VoiceMeasure]:
        """Add one mono chunk whose first sample was taken at ``timestamp_s``; returns the blocks it completed.

        Raises AudioError (nothing buffered) for a sample rate outside 8-384 kHz, a non-finite timestamp or a
        chunk that starts before the end of the previous one.
        """
        check_sample_rate(sample_rate)
        if not math.isfinite(timestamp_s):
            raise AudioError(f"audio timestamp is not finite: {timestamp_s}")
        if timestamp_s < self._end_s - GAP_S:
            raise AudioError(f"audio chunk starts at {timestamp_s:.3f} s, before the end of the previous audio "
                             f"({self._end_s:.3f} s)")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        done: list[VoiceMeasure] = []
        if self._count and (sample_rate != self._rate or abs(timestamp_s - self._end_s) > GAP_S):
            done += self.flush()
        if not self._count:
            self._start_s, self._rate = timestamp_s, sample_rate
        if samples.size and not np.isfinite(samples).all():
            self._bad = "audio holds non-finite samples (NaN / inf)"
        self._chunks.append(samples)
        self._count += samples.size
        self._end_s = self._start_s + self._count / self._rate
        block = int(round(self.config.block_duration * self._rate))
        while self._count >= block:
            done.append(self._take(block))
        return done

    def flush(self) -> list[VoiceMeasure]:
        """Close the buffered block early (end of input or a gap): measured when it holds at least min_voiced s."""
        if not self._count:
            return []
        if self._count / self._rate < self.config.min_voiced:  # too short to hold enough voiced speech
            self._chunks, self._count, self._bad = [], 0, ""
            return []
        return [self._take(self._count)]

    def _take(self, count: int) -> VoiceMeasure:
        buffered = np.concatenate(self._chunks)
        block, rest = buffered[:count], buffered[count:]
        start, rate, bad = self._start_s, self._rate, self._bad
        self._chunks = [rest] if rest.size else []
        self._count = rest.size
        self._start_s = start + count / rate
        self._bad = ""
        return self.measure_block(block, rate, start, bad)

    # --- one block -----------------------------------------------------------------------------------------
    def measure_block(self, samples: np.ndarray, sample_rate: int, start_s: float, bad: str = "") -> VoiceMeasure:
        """Measure one block and score it (learning the baseline from the first blocks)."""
        duration = samples.size / sample_rate
        ready = self.baseline.ready
        reason = bad or unusable_reason(samples, self.config.clip_fraction)
        if reason:
            return VoiceMeasure(start_s + duration, duration, baseline_ready=ready, reason=reason)
        x = to_analysis_rate(samples, sample_rate)
        c = self.config
        found = acoustics(x, speech_mask(x, c.vad_aggressiveness), c.pitch_floor, c.pitch_ceiling)
        measure = VoiceMeasure(start_s + duration, duration, speech_duration=found.speech_duration,
                               voiced_duration=found.voiced_duration, baseline_ready=ready)
        if found.speech_duration <= 0:
            return replace(measure, reason="no speech")
        if found.voiced_duration < c.min_voiced:
            return replace(measure, reason=f"too little voiced speech ({found.voiced_duration:.1f} s < "
                                           f"{c.min_voiced:g} s)")
        measure = replace(measure, f0_mean=found.f0_mean, f0_std=found.f0_std, jitter=found.jitter,
                          shimmer=found.shimmer, hnr=found.hnr, speech_rate=found.nuclei / found.speech_duration)
        self.baseline.learn(measure)
        quality, why = self.baseline.score(measure)
        return replace(measure, voice_quality=quality, reason=why, baseline_ready=self.baseline.ready)


def analyse(chunks: Iterable[tuple[float, np.ndarray, int]], config: AudioConfig | None = None,
            analyzer: VoiceAnalyzer | None = None, offset_s: float = 0.0) -> list[VoiceMeasure]:
    """Every block of a whole input: ``chunks`` of (media time s, mono samples, sample rate), e.g. a WavSource,
    placed at ``offset_s`` + media time (to feed several recordings to one analyzer, one after the other)."""
    analyzer = analyzer or VoiceAnalyzer(config)
    measures: list[VoiceMeasure] = []
    for timestamp_s, samples, rate in chunks:
        measures += analyzer.add(samples, rate, offset_s + timestamp_s)
    return measures + analyzer.flush()


def chunked(samples: np.ndarray, sample_rate: int, chunk_duration: float = 0.1):
    """(media time, chunk, sample rate) of an in-memory recording, as a source yields them."""
    step = max(1, int(round(chunk_duration * sample_rate)))
    for start in range(0, len(samples), step):
        yield start / sample_rate, samples[start:start + step], sample_rate
