"""Plain data produced by the perception core (no ROS types; nodes convert these)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

NAN = math.nan


class EventType(IntEnum):
    """Mirrors the constants of fatigue_msgs/DriverEvent."""

    BLINK = 0
    SLOW_BLINK = 1
    MICROSLEEP = 2
    NOD = 3
    YAWN = 4
    FACE_LOST = 5


@dataclass(frozen=True)
class DriverEvent:
    type: EventType
    start_s: float          # timestamp (s) the event started
    duration_s: float       # s (for MICROSLEEP at onset: closure so far)
    magnitude: float = 0.0  # NOD: peak pitch change [rad]; YAWN: peak MAR; else 0


@dataclass(frozen=True)
class FrameObservation:
    """Driver state of one camera frame. Unmeasurable values are NaN."""

    timestamp_s: float
    face_found: bool
    tracking_confidence: float = 0.0
    ear_left: float = NAN
    ear_right: float = NAN
    ear: float = NAN
    ear_threshold: float = NAN
    calibrated: bool = False
    eyes_closed: bool = False
    eye_closure: float = NAN        # 0 = baseline open .. 1 = fully closed
    closed_duration_s: float = 0.0
    mar: float = NAN
    yawning: bool = False
    pitch_rad: float = NAN          # positive = chin down
    yaw_rad: float = NAN
    roll_rad: float = NAN
    events: tuple[DriverEvent, ...] = field(default_factory=tuple)
    blink: bool = False             # inside a detected blink (lid falling .. back up), decided online


@dataclass(frozen=True)
class VehicleSample:
    """One sample of vehicle signals in SI units; absent signals are NaN."""

    timestamp_s: float
    speed: float = NAN              # m/s
    steering_angle: float = NAN     # rad at the steering wheel (reversal gaps refer to it)
    yaw_rate: float = NAN           # rad/s
    lateral_offset: float = NAN     # m
    time_driving: float = NAN       # s since last rest
