"""Offline replay: the messages of a bag through the same core code the nodes run, as fast as the CPU allows.

Per message, in bag order:

* ``camera/image_raw`` (sensor_msgs/Image) -> ``PerceptionPipeline.process`` (what the perception node does
  with an Image topic) -> a driver observation;
* ``driver/observation`` (observation-level bags) -> the observation as recorded;
* every observation -> ``FeatureWindow.add_observation``; a microsleep onset publishes features at once
  (the feature node's event trigger), then ``AlertPolicy.evaluate`` (the intervention node's safety path);
* ``vehicle/signals`` -> ``FeatureWindow.add_vehicle``;
* every ``publish_period`` s of message time, features -> policy, as the feature node's timer does;
* ``truth/fatigue`` (fatigue_msgs/FatigueTruth, written by ``fatigue-llm simulate``) -> the labels, or a
  sidecar CSV (``Labels``) for real recordings that come without them;
* with an ``advisor`` (``fatigue-llm evaluate --llm``), each rule decision at or above ``llm_min_level`` also
  goes to the advice path (the engine the llm node runs), in line: its follow-up is recorded at the alert's
  time plus the answer's latency, with its tokens/s.

Times in the ``Trace`` are seconds since the bag's first message. No rclpy: messages are the bag's own
(rosbags objects carry the same field names as the ROS messages).
"""

from __future__ import annotations

import bisect
import csv
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fatigue_llm import topics
from fatigue_llm.evaluation.levels import truth_from_name, truth_name
from fatigue_llm.evaluation.types import FrameRecord, Interval, InterventionRecord, Trace, WindowRecord
from fatigue_llm.features.config import FeatureConfig
from fatigue_llm.features.types import FatigueFeatures
from fatigue_llm.features.window import FeatureWindow, FeatureWindowError
from fatigue_llm.intervention.config import InterventionConfig
from fatigue_llm.intervention.policy import AlertPolicy, assess
from fatigue_llm.perception.config import PerceptionConfig
from fatigue_llm.perception.types import DriverEvent, EventType, FrameObservation, VehicleSample
from fatigue_llm.perception.vehicle import VehicleSignalError

IMAGE_TOPIC = "camera/image_raw"
TRUTH_TOPIC = "truth/fatigue"
WINDOW_FEATURES = ("eye_closure_ratio", "blink_frequency", "head_nod", "steering_reversal_rate", "speed_variance",
                   "yaw_rate", "sdlp", "mean_blink_duration", "longest_eye_closure", "face_visible_fraction")
BLINK_EVENTS = (EventType.BLINK, EventType.SLOW_BLINK)


@dataclass(frozen=True)
class Advice:
    """What the advice path answered for one rule decision: the follow-up, how long it took, how fast it wrote."""

    level: int
    action: str
    source: str
    latency_s: float
    tokens_per_s: float


# (features, rule decision) -> Advice, or None when the LLM is not asked (below llm_min_level)
Advisor = Callable[[FatigueFeatures, object], Advice | None]


class ReplayError(ValueError):
    """Bad replay input (a labels file, a message that cannot be used); the message names it."""


@dataclass(frozen=True)
class ReplayConfig:
    """The node parameters the replay runs with (the vehicle.yaml values by default)."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    intervention: InterventionConfig = field(default_factory=InterventionConfig)
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)
    image_topic: str = IMAGE_TOPIC


@dataclass(frozen=True)
class Labels:
    """Labels from sidecar files, times in seconds since the start of the recording."""

    levels: tuple[Interval, ...] = ()
    events: tuple[Interval, ...] = ()


def replay_topics(config: ReplayConfig) -> tuple[str, ...]:
    """The topics a replay reads (relative names)."""
    return (_relative(config.image_topic), topics.DRIVER_OBSERVATION, topics.VEHICLE_SIGNALS, TRUTH_TOPIC)


def _relative(topic: str) -> str:
    return topic.lstrip("/")


def stamp_s(header: Any) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


# ------------------------------------------------------------------------------ message -> core dataclass
def observation_of(msg: Any) -> FrameObservation:
    """A DriverObservation (bag object) as the core's FrameObservation; ValueError for an unknown event."""
    return FrameObservation(
        timestamp_s=stamp_s(msg.header), face_found=bool(msg.face_found),
        tracking_confidence=float(msg.tracking_confidence), ear_left=float(msg.ear_left),
        ear_right=float(msg.ear_right), ear=float(msg.ear), ear_threshold=float(msg.ear_threshold),
        calibrated=bool(msg.calibrated), eyes_closed=bool(msg.eyes_closed), eye_closure=float(msg.eye_closure),
        closed_duration_s=float(msg.closed_duration), blink=bool(getattr(msg, "blink", False)),
        mar=float(msg.mar), yawning=bool(msg.yawning),
        pitch_rad=float(msg.head_pitch), yaw_rad=float(msg.head_yaw), roll_rad=float(msg.head_roll),
        events=tuple(DriverEvent(EventType(e.type), e.start.sec + e.start.nanosec * 1e-9, float(e.duration),
                                 float(e.magnitude)) for e in msg.events),
    )


def vehicle_of(msg: Any) -> VehicleSample:
    return VehicleSample(timestamp_s=stamp_s(msg.header), speed=float(msg.speed),
                         steering_angle=float(msg.steering_angle), yaw_rate=float(msg.yaw_rate),
                         lateral_offset=float(msg.lateral_offset), time_driving=float(msg.time_driving))


# ------------------------------------------------------------------------------ sidecar labels
def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise ReplayError(f"{path}: missing column(s) {missing}; expected {', '.join(required)}")
            yield from enumerate(reader, start=2)
    except OSError as error:
        raise ReplayError(f"{path}: cannot read ({error.strerror})") from None


def _interval(path: Path, row_number: int, row: dict[str, str], kind: str) -> Interval:
    try:
        start, end = float(row["start_s"]), float(row["end_s"])
    except (TypeError, ValueError):
        raise ReplayError(f"{path}: row {row_number}: start_s/end_s must be numbers, got "
                          f"{row.get('start_s')!r}, {row.get('end_s')!r}") from None
    if not (math.isfinite(start) and math.isfinite(end) and end > start >= 0):
        raise ReplayError(f"{path}: row {row_number}: need 0 <= start_s < end_s, got {start}, {end}")
    return Interval(start, end, kind)


def read_labels(levels_csv: str | Path | None = None, events_csv: str | Path | None = None) -> Labels:
    """Labels of a real recording: ``start_s,end_s,level`` (alert / drowsy / sleepy) and
    ``start_s,end_s,event`` (blink / microsleep / yawn / nod). ReplayError names file, row and value."""
    levels: list[Interval] = []
    events: list[Interval] = []
    if levels_csv:
        path = Path(levels_csv)
        for row_number, row in _rows(path, ("start_s", "end_s", "level")):
            truth = truth_from_name(row["level"] or "")
            if truth is None:
                raise ReplayError(f"{path}: row {row_number}: level {row['level']!r} is not alert, drowsy or sleepy")
            levels.append(_interval(path, row_number, row, truth_name(truth)))
    if events_csv:
        path = Path(events_csv)
        for row_number, row in _rows(path, ("start_s", "end_s", "event")):
            kind = (row["event"] or "").strip().lower()
            if kind not in ("blink", "microsleep", "yawn", "nod"):
                raise ReplayError(f"{path}: row {row_number}: event {row['event']!r} is not blink, microsleep, "
                                  "yawn or nod")
            events.append(_interval(path, row_number, row, kind))
    return Labels(tuple(sorted(levels, key=lambda i: i.start)), tuple(sorted(events, key=lambda i: i.start)))


# ------------------------------------------------------------------------------ truth from the bag
@dataclass
class _Truth:
    times: list[float] = field(default_factory=list)
    levels: list[int] = field(default_factory=list)
    closed: list[bool | None] = field(default_factory=list)
    blink: list[bool] = field(default_factory=list)
    microsleep: list[bool] = field(default_factory=list)
    yawn: list[bool] = field(default_factory=list)
    nod: list[bool] = field(default_factory=list)

    def add(self, t: float, msg: Any) -> None:
        self.times.append(t)
        self.levels.append(int(msg.level))
        self.closed.append(bool(msg.eyes_closed) if msg.face_visible else None)  # unseen: not scorable
        self.blink.append(bool(msg.blink))
        self.microsleep.append(bool(msg.microsleep))
        self.yawn.append(bool(msg.yawn))
        self.nod.append(bool(msg.nod))

    def index_at(self, t: float) -> int | None:
        """The truth sample at or just before ``t`` (None before the first)."""
        i = bisect.bisect_right(self.times, t + 1e-6) - 1
        return i if i >= 0 else None

    def period(self) -> float:
        if len(self.times) < 2:
            return 0.0
        gaps = sorted(b - a for a, b in zip(self.times, self.times[1:], strict=False))
        return gaps[len(gaps) // 2]

    def runs(self, flags: list[bool], kind: str) -> list[Interval]:
        """Runs of True as intervals [first frame, last frame + one frame period)."""
        out, start, step = [], None, self.period()
        for t, flag in zip(self.times, flags, strict=True):
            if flag and start is None:
                start = t
            elif not flag and start is not None:
                out.append(Interval(start, t, kind))
                start = None
        if start is not None:
            out.append(Interval(start, self.times[-1] + step, kind))
        return out

    def level_periods(self, end_s: float) -> list[Interval]:
        out: list[Interval] = []
        for t, level in zip(self.times, self.levels, strict=True):
            name = truth_name(level)
            if out and out[-1].kind == name:
                continue
            if out:
                out[-1] = Interval(out[-1].start, t, out[-1].kind)  # the previous level ends here
            out.append(Interval(t, end_s, name))
        return out


# ------------------------------------------------------------------------------ the replay
class Replay:
    """Feed decoded bag messages with ``feed``; ``trace()`` gives what the nodes would have published."""

    def __init__(self, name: str, config: ReplayConfig | None = None, labels: Labels | None = None,
                 advisor: Advisor | None = None) -> None:
        self.name = name
        self.advisor = advisor  # the LLM advice path, run in line (message time stands still meanwhile)
        self._tokens_per_s: list[float] = []
        self.config = config or ReplayConfig()
        self.labels = labels or Labels()
        self.window = FeatureWindow(self.config.features)
        self.policy = AlertPolicy(self.config.intervention)
        self._pipeline = None  # MediaPipe only when the bag has camera frames
        self._origin: float | None = None
        self._next_publish: float | None = None
        self._truth = _Truth()
        self._frames: list[tuple[float, FrameObservation]] = []
        self._windows: list[WindowRecord] = []
        self._interventions: list[InterventionRecord] = []
        self._detected: list[Interval] = []
        self._microsleep_onset: float | None = None
        self._latency: dict[str, list[float]] = {"features_ms": [], "policy_ms": []}
        self._series: dict[str, tuple[list[float], list[float]]] = {
            "ear": ([], []), "perclos": ([], []), "sdlp": ([], [])}
        self.rejected: dict[str, int] = {}
        self.last_error: str | None = None
        self._end = 0.0

    # -- input ------------------------------------------------------------------------------------------
    def feed(self, topic: str, stamp_ns: int, msg: Any) -> None:
        """One decoded message. A message the core refuses is counted and skipped, as the nodes do."""
        topic = _relative(topic)
        bag_t = stamp_ns * 1e-9
        if self._origin is None:
            self._origin = bag_t
        try:
            if topic == _relative(self.config.image_topic):
                self._on_image(msg)
            elif topic == topics.DRIVER_OBSERVATION:
                self._on_observation(observation_of(msg))
            elif topic == topics.VEHICLE_SIGNALS:
                self.window.add_vehicle(vehicle_of(msg))
            elif topic == TRUTH_TOPIC:
                self._truth.add(self._t(stamp_s(msg.header)), msg)
            else:
                return
        except (FeatureWindowError, VehicleSignalError, ValueError) as error:
            self.rejected[topic] = self.rejected.get(topic, 0) + 1
            self.last_error = f"{topic} at {bag_t - self._origin:.3f} s: {error}"
            return
        self._end = max(self._end, bag_t - self._origin)
        self._publish_due()

    def _t(self, absolute_s: float) -> float:
        return absolute_s - (self._origin or 0.0)

    def _on_image(self, msg: Any) -> None:
        from fatigue_llm.perception.image import ImageEncodingError, decode_image

        if self._pipeline is None:
            from fatigue_llm.perception.pipeline import PerceptionPipeline

            self._pipeline = PerceptionPipeline(self.config.perception)
            self._latency["perception_ms"] = []
        try:
            frame = decode_image(msg.encoding, msg.height, msg.width, msg.step, bytes(msg.data),
                                 bool(msg.is_bigendian))
        except ImageEncodingError as error:
            raise ValueError(str(error)) from None
        began = time.perf_counter()
        obs = self._pipeline.process(frame, stamp_s(msg.header))
        self._latency["perception_ms"].append((time.perf_counter() - began) * 1e3)
        self._on_observation(obs)

    def _on_observation(self, obs: FrameObservation) -> None:
        safety_event = self.window.add_observation(obs)
        t = self._t(obs.timestamp_s)
        self._frames.append((t, obs))
        self._series["ear"][0].append(t)
        self._series["ear"][1].append(obs.ear)
        self._note_events(t, obs)
        if safety_event:  # the feature node publishes at once; the safety path answers at once
            self._publish(trigger_event=True)

    def _note_events(self, t: float, obs: FrameObservation) -> None:
        for event in obs.events:
            start = self._t(event.start_s)
            if event.type in BLINK_EVENTS:
                self._detected.append(Interval(start, start + event.duration_s, "blink"))
            elif event.type == EventType.MICROSLEEP:
                self._microsleep_onset = start
            elif event.type in (EventType.YAWN, EventType.NOD):
                self._detected.append(Interval(start, start + event.duration_s, event.type.name.lower()))
        if self._microsleep_onset is not None and obs.face_found and obs.closed_duration_s == 0.0:
            self._detected.append(Interval(self._microsleep_onset, t, "microsleep"))  # eyes open again
            self._microsleep_onset = None

    def _publish_due(self) -> None:
        latest = self.window.latest_s
        if not math.isfinite(latest):
            return
        period = self.config.features.publish_period
        if self._next_publish is None:
            self._next_publish = latest + period
        while latest >= self._next_publish:  # the feature node's timer, in message time
            self._publish(trigger_event=False)
            self._next_publish += period

    def _publish(self, trigger_event: bool) -> None:
        began = time.perf_counter()
        features = self.window.compute(trigger_event=trigger_event)
        self._latency["features_ms"].append((time.perf_counter() - began) * 1e3)
        began = time.perf_counter()
        decision = self.policy.evaluate(features, features.timestamp_s)
        self._latency["policy_ms"].append((time.perf_counter() - began) * 1e3)
        t = self._t(features.timestamp_s)
        if decision is not None:
            self._interventions.append(InterventionRecord(t, int(decision.level), decision.action,
                                                          str(decision.source)))
            if self.advisor is not None:
                self._advise(t, features, decision)
        if not trigger_event:
            self._windows.append(self._window_record(t, features))

    def _advise(self, t: float, features: FatigueFeatures, decision) -> None:
        """The follow-up arrives ``latency`` after the alert, as it would on the road."""
        advice = self.advisor(features, decision)
        if advice is None:
            return
        self._latency.setdefault("llm_follow_up_ms", []).append(advice.latency_s * 1e3)
        if advice.tokens_per_s > 0:
            self._tokens_per_s.append(advice.tokens_per_s)
        self._interventions.append(InterventionRecord(t + advice.latency_s, advice.level, advice.action,
                                                      advice.source))

    def _window_record(self, t: float, features: FatigueFeatures) -> WindowRecord:
        level, _ = assess(features, self.config.intervention)
        values = {name: float(getattr(features, name)) for name in WINDOW_FEATURES}
        for name, key in (("perclos", "eye_closure_ratio"), ("sdlp", "sdlp")):
            self._series[name][0].append(t)
            self._series[name][1].append(values[key])
        return WindowRecord(t, None, int(level), self._score(int(level), features), values)

    def _score(self, level: int, features: FatigueFeatures) -> float:
        """The policy level, with PERCLOS towards the critical threshold breaking ties within a level (ROC)."""
        perclos = features.eye_closure_ratio
        nudge = min(max(perclos / self.config.intervention.critical_perclos, 0.0), 1.0) if math.isfinite(
            perclos) else 0.0
        return level + 0.99 * nudge

    # -- output -----------------------------------------------------------------------------------------
    def trace(self, stopped_at: str | None = None) -> Trace:
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
        duration = self._end
        if self._microsleep_onset is not None:
            self._detected.append(Interval(self._microsleep_onset, duration, "microsleep"))
            self._microsleep_onset = None
        truth_levels, truth_events = self._truth_intervals(duration)
        windows = [WindowRecord(w.t, self._truth_level_at(w.t, truth_levels), w.predicted_level, w.score,
                                w.features) for w in self._windows]
        return Trace(name=self.name, duration_s=duration, frames=self._frame_records(), windows=windows,
                     interventions=list(self._interventions), truth_events=truth_events,
                     detected_events=sorted(self._detected, key=lambda i: (i.start, i.kind)),
                     truth_levels=truth_levels, stage_latency_ms={k: v for k, v in self._latency.items() if v},
                     llm_tokens_per_s=list(self._tokens_per_s), stopped_at=stopped_at, series=self._series)

    def _truth_intervals(self, duration: float) -> tuple[list[Interval], list[Interval]]:
        if self._truth.times:
            events = [*self._truth.runs(self._truth.blink, "blink"),
                      *self._truth.runs(self._truth.microsleep, "microsleep"),
                      *self._truth.runs(self._truth.yawn, "yawn"), *self._truth.runs(self._truth.nod, "nod")]
            return self._truth.level_periods(duration), sorted(events, key=lambda i: (i.start, i.kind))
        return list(self.labels.levels), list(self.labels.events)

    @staticmethod
    def _truth_level_at(t: float, periods: list[Interval]) -> int | None:
        for period in periods:
            if period.start <= t < period.end or (t == period.end == periods[-1].end):
                return truth_from_name(period.kind)
        return None

    def _frame_records(self) -> list[FrameRecord]:
        records = []
        for t, obs in self._frames:
            i = self._truth.index_at(t)
            closed_true = self._truth.closed[i] if i is not None else None
            blink_true = self._truth.blink[i] if i is not None else None
            records.append(FrameRecord(t, closed_true, bool(obs.face_found and obs.eyes_closed), blink_true, None))
        return records


def replay_messages(name: str, messages: Iterable[tuple[str, int, Any]], config: ReplayConfig | None = None,
                    labels: Labels | None = None, stopped_at: str | None = None,
                    advisor: Advisor | None = None) -> Trace:
    """A whole replay over ``(topic, stamp_ns, decoded message)`` in bag order."""
    replay = Replay(name, config, labels, advisor)
    for topic, stamp_ns, msg in messages:
        replay.feed(topic, stamp_ns, msg)
    return replay.trace(stopped_at)
