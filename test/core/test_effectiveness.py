"""Closed-loop effectiveness: fatigue score before vs after an intervention's window."""

from __future__ import annotations

import logging
import math

import pytest

from fatigue_llm.features.types import FatigueFeatures
from fatigue_llm.intervention.effectiveness import EffectivenessTracker, effectiveness, fatigue_score
from fatigue_llm.intervention.types import InterventionDecision, Level, Source


def feats(t: float, perclos: float = math.nan, **values) -> FatigueFeatures:
    base = {"timestamp_s": t, "window_duration": 60.0, "eye_closure_ratio": perclos, "blink_frequency": 15.0}
    base.update(values)
    return FatigueFeatures(**base)


def decision(t: float = 0.0) -> InterventionDecision:
    return InterventionDecision(level=Level.WARNING, action="suggest_break", message="Take a break.",
                                source=Source.RULE, confidence=1.0, timestamp_s=t)


def test_fatigue_score_grows_with_fatigue_and_skips_absent_sources():
    alert = fatigue_score(feats(0, 0.03))
    drowsy = fatigue_score(feats(0, 0.2, slow_blink_count=4, head_nod=2.0, blink_frequency=24))
    asleep = fatigue_score(feats(0, 0.4, microsleep_count=3, microsleep=True, slow_blink_count=9, head_nod=6,
                                 blink_frequency=30))
    assert 0.0 <= alert < drowsy < asleep == pytest.approx(1.0)
    # no camera: eye-based indicators (and their event counts) are left out, not read as "alert"
    assert fatigue_score(feats(0, math.nan, head_nod=5.0, blink_frequency=math.nan)) == pytest.approx(1.0)
    assert math.isnan(fatigue_score(FatigueFeatures(timestamp_s=0.0)))


def test_effectiveness_formula():
    assert effectiveness(0.6, 0.0) == 1.0
    assert effectiveness(0.6, 0.6) == 0.5
    assert effectiveness(0.6, 0.3) == pytest.approx(0.75)
    assert effectiveness(0.6, 1.0) == pytest.approx(0.5 - 0.5 * 0.4 / 0.6)
    assert effectiveness(0.02, 0.0) == pytest.approx(0.5 + 0.5 * 0.02 / 0.1)  # floor of 0.1


def test_tracker_scores_after_the_window():
    tracker = EffectivenessTracker(window_s=60.0)
    tracker.start(7, decision(), feats(100.0, 0.25, slow_blink_count=6))
    tracker.start(8, decision(), feats(130.0, 0.25, slow_blink_count=6))
    assert tracker.observe(feats(150.0, 0.05)) == [] and len(tracker) == 2
    ((case_id, value),) = tracker.observe(feats(161.0, 0.05))
    assert case_id == 7 and value > 0.8  # PERCLOS 0.25 -> 0.05 after a break
    ((case_id, value),) = tracker.observe(feats(195.0, 0.35, slow_blink_count=8))
    assert case_id == 8 and value < 0.5  # got worse
    assert len(tracker) == 0


def test_tracker_waits_for_usable_features_then_gives_up(caplog):
    tracker = EffectivenessTracker(window_s=10.0)
    no_timestamp = FatigueFeatures(eye_closure_ratio=0.2, blink_frequency=20)
    tracker.start(1, decision(5.0), no_timestamp)
    face_lost = FatigueFeatures(timestamp_s=20.0)
    assert tracker.observe(face_lost) == [] and len(tracker) == 1
    assert tracker.observe(feats(25.0, 0.1)) == [(1, pytest.approx(effectiveness(
        fatigue_score(feats(0, 0.2, blink_frequency=20)), fatigue_score(feats(0, 0.1)))))]
    tracker.start(2, decision(), feats(0.0, 0.2))
    with caplog.at_level(logging.INFO):
        assert tracker.observe(FatigueFeatures(timestamp_s=31.0)) == []
    assert len(tracker) == 0 and "dropped" in caplog.text
    with pytest.raises(ValueError, match="timestamp"):
        tracker.start(3, decision(math.nan), FatigueFeatures())
    with pytest.raises(ValueError):
        EffectivenessTracker(0.0)
