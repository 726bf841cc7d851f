"""Deterministic graded alert policy: the safety path that never waits for a model.

Severity ladder (first match wins):
  CRITICAL  a microsleep since the last features, or PERCLOS >= critical_perclos
  WARNING   PERCLOS >= warning_perclos, or slow blinks >= slow_blink_per_min_warning per minute
  ADVISORY  PERCLOS >= advisory_perclos, blink rate >= advisory_blink_rate, >= 2 yawns,
            > 16 h awake or > 2 h driving without a rest
A level is re-issued only after its cooldown; a higher level always goes out at once.
"""

from __future__ import annotations

import math

from fatigue_llm.features.types import FatigueFeatures
from fatigue_llm.intervention.config import InterventionConfig
from fatigue_llm.intervention.types import ACTIONS, InterventionDecision, Level, Source

LEVEL_ACTIONS = {
    Level.ADVISORY: "dashboard_notice",
    Level.WARNING: "audio_chime",
    Level.CRITICAL: "alert_audio_haptic",
}
LONG_AWAKE_H = 16.0        # > 16 h awake: impairment comparable to BAC 0.05 % (Dawson & Reid 1997)
LONG_DRIVE_S = 2 * 3600.0  # EU drivers' hours rule: a break after 4.5 h; 2 h is the common advice


def _ge(value: float, threshold: float) -> bool:
    return math.isfinite(value) and value >= threshold


def assess(features: FatigueFeatures, config: InterventionConfig) -> tuple[Level, list[str]]:
    """The severity of a feature vector and the reasons (human-readable) behind it."""
    f, c = features, config
    if f.microsleep:
        closed = f" {f.longest_eye_closure:.1f} s" if math.isfinite(f.longest_eye_closure) else ""
        return Level.CRITICAL, [f"microsleep: eyes closed{closed}"]
    if _ge(f.eye_closure_ratio, c.critical_perclos):
        return Level.CRITICAL, [f"PERCLOS {f.eye_closure_ratio:.2f} >= {c.critical_perclos:.2f}"]
    reasons: list[str] = []
    if _ge(f.eye_closure_ratio, c.warning_perclos):
        reasons.append(f"PERCLOS {f.eye_closure_ratio:.2f} >= {c.warning_perclos:.2f}")
    # rates over at least a minute, so one slow blink early in a drive is not a "rate"
    slow_rate = f.slow_blink_count / (max(f.window_duration, 60.0) / 60.0)
    if slow_rate >= c.slow_blink_per_min_warning:
        reasons.append(f"{slow_rate:.1f} slow blinks/min >= {c.slow_blink_per_min_warning:.1f}")
    if reasons:
        return Level.WARNING, reasons
    if _ge(f.eye_closure_ratio, c.advisory_perclos):
        reasons.append(f"PERCLOS {f.eye_closure_ratio:.2f} >= {c.advisory_perclos:.2f}")
    # the same for blinks: one blink in the first 2 s of a drive is not 30 blinks/min (a replay found this)
    blink_rate = f.blink_frequency * f.window_duration / max(f.window_duration, 60.0) if math.isfinite(
        f.window_duration) else f.blink_frequency
    if _ge(blink_rate, c.advisory_blink_rate):
        reasons.append(f"blink rate {blink_rate:.0f}/min >= {c.advisory_blink_rate:.0f}")
    if f.yawn_count >= 2:
        reasons.append(f"{f.yawn_count} yawns")
    if _ge(f.time_awake, LONG_AWAKE_H):
        reasons.append(f"awake {f.time_awake:.1f} h")
    if _ge(f.time_driving, LONG_DRIVE_S):
        reasons.append(f"driving {f.time_driving / 3600:.1f} h without a rest")
    return (Level.ADVISORY if reasons else Level.INFO), reasons


class AlertPolicy:
    """Turns features into rule-based decisions, with per-level cooldown."""

    def __init__(self, config: InterventionConfig) -> None:
        self.config = config
        self._last_issued: dict[Level, float] = {}

    def _cooldown(self, level: Level) -> float:
        return self.config.critical_cooldown if level == Level.CRITICAL else self.config.cooldown

    def _suppressed(self, level: Level, now_s: float) -> bool:
        """Suppressed while this level, or any higher one, was issued within its cooldown."""
        for issued_level, issued_at in self._last_issued.items():
            if issued_level >= level and now_s - issued_at < self._cooldown(level):
                return True
        return False

    def evaluate(self, features: FatigueFeatures, now_s: float) -> InterventionDecision | None:
        """A decision to publish now, or None (nothing to say, or still cooling down)."""
        level, reasons = assess(features, self.config)
        if level == Level.INFO or self._suppressed(level, now_s):
            return None
        self._last_issued[level] = now_s
        action = LEVEL_ACTIONS[level]
        if level == Level.ADVISORY and _ge(features.time_driving, LONG_DRIVE_S):
            action = "suggest_break"
        return InterventionDecision(
            level=level,
            action=action,
            message=ACTIONS[action],
            source=Source.RULE,
            confidence=1.0,
            explanation="rule: " + "; ".join(reasons),
            timestamp_s=now_s,
        )
