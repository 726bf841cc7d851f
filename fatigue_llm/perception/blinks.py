"""Blinks as dips of the eye-opening signal (EAR) below the driver's own, continuously adapting open-eye level.

Why this design (decided by measurement on the camera model, `fatigue_llm/sim/camera_model.py`, and on real
GRID clips; numbers in bench/results/ and the test file):

* A fixed EAR threshold (e.g. 0.2) and a threshold learnt once from the first seconds both fail when the
  open-eye level moves (head pose, lighting, squinting during a drive) and when a slow camera shows a blink
  as one frame of a half-closed lid: the frame never reaches a "closed" threshold.
* Soukupova & Cech (2016, "Real-Time Eye Blink Detection using Facial Landmarks", CVWW) classify a
  13-frame EAR window with a linear SVM trained at 30 fps. The window is a frame count, so at 5 fps it spans
  2.6 s (several blinks) and the classifier sees a different shape at every rate; it also needs labelled
  training data we do not have. Not used.
* Adaptive-EAR methods (e.g. Dewi et al. 2022, "Adjusting eye aspect ratio for strong eye blink detection
  based on facial landmarks", PeerJ CS) set the threshold from the driver's own EAR statistics; peak/valley
  detection with a prominence criterion (as scipy.signal.find_peaks does) judges a dip by how far it falls
  below its surroundings rather than by an absolute level. We combine both, online and on timestamps:

1. Open-eye level `baseline` = median of the EAR over the last `baseline_window` seconds of frames that were
   not inside a dip; its spread `sigma` = 1.4826 x MAD of the successive differences of the same samples
   / sqrt(2) (sensor noise, JPEG, jitter of the mesh). Both keep adapting for the whole drive.
2. A dip starts on the first frame whose relative drop (baseline - EAR) / baseline exceeds
   `edge` = max(edge_drop, EDGE_SIGMAS x sigma_rel) -- the lid has started to fall -- and ends on the last
   frame before the drop is back under it. Those are the blink's first and last frames as annotators mark
   them (lid starts falling -> lid back up).
3. The dip is a blink when its deepest frame drops at least `depth` = max(min_drop, DEPTH_SIGMAS x
   sigma_rel) below the open level -- one half-closed frame of a 5-fps camera is enough -- with a
   prominence on both sides: the EAR fell into it from the local level just before (within FALL_MAX_S plus
   one frame interval; frames of a shallow stretch before that are trimmed off) and rose out of it, each by
   >= PROMINENCE x depth (as scipy.signal.find_peaks' prominence, the lower side counts); the open frames
   around it are >= MIN_BLINK_S apart (no lid closes and reopens faster: a one-frame flicker of the mesh at
   30 fps is no blink); and it lasted at most `max_duration`. The caller (EyeStateDetector) classifies it
   as BLINK / SLOW_BLINK from its closed-eye run.
4. A shallow dip that lasts longer than `max_duration` is a new open-eye level (squint, new head pose,
   lighting): the baseline restarts from the samples of that dip, no blink. Likewise eyes wider than the
   open level for RISE_SHIFT_S (a squint released) restart it from those frames. The noise `sigma` comes
   from successive differences, so such a level change does not inflate it.
5. A frame without a face cancels a dip in progress, and a dip cannot start on the first face frame after
   a gap: a face that comes and goes never makes a blink.

Frame times only (no frame counts), so it works at 5-30 fps and with jitter. Cost: two medians of at most
`baseline_window` x fps samples per frame (~30 us at 30 fps).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from fatigue_llm.perception.types import EventType

# Our choices, measured on the camera model (see module docstring and test/core/test_blinks.py).
EDGE_SIGMAS = 3.0          # an edge frame drops >= 3 sigma below the baseline ...
DEPTH_SIGMAS = 7.0         # ... and a blink's deepest frame >= 6 sigma
MIN_BASELINE_SAMPLES = 6   # face frames before a baseline is trusted
MIN_BASELINE_SPAN_S = 1.5  # s of face time before a baseline is trusted
MIN_SIGMA_REL = 0.004      # floor of the relative EAR noise (a perfectly still synthetic face has ~0)
FALL_MAX_S = 0.25          # s from the dip's first frame to its blink depth (+ one frame interval)
LONG_DIP_MAX_S = 30.0      # s; a deep dip (closed / covered eyes) is kept out of the open level this long
MIN_BLINK_S = 0.12         # s between the open frames around a blink: no lid closes and reopens faster
PROMINENCE = 0.7           # the EAR falls into and rises out of a blink by >= 0.7 x depth
RISE_SHIFT_S = 0.6         # s of eyes wider than the open level before the level jumps up
DEEP_DROP = 0.3            # relative drop of (nearly) closed eyes: such a dip is a closure, not a new level


@dataclass(frozen=True)
class BlinkRecord:
    """One detected dip: first and last frame times (annotator convention) and its depth."""

    start_s: float
    end_s: float            # timestamp of the last frame inside the dip
    depth: float            # deepest relative drop below the open-eye level (0..1)
    baseline: float         # open-eye EAR at the time
    kind: EventType = EventType.BLINK   # set by EyeStateDetector: BLINK, SLOW_BLINK or MICROSLEEP

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class BlinkUpdate:
    in_blink: bool                  # this frame is inside a dip that already qualifies as a blink
    finished: BlinkRecord | None    # a blink that ended at the previous frame


class BlinkDetector:
    """Online dip detector on (timestamp, EAR); see the module docstring."""

    def __init__(self, baseline_window_s: float = 6.0, min_drop: float = 0.09, edge_drop: float = 0.035,
                 max_duration_s: float = 1.5) -> None:
        self.window_s = baseline_window_s
        self.min_drop = min_drop
        self.edge_drop = edge_drop
        self.max_duration = max_duration_s
        self.baseline = math.nan
        self.sigma_rel = math.nan
        self._window: deque[tuple[float, float]] = deque()
        self._dip: list[tuple[float, float]] = []     # (t, ear) of the dip in progress
        self._dip_peak = 0.0
        self._dip_deep_at: float | None = None        # time the dip reached blink depth
        self._armed = False
        self._above_since: float | None = None
        self._pre = math.nan                           # EAR of the frame just before the dip
        self._pre_t: float | None = None               # and its time
        self._last_ear = math.nan
        self._last_span = 0.0
        self._last_t: float | None = None
        self._dt = 0.0

    # -- baseline ---------------------------------------------------------------------------------------
    def _add(self, t: float, ear: float) -> None:
        self._window.append((t, ear))
        while self._window and self._window[0][0] < t - self.window_s:
            self._window.popleft()
        if len(self._window) >= MIN_BASELINE_SAMPLES and t - self._window[0][0] >= MIN_BASELINE_SPAN_S - 1e-9:
            values = np.fromiter((e for _, e in self._window), float, len(self._window))
            self.baseline = float(np.median(values))
            # noise from successive differences: a level change inside the window does not inflate it
            mad = float(np.median(np.abs(np.diff(values)))) / math.sqrt(2.0)
            self.sigma_rel = max(MIN_SIGMA_REL, 1.4826 * mad / self.baseline) if self.baseline > 0 else math.nan

    @property
    def in_dip(self) -> bool:
        """A dip is in progress (the EAR is below the open level by more than the edge)."""
        return bool(self._dip)

    @property
    def last_dip_too_long(self) -> bool:
        """The last dip that ended lasted longer than `max_duration`: no blink (covered eyes, a new level,
        a microsleep)."""
        return self._last_span > self.max_duration

    @property
    def ready(self) -> bool:
        return math.isfinite(self.baseline) and self.baseline > 0

    def thresholds(self) -> tuple[float, float]:
        """(edge, depth) relative drops in force now."""
        s = self.sigma_rel if math.isfinite(self.sigma_rel) else MIN_SIGMA_REL
        return max(self.edge_drop, EDGE_SIGMAS * s), max(self.min_drop, DEPTH_SIGMAS * s)

    def reset(self) -> None:
        """Forget the driver."""
        self.__init__(self.window_s, self.min_drop, self.edge_drop, self.max_duration)  # type: ignore[misc]

    # -- frames -----------------------------------------------------------------------------------------
    def update(self, t: float, ear: float | None) -> BlinkUpdate:
        """One frame at `t` (s) with the EAR, or None/NaN without a face."""
        if ear is None or not math.isfinite(ear):
            self._dip, self._armed, self._last_t, self._last_ear = [], False, None, math.nan
            return BlinkUpdate(False, None)
        last_t = self._last_t
        if last_t is not None:
            self._dt = t - last_t
        self._last_t = t
        if not self.ready:
            self._add(t, ear)
            self._armed = True
            return BlinkUpdate(False, None)
        edge, depth = self.thresholds()
        drop = (self.baseline - ear) / self.baseline
        last_ear, self._last_ear = self._last_ear, ear
        if not self._dip:
            if drop > edge and self._armed:
                self._dip = [(t, ear)]
                self._pre, self._pre_t = last_ear, last_t
                self._dip_peak = drop
                self._dip_deep_at = t if drop >= depth else None
                return BlinkUpdate(self._qualifies(depth), None)
            self._add(t, ear)
            self._armed = True
            self._rise(t, drop, edge)
            return BlinkUpdate(False, None)
        recovered = self._dip_deep_at is not None and ear >= self._pre - edge * self.baseline
        if drop > edge and not recovered:
            self._dip.append((t, ear))
            if drop > self._dip_peak:
                self._dip_peak = drop
            if self._dip_deep_at is None and drop >= depth:
                self._dip_deep_at = t
                self._trim(t)
            span = t - self._dip[0][0]
            if self._dip_peak < DEEP_DROP and span > self.max_duration:
                self._last_span = span
                self._new_level()                   # a squint / new pose / new light, not a blink
                return BlinkUpdate(False, None)
            if span > LONG_DIP_MAX_S:
                self._last_span = span
                self._dip = []
                return BlinkUpdate(False, None)
            return BlinkUpdate(self._qualifies(depth), None)
        # back up: the dip ended at the previous frame
        self._last_span = self._dip[-1][0] - self._dip[0][0]
        record = None
        lowest = min((e for _, e in self._dip), default=ear)
        if (self._qualifies(depth) and (ear - lowest) / self.baseline >= PROMINENCE * depth
                and self._pre_t is not None and t - self._pre_t >= MIN_BLINK_S):
            start, end = self._dip[0][0], self._dip[-1][0]
            record = BlinkRecord(start, end, self._dip_peak, self.baseline)
        else:
            for sample in self._dip:                # an ordinary wobble: part of the open-eye level
                self._add(*sample)
        self._dip = []
        self._add(t, ear)
        return BlinkUpdate(False, record)

    def _trim(self, t: float) -> None:
        """The dip just reached blink depth: frames more than FALL_MAX_S (+ one frame) earlier were a shallow
        stretch before the blink (a drift, a lagging baseline), not the lid falling -- they go back to the
        open level. The local level before the blink is the highest frame left of the fall (or the one just
        before it), and the blink starts at the first frame below it by more than the edge."""
        keep = t - (FALL_MAX_S + self._dt) - 1e-9
        while self._dip and self._dip[0][0] < keep:
            self._pre_t, self._pre = self._dip.pop(0)
            self._add(self._pre_t, self._pre)
        if not self._dip:
            return
        edge, _ = self.thresholds()
        for k, (u, e) in enumerate(self._dip[:-1]):
            if e > self._pre:
                self._pre_t, self._pre = u, e
                for sample in self._dip[:k + 1]:
                    self._add(*sample)
                self._dip = self._dip[k + 1:]
                break
        while len(self._dip) > 1 and self._dip[0][1] > self._pre - edge * self.baseline:
            self._pre_t, self._pre = self._dip.pop(0)
            self._add(self._pre_t, self._pre)

    def _qualifies(self, depth: float) -> bool:
        if not self._dip or self._dip_deep_at is None or self._dip_peak < depth:
            return False
        fall = self._dip_deep_at - self._dip[0][0]
        if fall > FALL_MAX_S + self._dt:
            return False
        lowest = min(e for _, e in self._dip)
        if (self._pre - lowest) / self.baseline < PROMINENCE * depth:
            return False   # no fall from the local level just before: a slow drift, not a blink
        return self._dip[-1][0] - self._dip[0][0] <= self.max_duration

    def _rise(self, t: float, drop: float, edge: float) -> None:
        """Eyes wider than the open level for RISE_SHIFT_S (a squint released, a new pose): restart the
        baseline from those frames at once instead of waiting for the median to follow."""
        if drop >= -edge:
            self._above_since = None
            return
        if self._above_since is None:
            self._above_since = t
        elif t - self._above_since >= RISE_SHIFT_S:
            recent = [(u, e) for u, e in self._window if u >= self._above_since]
            self._window.clear()
            self.baseline = math.nan
            for sample in recent:
                self._add(*sample)
            if not self.ready:
                self.baseline = float(np.median([e for _, e in recent]))
            self._above_since = None

    def _new_level(self) -> None:
        samples, self._dip = self._dip, []
        self._window.clear()
        self.baseline = math.nan
        for sample in samples:
            self._add(*sample)
        if not self.ready:  # too few samples for a baseline: use their median at once
            values = [e for _, e in samples]
            self.baseline = float(np.median(values))
