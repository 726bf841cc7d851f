"""The deterministic alert ladder: severity, actions, explanations and cooldown."""

from __future__ import annotations

import math

from fatigue_llm.features.types import FatigueFeatures
from fatigue_llm.intervention.config import InterventionConfig
from fatigue_llm.intervention.policy import AlertPolicy, assess
from fatigue_llm.intervention.types import Level, Source

CONFIG = InterventionConfig(cooldown=30.0, critical_cooldown=5.0)


def features(**values) -> FatigueFeatures:
    base = {"window_duration": 60.0, "eye_closure_ratio": 0.02, "blink_frequency": 15.0}
    base.update(values)
    return FatigueFeatures(**base)


def test_levels_follow_the_ladder():
    assert assess(features(), CONFIG)[0] == Level.INFO
    assert assess(features(eye_closure_ratio=0.10), CONFIG)[0] == Level.ADVISORY
    assert assess(features(eye_closure_ratio=0.20), CONFIG)[0] == Level.WARNING
    assert assess(features(eye_closure_ratio=0.35), CONFIG)[0] == Level.CRITICAL
    assert assess(features(microsleep=True, longest_eye_closure=1.4), CONFIG)[0] == Level.CRITICAL
    assert assess(features(slow_blink_count=8), CONFIG)[0] == Level.WARNING
    assert assess(features(time_awake=18.0), CONFIG)[0] == Level.ADVISORY


def test_absent_sources_never_raise_the_level():
    nothing = FatigueFeatures(window_duration=60.0)  # every feature NaN
    assert math.isnan(nothing.eye_closure_ratio)
    assert assess(nothing, CONFIG)[0] == Level.INFO


def test_microsleep_decision_is_critical_rule_with_explanation():
    decision = AlertPolicy(CONFIG).evaluate(features(microsleep=True, longest_eye_closure=1.6), now_s=10.0)
    assert decision is not None
    assert decision.level == Level.CRITICAL
    assert decision.source == Source.RULE
    assert decision.action == "alert_audio_haptic"
    assert "microsleep" in decision.explanation and "1.6" in decision.explanation


def test_cooldown_suppresses_repeats_but_not_escalation():
    policy = AlertPolicy(CONFIG)
    advisory = features(eye_closure_ratio=0.10)
    assert policy.evaluate(advisory, 0.0).level == Level.ADVISORY
    assert policy.evaluate(advisory, 10.0) is None            # same level within cooldown
    warning = features(eye_closure_ratio=0.20)
    assert policy.evaluate(warning, 11.0).level == Level.WARNING  # escalation goes out at once
    assert policy.evaluate(advisory, 20.0) is None            # lower level after a higher one: quiet
    assert policy.evaluate(advisory, 45.0).level == Level.ADVISORY  # cooldown over
    critical = features(microsleep=True)
    assert policy.evaluate(critical, 46.0).level == Level.CRITICAL
    assert policy.evaluate(critical, 48.0) is None            # critical cooldown 5 s
    assert policy.evaluate(critical, 51.5).level == Level.CRITICAL


def test_long_drive_advisory_suggests_a_break():
    decision = AlertPolicy(CONFIG).evaluate(features(time_driving=2.5 * 3600), 0.0)
    assert decision.level == Level.ADVISORY and decision.action == "suggest_break"


def test_one_blink_early_in_a_drive_is_not_a_high_blink_rate():
    """Found by replaying alert_commute: one blink in a 2 s window read as 30 blinks/min and advised."""
    config = InterventionConfig()
    early = FatigueFeatures(timestamp_s=2.0, window_duration=2.0, eye_closure_ratio=0.05, blink_frequency=30.0)
    assert assess(early, config)[0] == Level.INFO
    sustained = FatigueFeatures(timestamp_s=90.0, window_duration=60.0, eye_closure_ratio=0.05, blink_frequency=30.0)
    level, reasons = assess(sustained, config)
    assert level == Level.ADVISORY and any("blink rate 30/min" in r for r in reasons)
