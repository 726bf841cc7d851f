"""Closed-loop learning: how much did an intervention reduce the driver's fatigue?

Fatigue score ``s`` in [0, 1] of one feature vector — a weighted mean of indicators, each clipped to
[0, 1] (an indicator whose source is absent, NaN, is left out and the weights renormalised):

    ======================  ================================  ======
    indicator               value                             weight
    ======================  ================================  ======
    PERCLOS                 eye_closure_ratio / 0.30          0.40
    microsleeps             microsleep_count / 2 (+1 if the   0.25
                            ``microsleep`` flag is set)
    slow blinks             slow blinks per minute / 6        0.15
    head nods               head_nod (per min) / 5            0.10
    blink rate              (blink_frequency - 15) / 15       0.10
    ======================  ================================  ======

The reference points are the alert ladder's: PERCLOS 0.30 = critical, 6 slow blinks/min = warning;
15 blinks/min is a typical alert rate; a blink rate above it rises with drowsiness.

Effectiveness of an intervention started with features ``before`` and scored on the first feature
vector ``after`` at least ``window_s`` later (feature vectors are already sliding-window aggregates,
so one vector summarises the last window):

    effectiveness = clip(0.5 + 0.5 * (s_before - s_after) / max(s_before, 0.1), 0, 1)

0.5 means no change, 1 full recovery (s_after = 0), 0 fatigue that grew by as much as it was. The floor
0.1 keeps a small absolute change of an almost-alert driver from counting as a large relative one.
An intervention that cannot be scored (no usable indicator before or after) within ``3 * window_s``
is dropped.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from fatigue_llm.features.types import FatigueFeatures
from fatigue_llm.intervention.types import InterventionDecision

log = logging.getLogger(__name__)

WEIGHTS = {"perclos": 0.40, "microsleeps": 0.25, "slow_blinks": 0.15, "head_nods": 0.10, "blink_rate": 0.10}
SCORE_FLOOR = 0.1
GIVE_UP_WINDOWS = 3.0


def _clip01(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def indicators(features: FatigueFeatures) -> dict[str, float]:
    """The available fatigue indicators of a feature vector, each in [0, 1] (module docstring)."""
    f = features
    minutes = max(f.window_duration, 60.0) / 60.0 if math.isfinite(f.window_duration) else 1.0
    has_eyes = math.isfinite(f.eye_closure_ratio)
    values = {
        "perclos": f.eye_closure_ratio / 0.30 if has_eyes else math.nan,
        # event counts are only meaningful while the eyes are observed
        "microsleeps": f.microsleep_count / 2.0 + (1.0 if f.microsleep else 0.0) if has_eyes else math.nan,
        "slow_blinks": f.slow_blink_count / minutes / 6.0 if has_eyes else math.nan,
        "head_nods": f.head_nod / 5.0,
        "blink_rate": (f.blink_frequency - 15.0) / 15.0,
    }
    return {name: _clip01(value) for name, value in values.items() if math.isfinite(value)}


def fatigue_score(features: FatigueFeatures) -> float:
    """Weighted fatigue score in [0, 1], or NaN when no indicator is available."""
    available = indicators(features)
    total = sum(WEIGHTS[name] for name in available)
    if total == 0.0:
        return math.nan
    return sum(WEIGHTS[name] * value for name, value in available.items()) / total


def effectiveness(score_before: float, score_after: float) -> float:
    """Effectiveness in [0, 1] from the fatigue score before and after (module docstring)."""
    change = (score_before - score_after) / max(score_before, SCORE_FLOOR)
    return _clip01(0.5 + 0.5 * change)


@dataclass(frozen=True)
class _Pending:
    case_id: int
    decision_id: str
    start_s: float
    score_before: float


class EffectivenessTracker:
    """Watches each started intervention for ``window_s`` seconds and then scores it. Not thread-safe."""

    def __init__(self, window_s: float) -> None:
        """Raises: ValueError: ``window_s`` is not positive."""
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self._pending: list[_Pending] = []

    def __len__(self) -> int:
        return len(self._pending)

    def start(self, case_id: int, decision: InterventionDecision, features_before: FatigueFeatures) -> None:
        """Begin watching the intervention recorded as case ``case_id``.

        The window starts at ``features_before.timestamp_s`` (or ``decision.timestamp_s`` when that is NaN).

        Raises:
            ValueError: neither time is finite.
        """
        start_s = features_before.timestamp_s
        if not math.isfinite(start_s):
            start_s = decision.timestamp_s
        if not math.isfinite(start_s):
            raise ValueError("neither the features nor the decision carry a finite timestamp")
        self._pending.append(_Pending(case_id, decision.id, start_s, fatigue_score(features_before)))

    def observe(self, features: FatigueFeatures) -> list[tuple[int, float]]:
        """Score every intervention whose window has elapsed at ``features.timestamp_s``.

        Returns (case_id, effectiveness) pairs; unscorable ones are kept until ``3 * window_s``, then
        dropped with a log line. Features without a finite timestamp are ignored.
        """
        now = features.timestamp_s
        if not math.isfinite(now):
            return []
        score_after = fatigue_score(features)
        results, keep = [], []
        for item in self._pending:
            elapsed = now - item.start_s
            if elapsed < self.window_s:
                keep.append(item)
            elif not (math.isnan(item.score_before) or math.isnan(score_after)):
                results.append((item.case_id, effectiveness(item.score_before, score_after)))
            elif elapsed < GIVE_UP_WINDOWS * self.window_s:
                keep.append(item)
            else:
                log.info("case %d (decision %s): no usable features to score it, dropped",
                         item.case_id, item.decision_id)
        self._pending = keep
        return results
