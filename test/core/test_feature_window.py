"""Windowed features: PERCLOS and rates are time-weighted (frame-rate independent)."""

from __future__ import annotations

import math

import pytest

from fatigue_llm.features.config import FeatureConfig
from fatigue_llm.features.window import FeatureWindow, FeatureWindowError
from fatigue_llm.perception.types import DriverEvent, EventType, FrameObservation, VehicleSample


def frame(t: float, closed: bool, face: bool = True, events=()) -> FrameObservation:
    return FrameObservation(timestamp_s=t, face_found=face, eyes_closed=closed and face,
                            eye_closure=(1.0 if closed else 0.0) if face else math.nan,
                            closed_duration_s=0.0, events=tuple(events))


def feed(window: FeatureWindow, fps: float, seconds: float, closed_every: int = 0, start: float = 0.0) -> float:
    """Frames at ``fps``; every ``closed_every``-th second-slot closed. Returns the last time."""
    n = int(seconds * fps)
    t = start
    for i in range(n):
        t = start + i / fps
        closed = closed_every > 0 and int(t) % closed_every == 0
        window.add_observation(frame(t, closed))
    return t


@pytest.mark.parametrize("fps", [10.0, 30.0, 60.0])
def test_perclos_is_the_closed_fraction_of_time_at_any_frame_rate(fps):
    window = FeatureWindow(FeatureConfig(perclos_window=60.0))
    feed(window, fps, seconds=40.0, closed_every=4)  # closed during 1 s of every 4 s
    features = window.compute()
    assert features.eye_closure_ratio == pytest.approx(0.25, abs=0.02)
    assert features.window_duration == pytest.approx(40.0, abs=0.2)


def test_window_forgets_old_frames():
    window = FeatureWindow(FeatureConfig(perclos_window=10.0, min_window=2.0))
    for i in range(300):  # 10 s closed at 30 fps
        window.add_observation(frame(i / 30, closed=True))
    for i in range(300, 900):  # then 20 s open
        window.add_observation(frame(i / 30, closed=False))
    assert window.compute().eye_closure_ratio == pytest.approx(0.0, abs=0.01)


def test_face_lost_time_is_not_closed_time():
    window = FeatureWindow(FeatureConfig())
    for i in range(300):
        t = i / 30
        window.add_observation(frame(t, closed=False, face=not (5 <= t < 8)))
    features = window.compute()
    assert features.eye_closure_ratio == pytest.approx(0.0)
    assert features.face_visible_fraction == pytest.approx(0.7, abs=0.02)


def test_events_become_rates_counts_and_a_microsleep_flag():
    window = FeatureWindow(FeatureConfig())
    blink = DriverEvent(EventType.BLINK, 0.0, 0.15)
    slow = DriverEvent(EventType.SLOW_BLINK, 0.0, 0.45)
    for i in range(1800):  # 60 s at 30 fps, a blink every 4 s, a slow blink every 20 s
        t = i / 30
        events = []
        if i % 120 == 60:
            events.append(blink)
        if i % 600 == 300:
            events.append(slow)
        assert window.add_observation(frame(t, closed=False, events=events)) is False
    features = window.compute()
    assert features.blink_frequency == pytest.approx(18.0, abs=0.5)  # 15 + 3 per minute
    assert features.slow_blink_count == 3
    assert features.mean_blink_duration == pytest.approx((15 * 0.15 + 3 * 0.45) / 18)
    assert features.microsleep is False
    onset = DriverEvent(EventType.MICROSLEEP, 60.0, 1.0)
    assert window.add_observation(frame(60.05, closed=True, events=[onset])) is True
    assert window.compute(trigger_event=True).microsleep is True
    assert window.compute().microsleep is False  # reported once


def test_too_little_data_gives_nan_not_zero():
    window = FeatureWindow(FeatureConfig(min_window=2.0))
    window.add_observation(frame(0.0, closed=True))
    window.add_observation(frame(0.1, closed=True))
    features = window.compute()
    assert math.isnan(features.eye_closure_ratio) and math.isnan(features.blink_frequency)


def test_absent_vehicle_signals_are_nan_and_present_ones_are_measured():
    window = FeatureWindow(FeatureConfig(hours_awake_at_start=10.0))
    feed(window, 30.0, seconds=10.0)
    features = window.compute()
    assert math.isnan(features.steering_reversal_rate) and math.isnan(features.sdlp)
    assert math.isnan(features.voice_quality)
    assert features.time_awake == pytest.approx(10.0 + 10.0 / 3600, abs=1e-3)
    for i in range(1000):  # 10 s at 100 Hz, speed 20 +- 2 m/s over two sine periods: variance 2
        t = i / 100
        window.add_vehicle(VehicleSample(10.0 + t, speed=20.0 + 2.0 * math.sin(2 * math.pi * 0.2 * t),
                                         steering_angle=0.0, yaw_rate=0.0))
    features = window.compute()
    assert features.speed_variance == pytest.approx(2.0, rel=0.05)
    assert math.isnan(features.sdlp)  # no lane offset signal


def test_backwards_time_is_rejected_without_corrupting_state():
    window = FeatureWindow(FeatureConfig())
    feed(window, 30.0, seconds=5.0)
    before = window.compute()
    with pytest.raises(FeatureWindowError, match="not after"):
        window.add_observation(frame(1.0, closed=True))
    with pytest.raises(FeatureWindowError, match="not finite"):
        window.add_observation(frame(math.inf, closed=True))
    assert window.compute().eye_closure_ratio == before.eye_closure_ratio
