"""Detector state machines on synthetic EAR / MAR / pitch time series (no camera, no MediaPipe)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import pytest

from fatigue_llm.config import ConfigError
from fatigue_llm.perception.config import PerceptionConfig
from fatigue_llm.perception.detectors import (
    DriverStateDetectors,
    EarCalibration,
    EyeStateDetector,
    FaceLostDetector,
    FaceMeasurement,
    NodDetector,
    YawnDetector,
)
from fatigue_llm.perception.types import DriverEvent, EventType

CONFIG = PerceptionConfig()
OPEN, CLOSED = 0.30, 0.10
NAN = math.nan


def times(duration: float, fps: float, start: float = 0.0) -> np.ndarray:
    return start + np.arange(int(round(duration * fps))) / fps


def run_eyes(ts: Iterable[float], ear: Callable[[float], float | None],
             detector: EyeStateDetector | None = None):
    detector = detector or EyeStateDetector(CONFIG)
    states = [(t, detector.update(float(t), ear(float(t)))) for t in ts]
    return detector, states


def events_of(states, kind: EventType | None = None) -> list[tuple[float, DriverEvent]]:
    return [(t, e) for t, s in states for e in s.events if kind is None or e.type == kind]


def calibrated_detector(fps: float = 30.0) -> tuple[EyeStateDetector, float]:
    """A detector calibrated on 6 s of open eyes; returns it and the next timestamp."""
    detector, _ = run_eyes(times(6.0, fps), lambda t: OPEN)
    assert detector.calibration.calibrated
    return detector, 6.0


def closure(start: float, duration: float, value: float = CLOSED) -> Callable[[float], float]:
    return lambda t: value if start <= t < start + duration - 1e-9 else OPEN


# ---------------------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("fps", [10.0, 15.0, 30.0])
def test_calibration_takes_calibration_duration_of_face_time_at_any_frame_rate(fps: float) -> None:
    cal = EarCalibration(5.0, 0.65, 0.2)
    done_at = None
    for t in times(8.0, fps):
        cal.update(float(t), OPEN)
        if cal.calibrated and done_at is None:
            done_at = t
    assert done_at == pytest.approx(5.0, abs=1.01 / fps)
    assert cal.baseline == pytest.approx(OPEN)
    assert cal.threshold == pytest.approx(0.65 * OPEN)


def test_calibration_uses_fallback_before_and_ignores_blinks_and_face_gaps() -> None:
    cal = EarCalibration(5.0, 0.65, 0.2)
    assert not cal.calibrated and cal.threshold == 0.2
    for t in times(10.0, 15.0):
        if 2.0 <= t < 6.0:
            cal.update(float(t), None)          # 4 s without a face do not count
        else:
            blink = any(b <= t < b + 0.2 for b in (0.5, 1.5, 7.0))
            cal.update(float(t), CLOSED if blink else OPEN + 0.01 * math.sin(t))
        if t < 6.9:
            assert not cal.calibrated, t     # 2 s before the gap + 4.9 s after it < 5 s of face time
    assert cal.calibrated
    assert cal.baseline == pytest.approx(OPEN, abs=0.011)


# ---------------------------------------------------------------------------------------------- blinks
@pytest.mark.parametrize("fps", [10.0, 15.0, 30.0])
def test_blink_reported_at_reopening_with_start_and_duration(fps: float) -> None:
    detector, t0 = calibrated_detector(fps)
    _, states = run_eyes(times(2.0, fps, t0), closure(t0 + 0.5, 0.2), detector)
    blinks = events_of(states)
    assert [e.type for _, e in blinks] == [EventType.BLINK]
    reported_at, blink = blinks[0]
    assert blink.start_s == pytest.approx(t0 + 0.5, abs=1.01 / fps)
    assert blink.duration_s == pytest.approx(0.2, abs=1.01 / fps)
    assert reported_at == pytest.approx(blink.start_s + blink.duration_s)
    closed = [s.eyes_closed for _, s in states]
    assert sum(closed) == pytest.approx(0.2 * fps, abs=1)


def test_slow_blink_and_closure_scale() -> None:
    detector, t0 = calibrated_detector()
    _, states = run_eyes(times(2.0, 30.0, t0), closure(t0 + 0.5, 0.5), detector)
    assert [e.type for _, e in events_of(states)] == [EventType.SLOW_BLINK]
    assert detector.calibration.calibrated
    full = CONFIG.full_closure_ear_fraction * OPEN
    assert detector.update(t0 + 3.0, OPEN).eye_closure == pytest.approx(0.0)
    assert detector.update(t0 + 3.1, full).eye_closure == pytest.approx(1.0)
    assert detector.update(t0 + 3.2, 0.01).eye_closure == pytest.approx(1.0)
    assert detector.update(t0 + 3.3, (OPEN + full) / 2).eye_closure == pytest.approx(0.5)
    assert detector.update(t0 + 3.4, 0.5).eye_closure == pytest.approx(0.0)


def test_uses_fallback_threshold_before_calibration() -> None:
    detector = EyeStateDetector(CONFIG)
    state = detector.update(0.0, 0.19)
    assert state.eyes_closed and not state.calibrated and state.ear_threshold == CONFIG.fallback_ear_threshold
    assert not detector.update(0.1, 0.21).eyes_closed


# ---------------------------------------------------------------------------------------------- microsleep
@pytest.mark.parametrize("fps", [10.0, 15.0, 30.0])
def test_microsleep_reported_once_at_onset(fps: float) -> None:
    detector, t0 = calibrated_detector(fps)
    start = t0 + 0.5
    _, states = run_eyes(times(4.0, fps, t0), closure(start, 2.0), detector)
    events = events_of(states)
    assert [e.type for _, e in events] == [EventType.MICROSLEEP]     # no blink when the eyes reopen
    reported_at, event = events[0]
    assert event.start_s == pytest.approx(start, abs=1.01 / fps)
    assert reported_at - event.start_s >= CONFIG.microsleep_duration
    assert reported_at - event.start_s < CONFIG.microsleep_duration + 1.01 / fps   # at onset, not at the end
    assert event.duration_s == pytest.approx(reported_at - event.start_s)
    longest = max(s.closed_duration_s for _, s in states)
    assert longest == pytest.approx(2.0, abs=1.01 / fps)


def test_microsleep_with_irregular_frame_times() -> None:
    rng = np.random.default_rng(3)
    detector, t0 = calibrated_detector()
    ts = t0 + np.cumsum(rng.uniform(0.02, 0.2, 60))         # 5-50 fps, jittery
    _, states = run_eyes(ts, closure(t0 + 1.0, 2.5), detector)
    ms = events_of(states, EventType.MICROSLEEP)
    assert len(ms) == 1
    reported_at, event = ms[0]
    first_closed = min(t for t, s in states if s.eyes_closed)
    assert event.start_s == first_closed
    previous = max(t for t, _ in states if t < reported_at)
    assert previous - first_closed < CONFIG.microsleep_duration <= reported_at - first_closed


def test_face_lost_ends_a_blink_without_reporting_it() -> None:
    detector, t0 = calibrated_detector()
    ear = {}
    for t in times(2.0, 30.0, t0):
        ear[float(t)] = CLOSED if t0 + 0.5 <= t < t0 + 0.6 else (None if t0 + 0.6 <= t < t0 + 0.8 else OPEN)
    _, states = run_eyes(ear, ear.get, detector)
    assert events_of(states) == []
    faceless = [s for t, s in states if ear[t] is None]
    assert faceless and all(not s.eyes_closed and math.isnan(s.eye_closure) and s.closed_duration_s == 0
                            for s in faceless)


def test_face_lost_after_microsleep_finishes_it_as_interrupted() -> None:
    detector, t0 = calibrated_detector()
    ear = {float(t): (CLOSED if t < t0 + 1.5 else None) for t in times(2.0, 30.0, t0)}
    _, states = run_eyes(ear, ear.get, detector)
    assert [e.type for _, e in events_of(states)] == [EventType.MICROSLEEP]
    finished = [s.finished for _, s in states if s.finished]
    assert len(finished) == 1 and finished[0].interrupted and finished[0].kind == EventType.MICROSLEEP
    assert finished[0].duration_s == pytest.approx(1.5, abs=0.04)


def test_full_closure_fraction_must_be_below_closed_fraction() -> None:
    with pytest.raises(ConfigError, match="full_closure_ear_fraction"):
        EyeStateDetector(PerceptionConfig(full_closure_ear_fraction=0.7))


# ------------------------------------------------------------------------------------------------- nods
def nod_series(ts, base: float, dips: list[tuple[float, float, float]]):
    """pitch(t): base plus raised-cosine dips (start, duration, peak rad)."""
    def pitch(t: float) -> float:
        for start, duration, peak in dips:
            if start <= t <= start + duration:
                return base + peak * 0.5 * (1 - math.cos(2 * math.pi * (t - start) / duration))
        return base
    return pitch


def run_nods(ts, pitch, detector: NodDetector | None = None, **kwargs) -> list[tuple[float, DriverEvent]]:
    detector = detector or NodDetector(math.radians(12), 2.0, **kwargs)
    return [(float(t), e) for t in ts for e in detector.update(float(t), pitch(float(t)))]


@pytest.mark.parametrize("fps", [10.0, 30.0])
def test_nod_detected_relative_to_baseline(fps: float) -> None:
    peak = math.radians(20)
    ts = times(12.0, fps)
    events = run_nods(ts, nod_series(ts, 0.25, [(5.0, 1.0, peak)]))
    assert len(events) == 1
    _, nod = events[0]
    assert nod.type == EventType.NOD
    assert nod.magnitude == pytest.approx(peak, abs=math.radians(1))
    # threshold 12 of 20 deg is crossed ~0.28 s into a 1-s raised cosine; release at 6 deg ~0.82 s
    assert nod.start_s == pytest.approx(5.28, abs=1.5 / fps)
    assert nod.duration_s == pytest.approx(0.54, abs=2.5 / fps)


def test_small_dips_long_dips_and_slow_drift_are_not_nods() -> None:
    ts = times(90.0, 15.0)
    small = run_nods(ts, nod_series(ts, 0.0, [(5.0, 1.0, math.radians(10))]))
    held = run_nods(ts, lambda t: math.radians(25) if 10 <= t < 15 else 0.0)   # 5 s head down
    drift = run_nods(ts, lambda t: math.radians(30) * t / 90)                   # 30 deg over 90 s
    assert small == [] and held == [] and drift == []


def test_nod_baseline_learns_a_held_posture() -> None:
    ts = times(60.0, 15.0)
    detector = NodDetector(math.radians(12), 2.0)
    run_nods(ts, lambda t: math.radians(20) if t >= 5 else 0.0, detector)
    assert detector.baseline == pytest.approx(math.radians(20), abs=math.radians(3))


def test_face_lost_cancels_a_nod_and_freeze_keeps_the_baseline() -> None:
    ts = times(10.0, 15.0)
    dip = nod_series(ts, 0.0, [(5.0, 1.0, math.radians(20))])
    assert run_nods(ts, lambda t: None if 5.4 <= t <= 5.6 else dip(t)) == []
    detector = NodDetector(math.radians(12), 2.0)
    for t in ts:
        detector.update(float(t), math.radians(8), freeze_baseline=t > 0)
    assert detector.baseline == pytest.approx(math.radians(8))   # first value seeds it
    detector2 = NodDetector(math.radians(12), 2.0)
    detector2.update(0.0, 0.0)
    for t in ts[1:]:
        detector2.update(float(t), math.radians(8), freeze_baseline=True)
    assert detector2.baseline == 0.0


# ------------------------------------------------------------------------------------------------ yawns
def run_yawns(ts, mar, detector: YawnDetector):
    return [(float(t), *detector.update(float(t), mar(float(t)))) for t in ts]


@pytest.mark.parametrize("fps", [10.0, 30.0])
def test_yawn_needs_min_duration_and_is_reported_when_the_mouth_closes(fps: float) -> None:
    ts = times(10.0, fps)
    mar = lambda t: 0.8 if 2.0 <= t < 4.5 else (0.9 if 6.0 <= t < 6.5 else 0.35)  # noqa: E731
    out = run_yawns(ts, mar, YawnDetector(0.6, 1.0))
    events = [(t, e) for t, _, evs in out for e in evs]
    assert len(events) == 1
    t_end, yawn = events[0]
    assert yawn.type == EventType.YAWN and yawn.magnitude == pytest.approx(0.8)
    assert yawn.start_s == pytest.approx(2.0, abs=1.01 / fps)
    assert yawn.duration_s == pytest.approx(2.5, abs=1.01 / fps)
    assert t_end == pytest.approx(4.5, abs=1.01 / fps)
    yawning = [t for t, flag, _ in out if flag]
    assert min(yawning) == pytest.approx(3.0, abs=1.01 / fps) and max(yawning) < 4.5


def test_face_lost_ends_a_yawn_and_still_images_decide_per_frame() -> None:
    ts = times(5.0, 15.0)
    out = run_yawns(ts, lambda t: None if t >= 3.0 else (0.8 if t >= 1.0 else 0.3), YawnDetector(0.6, 1.0))
    events = [e for _, _, evs in out for e in evs]
    assert len(events) == 1 and events[0].duration_s == pytest.approx(2.0, abs=0.07)
    still = YawnDetector(0.6, 1.0, per_frame=True)
    flags = [still.update(float(i), m) for i, m in enumerate([0.3, 0.8, 0.3, NAN, 0.7])]
    assert [f for f, _ in flags] == [False, True, False, False, True]
    assert [e.magnitude for _, evs in flags for e in evs] == [0.8, 0.7]


# -------------------------------------------------------------------------------------------- face lost
def test_face_lost_reported_once_per_absence_after_duration() -> None:
    detector = FaceLostDetector(0.5)
    ts = times(6.0, 15.0)
    present = lambda t: not (1.0 <= t < 1.3 or 2.0 <= t < 3.0 or 4.0 <= t < 5.0)  # noqa: E731
    events = [(float(t), e) for t in ts for e in detector.update(float(t), present(float(t)))]
    assert [e.start_s for _, e in events] == pytest.approx([2.0, 4.0])
    for t, e in events:
        assert e.type == EventType.FACE_LOST and e.duration_s == pytest.approx(t - e.start_s)
        assert 0.5 <= e.duration_s < 0.5 + 1.01 / 15


# ------------------------------------------------------------------------------------------ all together
def test_driver_state_freezes_the_nod_baseline_while_the_mouth_is_open() -> None:
    detectors = DriverStateDetectors(CONFIG)
    for t in times(20.0, 15.0):
        mouth_open = 5.0 <= t < 15.0
        face = FaceMeasurement(OPEN, 0.8 if mouth_open else 0.35, math.radians(-10 if mouth_open else 0))
        detectors.update(float(t), face)
    assert detectors.nods.baseline == pytest.approx(0.0, abs=math.radians(0.5))


def test_driver_state_without_face() -> None:
    detectors = DriverStateDetectors(CONFIG)
    states = [detectors.update(float(t), None) for t in times(1.0, 15.0)]
    assert [e.type for s in states for e in s.events] == [EventType.FACE_LOST]
    assert not any(s.eye.eyes_closed or s.yawning for s in states)


def test_calibration_reset_learns_a_new_driver() -> None:
    cal = EarCalibration(1.0, 0.65, 0.2)
    for t in times(2.0, 15.0):
        cal.update(float(t), 0.30)
    cal.reset()
    assert not cal.calibrated and cal.threshold == 0.2
    for t in times(2.0, 15.0, 10.0):
        cal.update(float(t), 0.24)
    assert cal.baseline == pytest.approx(0.24)
