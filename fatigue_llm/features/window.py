"""Sliding windows of driver observations and vehicle signals -> FatigueFeatures.

All statistics are time-weighted from timestamps, so they do not depend on the camera
frame rate. A frame's weight is the time to the next frame, capped so a stalled camera
or a dropped stream does not stretch one frame over a long gap. ``voice_quality`` is the
speech-weighted mean of the voice node's scored blocks (fatigue_llm.audio) that end in the
window: NaN when the driver has not spoken in it (or the voice baseline is still being learnt).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from fatigue_llm.audio.types import VoiceMeasure
from fatigue_llm.features.config import FeatureConfig
from fatigue_llm.features.types import FatigueFeatures
from fatigue_llm.perception.types import EventType, FrameObservation, VehicleSample
from fatigue_llm.perception.vehicle import VehicleWindow

NAN = math.nan
MAX_FRAME_GAP_S = 0.5  # a frame never stands for more than this (30 fps..2 fps cameras all fit)
P80_CLOSURE = 0.8      # PERCLOS P80: eyelid covers >= 80 % of the eye (Wierwille et al. 1994)


@dataclass
class _Frame:
    t: float
    weight: float      # s this frame stands for (set when the next frame arrives)
    visible: bool
    closed_p80: bool
    closed_duration: float


class FeatureWindowError(ValueError):
    """Input to the feature window is inconsistent (e.g. time going backwards)."""


class FeatureWindow:
    """Accumulates observations and vehicle samples; ``compute`` returns the current features."""

    def __init__(self, config: FeatureConfig, start_s: float | None = None) -> None:
        self.config = config
        self._frames: deque[_Frame] = deque()
        self._events: deque[tuple[float, EventType, float]] = deque()  # (end time, type, duration)
        self._vehicle = VehicleWindow(config.vehicle_window, math.radians(config.steering_reversal_gap_deg),
                                      min_duration_s=config.min_window)
        self._voice: deque[tuple[float, float, float]] = deque()  # (block end, speech s, voice_quality)
        self._last_voice_s = -math.inf
        self._start_s = start_s
        self._latest_s = NAN
        self._microsleep_pending = False

    # --- input -------------------------------------------------------------------------------
    def add_observation(self, obs: FrameObservation) -> bool:
        """Add one frame; returns True when it carries a safety event (microsleep onset).

        Raises FeatureWindowError for non-finite or backwards timestamps (state unchanged).
        """
        t = obs.timestamp_s
        if not math.isfinite(t):
            raise FeatureWindowError(f"observation timestamp is not finite: {t}")
        if self._frames and t <= self._frames[-1].t:
            raise FeatureWindowError(
                f"observation timestamp {t:.3f} s is not after the previous one {self._frames[-1].t:.3f} s"
            )
        if self._start_s is None:
            self._start_s = t
        if self._frames:
            previous = self._frames[-1]
            previous.weight = min(t - previous.t, MAX_FRAME_GAP_S)
        closure = obs.eye_closure
        closed = closure >= P80_CLOSURE if math.isfinite(closure) else obs.eyes_closed
        self._frames.append(_Frame(t, 0.0, obs.face_found, obs.face_found and closed, obs.closed_duration_s))
        safety_event = False
        for event in obs.events:
            self._events.append((t, event.type, event.duration_s))
            if event.type == EventType.MICROSLEEP:
                safety_event = True
        self._microsleep_pending |= safety_event
        self._latest_s = max(t, self._latest_s) if math.isfinite(self._latest_s) else t
        self._evict(t)
        return safety_event

    def add_vehicle(self, sample: VehicleSample) -> None:
        """Add one vehicle sample (errors from VehicleWindow propagate, naming the field)."""
        self._vehicle.add(sample)
        if self._start_s is None:
            self._start_s = sample.timestamp_s
        if not math.isfinite(self._latest_s) or sample.timestamp_s > self._latest_s:
            self._latest_s = sample.timestamp_s

    def add_voice(self, measure: VoiceMeasure) -> None:
        """Add one voice block (fatigue_msgs/VoiceFeatures). Blocks without a score (no speech, bad audio,
        baseline still learnt) are kept out: they make voice_quality absent, never 0.

        Raises FeatureWindowError for a non-finite or backwards timestamp, or a quality outside [0, 1].
        """
        t, quality = measure.timestamp_s, measure.voice_quality
        if not math.isfinite(t):
            raise FeatureWindowError(f"voice timestamp is not finite: {t}")
        if t <= self._last_voice_s:
            raise FeatureWindowError(f"voice timestamp {t:.3f} s is not after the previous one "
                                     f"{self._last_voice_s:.3f} s")
        if not math.isnan(quality) and not 0.0 <= quality <= 1.0:
            raise FeatureWindowError(f"voice_quality {quality!r} is outside [0, 1]")
        self._last_voice_s = t
        if self._start_s is None:
            self._start_s = t
        if not math.isfinite(self._latest_s) or t > self._latest_s:
            self._latest_s = t
        if math.isfinite(quality) and measure.speech_duration > 0:
            self._voice.append((t, measure.speech_duration, quality))

    @property
    def latest_s(self) -> float:
        return self._latest_s

    def _evict(self, now_s: float) -> None:
        horizon = now_s - self.config.perclos_window
        while self._frames and self._frames[0].t < horizon:
            self._frames.popleft()
        while self._events and self._events[0][0] < horizon:
            self._events.popleft()
        while self._voice and self._voice[0][0] < now_s - self.config.voice_window:
            self._voice.popleft()

    # --- output ------------------------------------------------------------------------------
    def compute(self, now_s: float | None = None, trigger_event: bool = False) -> FatigueFeatures:
        """Features over the window ending at ``now_s`` (default: the latest input time).

        Clears the "microsleep since last publication" flag.
        """
        now = self._latest_s if now_s is None else now_s
        if math.isfinite(now):
            self._evict(now)
        eye = self._eye_features()
        vehicle = self._vehicle.metrics(now if math.isfinite(now) else None)
        microsleep, self._microsleep_pending = self._microsleep_pending, False
        return FatigueFeatures(
            timestamp_s=now,
            trigger_event=trigger_event,
            window_duration=eye["duration"],
            face_visible_fraction=eye["visible_fraction"],
            eye_closure_ratio=eye["perclos"],
            blink_frequency=eye["blink_rate"],
            head_nod=eye["nod_rate"],
            voice_quality=self._voice_quality(),
            steering_reversal_rate=vehicle.steering_reversal_rate,
            speed_variance=vehicle.speed_variance,
            yaw_rate=vehicle.yaw_rate_std,
            time_awake=self._time_awake_h(now),
            mean_blink_duration=eye["mean_blink"],
            longest_eye_closure=eye["longest_closure"],
            microsleep_count=eye["microsleeps"],
            slow_blink_count=eye["slow_blinks"],
            yawn_count=eye["yawns"],
            steering_angle_std=vehicle.steering_angle_std,
            sdlp=vehicle.sdlp,
            time_driving=vehicle.time_driving,
            microsleep=microsleep,
        )

    def _eye_features(self) -> dict:
        frames = list(self._frames)
        if len(frames) >= 2:
            # the newest frame stands for one typical frame interval
            frames[-1].weight = min(frames[-1].t - frames[-2].t, MAX_FRAME_GAP_S)
        duration = sum(f.weight for f in frames)
        visible = sum(f.weight for f in frames if f.visible)
        closed = sum(f.weight for f in frames if f.closed_p80)
        enough = duration >= self.config.min_window
        counts = {kind: 0 for kind in EventType}
        blink_durations = []
        for _, kind, event_duration in self._events:
            counts[kind] += 1
            if kind in (EventType.BLINK, EventType.SLOW_BLINK):
                blink_durations.append(event_duration)
        minutes = visible / 60.0
        rate_ok = enough and visible > 0
        return {
            "duration": duration,
            "visible_fraction": visible / duration if duration > 0 else NAN,
            "perclos": closed / visible if rate_ok else NAN,
            "blink_rate": (counts[EventType.BLINK] + counts[EventType.SLOW_BLINK]) / minutes if rate_ok else NAN,
            "nod_rate": counts[EventType.NOD] / minutes if rate_ok else NAN,
            "mean_blink": sum(blink_durations) / len(blink_durations) if blink_durations else NAN,
            "longest_closure": max((f.closed_duration for f in frames), default=0.0),
            "microsleeps": counts[EventType.MICROSLEEP],
            "slow_blinks": counts[EventType.SLOW_BLINK],
            "yawns": counts[EventType.YAWN],
        }

    def _voice_quality(self) -> float:
        """Speech-weighted mean of the scored voice blocks in the window; NaN when there are none."""
        speech = sum(duration for _, duration, _ in self._voice)
        if speech <= 0:
            return NAN
        return sum(duration * quality for _, duration, quality in self._voice) / speech

    def _time_awake_h(self, now_s: float) -> float:
        if self.config.hours_awake_at_start < 0 or self._start_s is None or not math.isfinite(now_s):
            return NAN
        return self.config.hours_awake_at_start + (now_s - self._start_s) / 3600.0
