"""``voice_quality``: how much a block of the driver's speech is like the driver's own alert baseline.

The baseline is learnt from the driver's first ``baseline_voiced`` seconds of voiced speech (a driver starts
a trip alert, as the eye baseline of the perception core assumes too). Each later block is compared with it,
measure by measure, in the sleepy direction only (see the package docstring for the evidence):

    d_i = max(0, sleepy change of measure i / TOLERANCE_i)       (0 = at or beyond the baseline's side)
    voice_quality = exp(-1/2 * sum_i WEIGHT_i * d_i^2)            (1 = like the baseline, -> 0 far from it)

A change of one tolerance in speech rate or F0 variability alone gives exp(-1/2) = 0.61. A measure that is
NaN in the block or the baseline is left out; when all are, the quality is NaN with a reason, never 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fatigue_llm.audio.types import VoiceMeasure

NAN = math.nan
# measure -> (sleepy direction, tolerance, weight). Relative tolerances are fractions of the baseline value.
#   speech_rate  slower   20 %    within-speaker rate varies ~10 % between readings; sleep loss slows it
#   f0_std       lower    30 %    monotony: the most consistent prosodic change with sleepiness
#   hnr          lower    3 dB    breathier, less periodic phonation
#   jitter       higher   50 %    perturbation measures scatter widely within a speaker: low weight
#   shimmer      higher   50 %
CRITERIA: dict[str, tuple[int, float, bool, float]] = {
    # name: (direction, tolerance, relative, weight); direction -1 = a drop is sleepy, +1 = a rise is
    "speech_rate": (-1, 0.20, True, 1.0),
    "f0_std": (-1, 0.30, True, 1.0),
    "hnr": (-1, 3.0, False, 0.5),
    "jitter": (+1, 0.50, True, 0.25),
    "shimmer": (+1, 0.50, True, 0.25),
}


def sleepy_deviation(name: str, value: float, baseline: float) -> float:
    """Change from the baseline in the sleepy direction, in tolerances (>= 0); NaN when either is NaN."""
    direction, tolerance, relative, _ = CRITERIA[name]
    if not (math.isfinite(value) and math.isfinite(baseline)):
        return NAN
    change = (value - baseline) * direction
    if relative:
        if baseline <= 0:
            return NAN
        change /= baseline
    return max(0.0, change / tolerance)


@dataclass
class VoiceBaseline:
    """The driver's alert voice: voiced-time-weighted means of each measure over the first blocks."""

    required_voiced: float
    voiced: float = 0.0
    _sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CRITERIA, 0.0))
    _weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CRITERIA, 0.0))

    @property
    def ready(self) -> bool:
        return self.voiced >= self.required_voiced

    def learn(self, measure: VoiceMeasure) -> None:
        """Add a measured block (only while not ready)."""
        if self.ready:
            return
        weight = measure.voiced_duration
        for name in CRITERIA:
            value = getattr(measure, name)
            if math.isfinite(value):
                self._sums[name] += weight * value
                self._weights[name] += weight
        self.voiced += weight

    def value(self, name: str) -> float:
        return self._sums[name] / self._weights[name] if self._weights[name] > 0 else NAN

    def values(self) -> dict[str, float]:
        return {name: self.value(name) for name in CRITERIA}

    def score(self, measure: VoiceMeasure) -> tuple[float, str]:
        """(voice_quality, reason): the block against the baseline; NaN and why when it cannot be scored."""
        if not self.ready:
            return NAN, (f"learning the driver's voice baseline ({self.voiced:.1f} of "
                         f"{self.required_voiced:g} s of voiced speech)")
        total = 0.0
        used = 0
        for name, (_, _, _, weight) in CRITERIA.items():
            d = sleepy_deviation(name, getattr(measure, name), self.value(name))
            if math.isfinite(d):
                total += weight * d * d
                used += 1
        if not used:
            return NAN, "no voice measure could be compared with the baseline"
        return math.exp(-0.5 * total), ""
