"""Yawns from the inner-lip opening, measured against the driver's own resting mouth.

The signal is the inner-lip opening r = |13-14| / |78-308| of the MediaPipe mesh
(`geometry.inner_lip_opening`): the gap between the lips over the inner mouth width. Lip thickness, which
dominates the outer-lip MAR of a closed mouth, does not enter it, and a smile (wider mouth, lips barely
apart) lowers it. What separates a yawn from talking is time as much as size:

* talking moves the jaw once per syllable (4-6 Hz), so the opening rises and falls within ~0.2 s and
  rarely stays wide: on the 10 real GRID talking-face clips (25 fps) r reaches 0.57 in single frames,
  but stays > 0.25 above the speaker's resting level for at most 0.44 s (0.5 s subsampled to 10 fps);
* a yawn holds a wide opening for seconds (the mouth opens ~0.5 s, stays open 1-5 s, closes).

Criterion (our measurements, see README "Perception"):

* video: the mouth is *wide* on a frame when r exceeds the driver's resting level by `opening_threshold`
  (0.25) and the outer-lip MAR exceeds `threshold` (0.6; the outer lips must agree). A run of wide frames is
  a yawning mouth (`yawning` per frame) once it has lasted `frame_hold_s` (0.3 s, longer than a syllable),
  or at once when r itself is above `still_threshold` (0.6, wider than any GRID talking frame); it is a
  YAWN event when it has lasted `min_duration_s` (yawn_min_duration, 1 s), reported when the mouth closes;
* still images (`per_frame=True`, unrelated images, no resting level): r > `still_threshold` and
  MAR > `threshold`.

The resting level (`MouthBaseline`) is a lower-envelope follower of r: it follows a closing mouth within
about a second and a rising one over tens of seconds, is never learnt from a wide-open mouth and is capped
at REST_MAX, so a driver who talks all the time or yawns on the first frame still gets a closed-mouth level.

Bad input: a frame without a face (or with an unmeasurable mouth) ends a run; two face frames more than
MAX_FRAME_GAP_S apart do not make one run, so a face that comes and goes never adds up to a yawn. A run that
already qualified when the face was lost is reported up to that frame (the yawn was seen).

Without an inner-lip value (`inner=None`, callers that only have the MAR) the detector is the MAR-threshold
detector it always was: wide = MAR > `threshold`, `yawning` from `min_duration_s` on.
"""

from __future__ import annotations

import math

from fatigue_llm.perception.types import DriverEvent, EventType

NAN = math.nan
# Our choices, from the measurements above.
REST_FALL_TAU_S = 1.0    # s; the resting level follows a closing mouth this fast (a few syllables)
REST_RISE_TAU_S = 30.0   # s; ... and a mouth that rests more open this slowly (much longer than a yawn)
REST_MAX = 0.3           # a resting inner-lip opening above this is not a resting mouth (GRID: <= 0.15)
REST_MAX_STEP_S = 1.0    # s; a gap between face frames counts at most this much in the resting level
MAX_FRAME_GAP_S = 0.5    # s; face frames further apart than this do not continue a run of wide frames


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class MouthBaseline:
    """The driver's resting inner-lip opening: a lower-envelope follower of the inner-lip opening.

    Starts at the first value (capped at `max_level`), then moves towards each new value with time constant
    `fall_tau_s` when the value is below it and `rise_tau_s` when above, never above `max_level`. Callers
    do not update it while the mouth is wide open, so yawns do not raise it.
    """

    def __init__(self, fall_tau_s: float = REST_FALL_TAU_S, rise_tau_s: float = REST_RISE_TAU_S,
                 max_level: float = REST_MAX) -> None:
        self.fall_tau = fall_tau_s
        self.rise_tau = rise_tau_s
        self.max_level = max_level
        self.level = NAN
        self._last_t: float | None = None

    def update(self, t: float, opening: float | None) -> None:
        """Add one frame; None/NaN (no face, unmeasurable mouth) pauses the clock."""
        if not _finite(opening):
            self._last_t = None
            return
        assert opening is not None
        if not math.isfinite(self.level):
            self.level = min(opening, self.max_level)
        elif self._last_t is not None:
            dt = min(max(t - self._last_t, 0.0), REST_MAX_STEP_S)
            tau = self.fall_tau if opening < self.level else self.rise_tau
            self.level = min(self.max_level, self.level + (1.0 - math.exp(-dt / tau)) * (opening - self.level))
        self._last_t = t

    def pause(self) -> None:
        """Do not count the time until the next update (the mouth was open or the face lost)."""
        self._last_t = None

    def reset(self) -> None:
        """Forget the driver."""
        self.level = NAN
        self._last_t = None


class YawnDetector:
    """Per-frame yawning mouth and YAWN events; see the module docstring for the criterion.

    `update(t, mar, inner)` returns (yawning, events). The YAWN event is emitted on the frame the mouth
    closes (start = first wide frame, duration up to that frame, magnitude = peak outer-lip MAR). With
    `per_frame=True` every yawning frame is a YAWN of its own with duration 0.
    """

    def __init__(self, threshold: float, min_duration_s: float, per_frame: bool = False, *,
                 opening_threshold: float = 0.25, still_threshold: float = 0.6,
                 frame_hold_s: float | None = None) -> None:
        self.threshold = threshold                  # outer-lip MAR gate
        self.min_duration = min_duration_s
        self.per_frame = per_frame
        self.opening_threshold = opening_threshold  # inner-lip opening above the resting level
        self.still_threshold = still_threshold      # absolute inner-lip opening
        self.frame_hold = min_duration_s if frame_hold_s is None else frame_hold_s
        self.baseline = MouthBaseline()
        self.mouth_wide = False                     # the last frame's mouth was wide open
        self.relative_opening = NAN                 # the last frame's inner-lip opening above the resting level
        self._open_since: float | None = None
        self._last_wide_t: float | None = None
        self._peak = 0.0
        self._instant = False                       # the current run reached still_threshold

    def update(self, t: float, mar: float | None, inner: float | None = None
               ) -> tuple[bool, tuple[DriverEvent, ...]]:
        """(yawning, events) for one frame: `mar` the outer-lip MAR, `inner` the inner-lip opening
        (None: MAR only); None/NaN `mar` without a face."""
        legacy = inner is None
        face = _finite(mar)
        if self.per_frame:
            return self._still(t, mar, inner, legacy)
        events: tuple[DriverEvent, ...] = ()
        if self._open_since is not None and self._last_wide_t is not None and face \
                and t - self._last_wide_t > MAX_FRAME_GAP_S:
            events = self._close(self._last_wide_t)   # too long unseen: the run ended at the last wide frame
        self.relative_opening = NAN
        if legacy:
            wide = face and mar > self.threshold  # type: ignore[operator]
            instant = False
        elif face and _finite(inner):
            assert inner is not None
            if not math.isfinite(self.baseline.level):
                self.baseline.update(t, inner)
            self.relative_opening = inner - self.baseline.level
            wide = self.relative_opening > self.opening_threshold and mar > self.threshold  # type: ignore[operator]
            instant = wide and inner > self.still_threshold
        else:
            wide = instant = False
        self.mouth_wide = wide
        if not face:
            self.baseline.update(t, None)
        if wide:
            if self._open_since is None:
                self._open_since, self._peak, self._instant = t, 0.0, False
            self._last_wide_t = t
            self._peak = max(self._peak, float(mar))  # type: ignore[arg-type]
            self._instant = self._instant or instant
            self.baseline.pause()
            return self._instant or t - self._open_since >= self.frame_hold, events
        if not legacy and face:
            self.baseline.update(t, inner)
        if self._open_since is None:
            return False, events
        return False, events + self._close(t)

    def _close(self, t: float) -> tuple[DriverEvent, ...]:
        """End the run of wide frames at time t; the YAWN event if it lasted min_duration."""
        assert self._open_since is not None
        start, self._open_since, self._last_wide_t = self._open_since, None, None
        duration = t - start
        if duration >= self.min_duration:
            return (DriverEvent(EventType.YAWN, start, duration, self._peak),)
        return ()

    def _still(self, t: float, mar: float | None, inner: float | None, legacy: bool
               ) -> tuple[bool, tuple[DriverEvent, ...]]:
        wide = _finite(mar) and mar > self.threshold  # type: ignore[operator]
        if not legacy:
            wide = wide and _finite(inner) and inner > self.still_threshold  # type: ignore[operator]
        self.mouth_wide = wide
        return (True, (DriverEvent(EventType.YAWN, t, 0.0, float(mar)),)) if wide else (False, ())  # type: ignore[arg-type]

    def reset(self) -> None:
        """Forget the driver and any opening in progress."""
        self.baseline.reset()
        self._open_since = self._last_wide_t = None
        self.mouth_wide = False
