"""Physical ranges of the feature fields: values no sensor can produce are refused or made absent."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest

from fatigue_llm.features.config import FeatureConfig
from fatigue_llm.features.types import (
    FEATURE_RANGES,
    FatigueFeatures,
    FieldRange,
    RangeViolation,
    out_of_range,
    sanitize,
)
from fatigue_llm.features.window import FeatureWindow
from fatigue_llm.intervention.config import InterventionConfig
from fatigue_llm.intervention.policy import assess
from fatigue_llm.intervention.types import Level
from fatigue_llm.perception.types import DriverEvent, EventType, FrameObservation
from fatigue_llm.sim.drive import simulate_drive

COUNTS = ("microsleep_count", "slow_blink_count", "yawn_count")


def test_every_numeric_field_has_a_range_with_a_unit():
    numeric = {f.name for f in fields(FatigueFeatures) if f.type in ("float", "int")}
    flags = {f.name for f in fields(FatigueFeatures) if f.type == "bool"}
    assert set(FEATURE_RANGES) == numeric and flags == {"trigger_event", "microsleep"}
    for name, allowed in FEATURE_RANGES.items():
        assert isinstance(allowed, FieldRange) and allowed.unit, name
        assert allowed.low < allowed.high, name
        assert allowed.integer == (name in COUNTS), name
    assert (FEATURE_RANGES["eye_closure_ratio"].low, FEATURE_RANGES["eye_closure_ratio"].high) == (0.0, 1.0)
    assert str(FEATURE_RANGES["time_awake"]) == "[0, 72] h"
    assert str(FEATURE_RANGES["blink_frequency"]) == "[0, 120] /min"


def test_defaults_and_absent_features_are_in_range():
    assert out_of_range(FatigueFeatures()) == []  # NaN = absent is not a violation
    assert sanitize(FatigueFeatures(eye_closure_ratio=0.0, yawn_count=0))[1] == []


def test_ranges_hold_what_our_own_feature_window_produces():
    """Ranges must not be tighter than a real window: a drowsy drive with blinks, nods and yawns."""
    window = FeatureWindow(FeatureConfig(hours_awake_at_start=20.0))
    kinds = (EventType.BLINK, EventType.SLOW_BLINK, EventType.NOD, EventType.YAWN, EventType.MICROSLEEP)
    for i in range(30 * 90):  # 90 s at 30 fps, an event every second, eyes closed 1 s in 3
        t = i / 30
        events = (DriverEvent(kinds[(i // 30) % len(kinds)], t, 0.3),) if i % 30 == 0 else ()
        closed = (i // 30) % 3 == 0
        window.add_observation(FrameObservation(timestamp_s=t, face_found=True, eyes_closed=closed,
                                                eye_closure=1.0 if closed else 0.0,
                                                closed_duration_s=(i % 30) / 30 if closed else 0.0, events=events))
    for sample in simulate_drive(90, 50, [(0.0, 1.0)], seed=3, time_driving_at_start=3 * 3600).samples:
        window.add_vehicle(sample)
    features = window.compute()
    present = [name for name in FEATURE_RANGES if name != "voice_quality"]
    assert all(math.isfinite(getattr(features, name)) for name in present), features
    assert out_of_range(features) == []


def test_sanitize_makes_bad_values_absent_and_keeps_the_valid_ones():
    garbage = FatigueFeatures(timestamp_s=12.0, window_duration=60.0, eye_closure_ratio=0.12,
                              blink_frequency=1e308, time_awake=-5.0, sdlp=math.inf, yaw_rate=-math.inf,
                              steering_reversal_rate=25.0, slow_blink_count=-3, yawn_count=10**9, microsleep_count=1)
    clean, violations = sanitize(garbage)
    assert [v.field for v in violations] == ["blink_frequency", "yaw_rate", "time_awake", "slow_blink_count",
                                             "yawn_count", "sdlp"]
    for name in ("blink_frequency", "yaw_rate", "time_awake", "sdlp"):
        assert math.isnan(getattr(clean, name)), name
    assert (clean.slow_blink_count, clean.yawn_count) == (0, 0)
    # the valid features beside them are untouched
    assert (clean.timestamp_s, clean.window_duration, clean.eye_closure_ratio) == (12.0, 60.0, 0.12)
    assert (clean.steering_reversal_rate, clean.microsleep_count) == (25.0, 1)
    assert out_of_range(clean) == []
    assert garbage.blink_frequency == 1e308  # a copy: the input is unchanged
    time_awake = violations[2]
    assert (time_awake.value, time_awake.unit, time_awake.range) == (-5.0, "h", FEATURE_RANGES["time_awake"])
    assert str(time_awake) == "field 'time_awake' = -5.0 is outside [0, 72] h"


def test_a_count_must_be_a_whole_number_and_a_timestamp_finite():
    violations = out_of_range(FatigueFeatures(yawn_count=2.5, microsleep_count=math.nan, timestamp_s=math.inf))
    assert [v.field for v in violations] == ["timestamp_s", "microsleep_count", "yawn_count"]
    assert str(violations[0]) == "field 'timestamp_s' = inf is not finite (s)"
    assert sanitize(FatigueFeatures(timestamp_s=-math.inf))[0].timestamp_s != -math.inf


def test_policy_on_sanitized_garbage_gives_the_level_of_the_valid_perclos():
    config = InterventionConfig()
    perclos = (config.advisory_perclos + config.warning_perclos) / 2
    garbage = FatigueFeatures(window_duration=60.0, eye_closure_ratio=perclos, blink_frequency=1e308,
                              slow_blink_count=10**6, yawn_count=-7, time_awake=-5.0, time_driving=1e12)
    assert assess(garbage, config)[0] == Level.WARNING  # the garbage slow-blink count alone would warn
    level, reasons = assess(sanitize(garbage)[0], config)
    assert level == Level.ADVISORY
    assert reasons == [f"PERCLOS {perclos:.2f} >= {config.advisory_perclos:.2f}"]


def test_from_dict_names_source_field_value_and_range():
    with pytest.raises(ValueError) as error:
        FatigueFeatures.from_dict({"time_awake": -5}, source="features.json")
    assert str(error.value) == "features.json: field 'time_awake' = -5 is outside [0, 72] h"
    with pytest.raises(ValueError) as error:
        FatigueFeatures.from_dict({"blink_frequency": 1e308, "eye_closure_ratio": 0.2, "yawn_count": 1.5,
                                   "sdlp": math.inf}, source="f.json")
    message = str(error.value)
    assert message.startswith("f.json: ")
    assert "field 'blink_frequency' = 1e+308 is outside [0, 120] /min" in message
    assert "field 'yawn_count' = 1.5 is outside [0, 10000] events (whole numbers)" in message
    assert "field 'sdlp' = inf is outside [0, 5] m" in message
    assert "eye_closure_ratio" not in message


def test_from_dict_accepts_the_bounds_and_reads_null_as_absent():
    features = FatigueFeatures.from_dict({"eye_closure_ratio": 1, "face_visible_fraction": 0.0, "yawn_count": 3.0,
                                          "blink_frequency": None, "slow_blink_count": None, "microsleep": None})
    assert features.eye_closure_ratio == 1.0 and isinstance(features.eye_closure_ratio, float)
    assert features.yawn_count == 3 and isinstance(features.yawn_count, int)
    assert math.isnan(features.blink_frequency)
    assert features.slow_blink_count == 0 and features.microsleep is False  # not NaN, which is truthy
    assert assess(features, InterventionConfig())[0] == Level.CRITICAL  # by the PERCLOS of 1, not by the flag
    with pytest.raises(ValueError, match="field 'microsleep' must be true or false, got 1"):
        FatigueFeatures.from_dict({"microsleep": 1})


def test_checked_message_conversion_sanitizes():
    convert = pytest.importorskip("fatigue_llm.ros.convert")
    source = FatigueFeatures(timestamp_s=5.0, window_duration=60.0, eye_closure_ratio=0.25, blink_frequency=20.0)
    msg = convert.features_to_msg(source)
    msg.blink_frequency = math.inf
    msg.time_awake = -5.0
    msg.yawn_count = 50_000
    features, violations = convert.msg_to_features_checked(msg)
    assert [v.field for v in violations] == ["blink_frequency", "time_awake", "yawn_count"]
    assert all(isinstance(v, RangeViolation) for v in violations)
    assert math.isnan(features.blink_frequency) and math.isnan(features.time_awake) and features.yawn_count == 0
    assert features.eye_closure_ratio == pytest.approx(0.25) and features.window_duration == 60.0
    assert convert.msg_to_features(msg).blink_frequency == math.inf  # the unchecked conversion is unchanged
    assert convert.msg_to_features_checked(convert.features_to_msg(source))[1] == []
