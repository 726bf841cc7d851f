"""Driver-state detectors: eye closure and blinks, microsleeps, nods, yawns, face loss.

Every detector is a small state machine driven by frame timestamps (seconds), never by frame counts, so it
behaves the same at 10, 15 or 30 fps and across dropped frames. A frame without a face is passed as
`None`: it never counts as closed eyes or an open mouth, and it ends whatever was in progress (see each
class for how).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from fatigue_llm.config import ConfigError
from fatigue_llm.perception.blinks import BlinkDetector, BlinkRecord
from fatigue_llm.perception.config import PerceptionConfig
from fatigue_llm.perception.types import DriverEvent, EventType
from fatigue_llm.perception.yawns import YawnDetector

NAN = math.nan
_BLINK_KINDS = (EventType.BLINK, EventType.SLOW_BLINK)
# Our choices (no literature value): enough samples for a stable median even from a slow camera, and time
# constants well apart from the events they must not absorb.
CALIBRATION_MIN_SAMPLES = 10    # face frames needed before a baseline is trusted (1 s at 10 fps)
MAX_CALIBRATION_STEP_S = 1.0    # s; a gap between face frames counts at most this much towards calibration
NOD_BASELINE_TAU_S = 10.0       # s; pitch baseline time constant, 5x the longest nod (nod_max_duration 2 s)
NOD_RELEASE_FRACTION = 0.5      # hysteresis: a nod has ended when the pitch is back within half the threshold


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


# ------------------------------------------------------------------------------------------------- eyes
class EarCalibration:
    """Per-driver open-eye EAR baseline, learnt from the first `duration_s` of face-visible time.

    The baseline is the median EAR of those frames: eyes are closed ~5 % of the time in alert drivers
    (15-20 blinks/min of 0.1-0.3 s), far too little to move a median. Until then `threshold` is the fallback.
    """

    def __init__(self, duration_s: float, closed_fraction: float, fallback_threshold: float) -> None:
        self.duration_s = duration_s
        self.closed_fraction = closed_fraction
        self.fallback_threshold = fallback_threshold
        self.baseline = NAN
        self._samples: list[float] = []
        self._visible_s = 0.0
        self._last_t: float | None = None

    @property
    def calibrated(self) -> bool:
        return math.isfinite(self.baseline)

    @property
    def threshold(self) -> float:
        """EAR below which the eyes count as closed."""
        return self.closed_fraction * self.baseline if self.calibrated else self.fallback_threshold

    @property
    def open_level(self) -> float:
        """The open-eye EAR: the baseline, or before calibration the one implied by the fallback threshold."""
        return self.baseline if self.calibrated else self.fallback_threshold / self.closed_fraction

    def update(self, t: float, ear: float | None) -> None:
        """Add one frame; `ear` None/NaN (no face) pauses the calibration clock."""
        if self.calibrated:
            return
        if not _finite(ear):
            self._last_t = None
            return
        if self._last_t is not None:
            self._visible_s += min(t - self._last_t, MAX_CALIBRATION_STEP_S)
        self._last_t = t
        self._samples.append(float(ear))
        if self._visible_s >= self.duration_s and len(self._samples) >= CALIBRATION_MIN_SAMPLES:
            self.baseline = float(np.median(self._samples))
            self._samples = []

    def reset(self) -> None:
        """Forget the driver (e.g. a driver change) and calibrate again."""
        self.baseline = NAN
        self._samples = []
        self._visible_s = 0.0
        self._last_t = None


@dataclass(frozen=True)
class EyeClosureRecord:
    """A finished run of closed-eye frames: from the first closed frame to the first frame after it."""

    start_s: float
    end_s: float
    kind: EventType            # BLINK, SLOW_BLINK or MICROSLEEP
    interrupted: bool = False  # ended by losing the face, not by the eyes opening

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class EyeState:
    ear_threshold: float
    calibrated: bool
    eyes_closed: bool
    eye_closure: float         # NaN without a face
    closed_duration_s: float   # time since the current closure started, 0 when open
    events: tuple[DriverEvent, ...] = ()
    finished: EyeClosureRecord | None = None
    blink: bool = False        # inside a blink dip (perception/blinks.py) that already qualifies
    blink_finished: BlinkRecord | None = None  # a blink dip that ended at the previous frame


class EyeStateDetector:
    """Closed eyes, PERCLOS closure, blinks, slow blinks and microsleeps from the EAR series.

    * closed: EAR < closed_fraction x baseline (fallback threshold until calibrated);
    * `eye_closure` = (baseline - EAR) / (baseline - full-closure EAR), clipped to [0, 1], where the
      full-closure EAR is `full_closure_ear_fraction` x baseline; PERCLOS P80 counts closure >= 0.8;
    * a closure that ends (eyes open again) shorter than `microsleep_duration` is a BLINK, or a SLOW_BLINK
      when longer than `slow_blink_duration`; its event carries start and duration;
    * MICROSLEEP is emitted once per closure at onset, on the first frame with closed time >=
      `microsleep_duration` (duration = closed time so far);
    * a frame without a face ends a closure: a blink in progress is dropped (its end is unknown), a
      microsleep already reported is finished as interrupted;
    * blinks as dips below an adapting open-eye level (`BlinkDetector`, perception/blinks.py) give the
      per-frame `blink` flag and `blink_finished` (first to last frame of the dip, as annotators mark a
      blink). A dip without a closed run inside it (a slow camera caught the lid half-closed) is reported as
      a BLINK when it ends (start = its first frame, duration = to its last frame); a dip with one takes the
      closure's kind, whose event the closed-run rules above emit.
    """

    def __init__(self, config: PerceptionConfig) -> None:
        if not 0.0 <= config.full_closure_ear_fraction < config.closed_fraction:
            raise ConfigError(
                "parameter 'full_closure_ear_fraction' must be in [0, closed_fraction), got "
                f"{config.full_closure_ear_fraction} (closed_fraction={config.closed_fraction})"
            )
        self.config = config
        self.calibration = EarCalibration(config.calibration_duration, config.closed_fraction,
                                          config.fallback_ear_threshold)
        self._closed_since: float | None = None
        self._microsleep_reported = False
        self.blinks = BlinkDetector(config.blink_baseline_window, config.blink_min_drop,
                                    max_duration_s=config.blink_max_duration)
        self._run_start: float | None = None             # start of the latest closed run
        self._run_kind = EventType.BLINK                  # its kind once known
        self._pending: tuple[DriverEvent, ...] = ()      # closed-run blink events waiting for their dip

    def update(self, t: float, ear: float | None) -> EyeState:
        """One frame at time `t` (s) with the mean EAR of both eyes, or None/NaN without a face."""
        in_dip_before = self.blinks.in_dip
        state = self._update_closure(t, ear)
        dip = self.blinks.update(t, ear)
        if state.finished is not None:
            self._run_kind = state.finished.kind
        if self._closed_since is not None and self._microsleep_reported:
            self._run_kind = EventType.MICROSLEEP
        finished = dip.finished
        events = tuple(e for e in state.events if e.type not in _BLINK_KINDS)
        # a closed run's BLINK / SLOW_BLINK waits for the end of its dip: if the dip turns out longer than a
        # blink (eyes covered, a new level), it was no blink
        self._pending += tuple(e for e in state.events if e.type in _BLINK_KINDS)
        if finished is not None:
            if self._run_start is not None and finished.start_s <= self._run_start <= finished.end_s:
                finished = replace(finished, kind=self._run_kind)   # its closure reports the event
                events += self._pending[:1]
            else:
                events += self._pending[:1] + (DriverEvent(EventType.BLINK, finished.start_s, finished.duration_s),)
            self._pending = ()
        elif self._pending and not self.blinks.in_dip:
            if not _finite(ear) or (in_dip_before and self.blinks.last_dip_too_long):
                self._pending = ()          # the face was lost, or the dip was no blink
            else:                           # no dip around it (e.g. before the open level is known)
                events += self._pending
                self._pending = ()
        in_blink = dip.in_blink and not self._microsleep_reported
        return replace(state, events=events, blink=in_blink, blink_finished=finished)

    def _update_closure(self, t: float, ear: float | None) -> EyeState:
        cal = self.calibration
        cal.update(t, ear)
        if not _finite(ear):
            return self._face_lost(t)
        assert ear is not None
        open_level = cal.open_level
        closed_level = self.config.full_closure_ear_fraction * open_level
        closure = min(1.0, max(0.0, (open_level - ear) / (open_level - closed_level)))
        if ear < cal.threshold:
            return self._closed(t, closure)
        finished = None
        events: tuple[DriverEvent, ...] = ()
        if self._closed_since is not None:
            finished = self._finish(t, interrupted=False)
            if finished.kind != EventType.MICROSLEEP:
                events = (DriverEvent(finished.kind, finished.start_s, finished.duration_s),)
        return EyeState(cal.threshold, cal.calibrated, False, closure, 0.0, events, finished)

    def _closed(self, t: float, closure: float) -> EyeState:
        if self._closed_since is None:
            self._closed_since = t
            self._run_start, self._run_kind = t, EventType.BLINK
        closed_for = t - self._closed_since
        events: tuple[DriverEvent, ...] = ()
        if closed_for >= self.config.microsleep_duration and not self._microsleep_reported:
            self._microsleep_reported = True
            events = (DriverEvent(EventType.MICROSLEEP, self._closed_since, closed_for),)
        cal = self.calibration
        return EyeState(cal.threshold, cal.calibrated, True, closure, closed_for, events)

    def _face_lost(self, t: float) -> EyeState:
        finished = None
        if self._closed_since is not None:
            if self._microsleep_reported:
                finished = self._finish(t, interrupted=True)
            else:
                self._closed_since = None
        cal = self.calibration
        return EyeState(cal.threshold, cal.calibrated, False, NAN, 0.0, (), finished)

    def _finish(self, t: float, interrupted: bool) -> EyeClosureRecord:
        assert self._closed_since is not None
        duration = t - self._closed_since
        if self._microsleep_reported:
            kind = EventType.MICROSLEEP
        elif duration > self.config.slow_blink_duration:
            kind = EventType.SLOW_BLINK
        else:
            kind = EventType.BLINK
        record = EyeClosureRecord(self._closed_since, t, kind, interrupted)
        self._closed_since = None
        self._microsleep_reported = False
        return record


# ------------------------------------------------------------------------------------------------- head
class NodDetector:
    """NOD: the pitch rises (chin down) more than `threshold_rad` above a slowly adapting baseline and comes
    back within `max_duration_s`.

    The baseline is an exponential average (time constant NOD_BASELINE_TAU_S) of the pitch while no dip is
    in progress; it can be frozen (e.g. while yawning, when the open jaw biases the pose fit). A dip that
    lasts longer than `max_duration_s` is a posture change, not a nod: no event, and the baseline follows it.
    The event starts when the threshold is crossed and ends when the pitch is back within
    NOD_RELEASE_FRACTION x threshold; its magnitude is the peak rise (rad). Losing the face cancels a dip,
    and a dip already in progress when the face comes back is not counted.
    """

    def __init__(self, threshold_rad: float, max_duration_s: float,
                 baseline_tau_s: float = NOD_BASELINE_TAU_S) -> None:
        self.threshold = threshold_rad
        self.max_duration = max_duration_s
        self.tau = baseline_tau_s
        self.baseline = NAN
        self._last_t: float | None = None
        self._dip_start: float | None = None
        self._peak = 0.0
        self._armed = False  # a dip counts only if it was seen starting from below the threshold

    def update(self, t: float, pitch: float | None, freeze_baseline: bool = False) -> tuple[DriverEvent, ...]:
        """One frame: pitch in rad (chin down positive) or None/NaN without a face or pose."""
        last_t, self._last_t = self._last_t, t
        if not _finite(pitch):
            self._dip_start = None
            self._last_t = None
            self._armed = False
            return ()
        assert pitch is not None
        if not math.isfinite(self.baseline):
            self.baseline = pitch
            return ()
        rise = pitch - self.baseline
        if self._dip_start is None:
            if rise > self.threshold and self._armed:
                self._dip_start, self._peak = t, rise
            elif rise <= self.threshold:
                self._armed = True
                if not freeze_baseline and last_t is not None:
                    self._adapt(pitch, t - last_t)
            return ()
        self._peak = max(self._peak, rise)
        duration = t - self._dip_start
        if rise < NOD_RELEASE_FRACTION * self.threshold:
            start, self._dip_start = self._dip_start, None
            if duration <= self.max_duration:
                return (DriverEvent(EventType.NOD, start, duration, self._peak),)
        elif duration > self.max_duration and last_t is not None and not freeze_baseline:
            self._adapt(pitch, t - last_t)  # held down: a new posture the baseline should learn
        return ()

    def _adapt(self, pitch: float, dt: float) -> None:
        alpha = 1.0 - math.exp(-max(dt, 0.0) / self.tau)
        self.baseline += alpha * (pitch - self.baseline)


# ------------------------------------------------------------------------------------------------ mouth
# YawnDetector (inner-lip opening against the driver's resting mouth) lives in perception/yawns.py; it is
# re-exported here for callers that import it from this module.


# ------------------------------------------------------------------------------------------------- face
class FaceLostDetector:
    """FACE_LOST once per absence, on the first faceless frame at least `duration_s` after the absence
    began (start = first faceless frame, duration = time without a face so far)."""

    def __init__(self, duration_s: float) -> None:
        self.duration = duration_s
        self._lost_since: float | None = None
        self._reported = False

    def update(self, t: float, face_found: bool) -> tuple[DriverEvent, ...]:
        if face_found:
            self._lost_since, self._reported = None, False
            return ()
        if self._lost_since is None:
            self._lost_since = t
        absent = t - self._lost_since
        if not self._reported and absent >= self.duration:
            self._reported = True
            return (DriverEvent(EventType.FACE_LOST, self._lost_since, absent),)
        return ()


# ------------------------------------------------------------------------------------------- all of them
@dataclass(frozen=True)
class FaceMeasurement:
    """Geometry of one frame's face; NaN where it could not be measured."""

    ear: float
    mar: float
    pitch: float  # rad, chin down positive
    inner_lip: float = NAN  # inner-lip opening (geometry.inner_lip_opening); NaN: decide yawns on the MAR


@dataclass(frozen=True)
class DriverState:
    eye: EyeState
    yawning: bool
    events: tuple[DriverEvent, ...]


class DriverStateDetectors:
    """All detectors of one driver, fed one frame at a time in timestamp order."""

    def __init__(self, config: PerceptionConfig, still_images: bool = False) -> None:
        self.eyes = EyeStateDetector(config)
        self.nods = NodDetector(math.radians(config.nod_pitch_threshold_deg), config.nod_max_duration)
        self.yawns = YawnDetector(config.yawn_mar_threshold, config.yawn_min_duration, per_frame=still_images,
                                  opening_threshold=config.yawn_opening_threshold,
                                  still_threshold=config.yawn_inner_threshold,
                                  frame_hold_s=config.yawn_frame_hold)
        self.face_lost = FaceLostDetector(config.face_lost_duration)

    def update(self, t: float, face: FaceMeasurement | None) -> DriverState:
        """Advance every detector to time `t` (s); `face` None when no face was found."""
        eye = self.eyes.update(t, face.ear if face else None)
        mar = face.mar if face else None
        inner = face.inner_lip if face and math.isfinite(face.inner_lip) else None
        yawning, yawn_events = self.yawns.update(t, mar, inner)
        mouth_open = _finite(mar) and mar > self.yawns.threshold  # type: ignore[operator]
        nod_events = self.nods.update(t, face.pitch if face else None, freeze_baseline=mouth_open)
        lost_events = self.face_lost.update(t, face is not None)
        return DriverState(eye, yawning, eye.events + nod_events + yawn_events + lost_events)
