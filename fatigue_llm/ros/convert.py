"""Conversions between core dataclasses and fatigue_msgs messages (the only ROS-typed glue)."""

from __future__ import annotations

import math

from builtin_interfaces.msg import Time
from fatigue_msgs.msg import DriverEvent as DriverEventMsg
from fatigue_msgs.msg import DriverObservation, Intervention, VehicleSignals
from fatigue_msgs.msg import FatigueFeatures as FatigueFeaturesMsg

from fatigue_llm.features.types import FatigueFeatures, RangeViolation, sanitize
from fatigue_llm.intervention.types import InterventionDecision, Level
from fatigue_llm.perception.types import DriverEvent, EventType, FrameObservation, VehicleSample


def seconds_to_time(seconds: float) -> Time:
    nanoseconds = int(round(seconds * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def time_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def observation_to_msg(obs: FrameObservation, frame_id: str, stamp: Time | None = None) -> DriverObservation:
    msg = DriverObservation()
    msg.header.stamp = stamp if stamp is not None else seconds_to_time(obs.timestamp_s)
    msg.header.frame_id = frame_id
    msg.face_found = obs.face_found
    msg.tracking_confidence = float(obs.tracking_confidence)
    msg.ear_left, msg.ear_right, msg.ear = float(obs.ear_left), float(obs.ear_right), float(obs.ear)
    msg.ear_threshold = float(obs.ear_threshold)
    msg.calibrated = obs.calibrated
    msg.eyes_closed = obs.eyes_closed
    msg.eye_closure = float(obs.eye_closure)
    msg.closed_duration = float(obs.closed_duration_s)
    msg.blink = bool(obs.blink)
    msg.mar = float(obs.mar)
    msg.yawning = obs.yawning
    msg.head_pitch, msg.head_yaw, msg.head_roll = float(obs.pitch_rad), float(obs.yaw_rad), float(obs.roll_rad)
    msg.events = [
        DriverEventMsg(type=int(e.type), start=seconds_to_time(e.start_s), duration=float(e.duration_s),
                       magnitude=float(e.magnitude))
        for e in obs.events
    ]
    return msg


def msg_to_observation(msg: DriverObservation) -> FrameObservation:
    """Raises ValueError for an unknown event type (the caller counts and skips the message)."""
    return FrameObservation(
        timestamp_s=time_to_seconds(msg.header.stamp),
        face_found=msg.face_found,
        tracking_confidence=msg.tracking_confidence,
        ear_left=msg.ear_left,
        ear_right=msg.ear_right,
        ear=msg.ear,
        ear_threshold=msg.ear_threshold,
        calibrated=msg.calibrated,
        eyes_closed=msg.eyes_closed,
        eye_closure=msg.eye_closure,
        closed_duration_s=msg.closed_duration,
        blink=msg.blink,
        mar=msg.mar,
        yawning=msg.yawning,
        pitch_rad=msg.head_pitch,
        yaw_rad=msg.head_yaw,
        roll_rad=msg.head_roll,
        events=tuple(
            DriverEvent(EventType(e.type), time_to_seconds(e.start), e.duration, e.magnitude) for e in msg.events
        ),
    )


def vehicle_to_msg(sample: VehicleSample, frame_id: str = "base_link") -> VehicleSignals:
    msg = VehicleSignals()
    msg.header.stamp = seconds_to_time(sample.timestamp_s)
    msg.header.frame_id = frame_id
    msg.speed = float(sample.speed)
    msg.steering_angle = float(sample.steering_angle)
    msg.yaw_rate = float(sample.yaw_rate)
    msg.lateral_offset = float(sample.lateral_offset)
    msg.time_driving = float(sample.time_driving)
    return msg


def msg_to_vehicle(msg: VehicleSignals) -> VehicleSample:
    return VehicleSample(
        timestamp_s=time_to_seconds(msg.header.stamp),
        speed=msg.speed,
        steering_angle=msg.steering_angle,
        yaw_rate=msg.yaw_rate,
        lateral_offset=msg.lateral_offset,
        time_driving=msg.time_driving,
    )


_FEATURE_FIELDS = (
    "window_duration", "face_visible_fraction", "eye_closure_ratio", "blink_frequency", "head_nod",
    "voice_quality", "steering_reversal_rate", "speed_variance", "yaw_rate", "time_awake", "mean_blink_duration",
    "longest_eye_closure", "steering_angle_std", "sdlp", "time_driving",
)
_COUNT_FIELDS = ("microsleep_count", "slow_blink_count", "yawn_count")


def features_to_msg(features: FatigueFeatures, frame_id: str = "") -> FatigueFeaturesMsg:
    msg = FatigueFeaturesMsg()
    if math.isfinite(features.timestamp_s):
        msg.header.stamp = seconds_to_time(features.timestamp_s)
    msg.header.frame_id = frame_id
    msg.trigger = FatigueFeaturesMsg.TRIGGER_EVENT if features.trigger_event else FatigueFeaturesMsg.TRIGGER_PERIODIC
    for name in _FEATURE_FIELDS:
        setattr(msg, name, float(getattr(features, name)))
    for name in _COUNT_FIELDS:
        setattr(msg, name, int(getattr(features, name)))
    msg.microsleep = features.microsleep
    return msg


def msg_to_features(msg: FatigueFeaturesMsg) -> FatigueFeatures:
    values = {name: float(getattr(msg, name)) for name in _FEATURE_FIELDS}
    values.update({name: int(getattr(msg, name)) for name in _COUNT_FIELDS})
    return FatigueFeatures(
        timestamp_s=time_to_seconds(msg.header.stamp),
        trigger_event=msg.trigger == FatigueFeaturesMsg.TRIGGER_EVENT,
        microsleep=msg.microsleep,
        **values,
    )


def msg_to_features_checked(msg: FatigueFeaturesMsg) -> tuple[FatigueFeatures, list[RangeViolation]]:
    """``msg_to_features``, then ``sanitize``: out-of-range (or infinite) floats become NaN, bad counts 0.

    Returns the features the policy may act on and the violations found (empty for a sound message).
    """
    return sanitize(msg_to_features(msg))


def decision_to_msg(decision: InterventionDecision, stamp: Time) -> Intervention:
    msg = Intervention()
    msg.header.stamp = stamp
    msg.header.frame_id = ""
    msg.id = decision.id
    msg.follows_id = decision.follows_id
    msg.level = int(decision.level)
    msg.action = decision.action
    msg.message = decision.message
    msg.source = decision.source
    msg.confidence = float(decision.confidence)
    msg.escalated = decision.escalated
    msg.explanation = decision.explanation
    return msg


def msg_to_decision(msg: Intervention) -> InterventionDecision:
    """Raises ValueError for an unknown level or action, or a message over the length limit."""
    try:
        level = Level(msg.level)
    except ValueError:
        raise ValueError(f"Intervention level {msg.level} is not one of {[int(v) for v in Level]}") from None
    return InterventionDecision(
        level=level, action=msg.action, message=msg.message, source=msg.source,
        confidence=min(max(float(msg.confidence), 0.0), 1.0), escalated=msg.escalated,
        explanation=msg.explanation, id=msg.id, follows_id=msg.follows_id,
        timestamp_s=time_to_seconds(msg.header.stamp),
    )
