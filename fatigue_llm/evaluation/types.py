"""Records of one replayed drive, as the replay hands them to the metrics and the report.

Times are seconds since the start of the drive. Truth fields are ``None`` where the bag carries no
label for that moment (a real drive without annotation, a frame with no face).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FrameRecord:
    """One camera frame: is the eye closed, is it part of a blink (truth and perception's answer)."""

    t: float
    closed_true: bool | None
    closed_pred: bool
    blink_true: bool | None = None
    blink_pred: bool | None = None


@dataclass(frozen=True)
class Interval:
    """A span of time. ``kind`` is an event ("blink", "microsleep", "yawn", "nod") or, for truth level
    periods, the truth class name ("ALERT", "DROWSY", "SLEEPY"; case is ignored)."""

    start: float
    end: float
    kind: str

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True)
class WindowRecord:
    """One feature window: truth class (ALERT=0, DROWSY=1, SLEEPY=2), the policy's Level (0..3), a
    continuous fatigue score (higher = more tired; used for ROC) and the window's features."""

    t: float
    truth_level: int | None
    predicted_level: int
    score: float
    features: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class InterventionRecord:
    """One published Intervention (level 0..3 as in fatigue_msgs/Intervention)."""

    t: float
    level: int
    action: str
    source: str


@dataclass(frozen=True)
class Trace:
    """Everything one replay of one bag produced. ``stopped_at`` says why/where the replay stopped early
    (a partially readable bag), ``None`` when it ran to the end. ``series`` holds timelines for the
    report: name -> (times, values), e.g. "ear", "perclos", "sdlp"."""

    name: str
    duration_s: float
    frames: list[FrameRecord] = field(default_factory=list)
    windows: list[WindowRecord] = field(default_factory=list)
    interventions: list[InterventionRecord] = field(default_factory=list)
    truth_events: list[Interval] = field(default_factory=list)
    detected_events: list[Interval] = field(default_factory=list)
    truth_levels: list[Interval] = field(default_factory=list)
    stage_latency_ms: dict[str, list[float]] = field(default_factory=dict)
    llm_tokens_per_s: list[float] = field(default_factory=list)
    stopped_at: str | None = None
    series: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
