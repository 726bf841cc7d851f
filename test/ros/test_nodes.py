"""Feature-processor and intervention nodes with real rclpy over DDS (in one process)."""

from __future__ import annotations

import math

from builtin_interfaces.msg import Time
from fatigue_msgs.msg import DriverEvent, DriverObservation, FatigueFeatures, Intervention
from rclpy.qos import QoSProfile, ReliabilityPolicy

from fatigue_llm import topics
from fatigue_llm.features.node import FeatureProcessorNode
from fatigue_llm.intervention.node import InterventionNode
from fatigue_llm.ros.runner import autostart

from .helpers import wait_for, wait_for_subscribers

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def stamp(seconds: float) -> Time:
    return Time(sec=int(seconds), nanosec=int(round((seconds % 1) * 1e9)))


def observation(t: float, closed: bool, events=()) -> DriverObservation:
    msg = DriverObservation()
    msg.header.stamp = stamp(t)
    msg.face_found = True
    msg.ear = 0.08 if closed else 0.30
    msg.eyes_closed = closed
    msg.eye_closure = 1.0 if closed else 0.0
    msg.closed_duration = 0.0
    msg.events = list(events)
    for name in ("ear_left", "ear_right", "ear_threshold", "mar", "head_pitch", "head_yaw", "head_roll"):
        setattr(msg, name, math.nan)
    return msg


def test_microsleep_observation_becomes_critical_intervention(graph):
    features_node = graph.add(FeatureProcessorNode, publish_period=0.2, min_window=1.0)
    intervention = graph.add(InterventionNode, autostart=False, llm_enabled=False)
    assert autostart(intervention)
    probe = graph.probe()
    received: list[Intervention] = []
    features: list[FatigueFeatures] = []
    probe.create_subscription(Intervention, topics.INTERVENTION, received.append, RELIABLE)
    probe.create_subscription(FatigueFeatures, topics.FATIGUE_FEATURES, features.append, RELIABLE)
    publisher = probe.create_publisher(DriverObservation, topics.DRIVER_OBSERVATION, RELIABLE)
    wait_for_subscribers(publisher)

    t0 = 1000.0
    for i in range(60):  # 2 s of open eyes at 30 fps
        publisher.publish(observation(t0 + i / 30, closed=False))
    microsleep = DriverEvent(type=DriverEvent.MICROSLEEP, start=stamp(t0 + 2.0), duration=1.0)
    for i in range(31):  # then 1 s closed; the microsleep is reported at onset
        events = [microsleep] if i == 30 else []
        publisher.publish(observation(t0 + 2.0 + i / 30, closed=True, events=events))

    assert wait_for(lambda: any(m.level == Intervention.CRITICAL for m in received), timeout=10)
    critical = next(m for m in received if m.level == Intervention.CRITICAL)
    assert critical.source == Intervention.SOURCE_RULE
    assert critical.action == Intervention.ACTION_ALERT_AUDIO_HAPTIC
    assert "microsleep" in critical.explanation
    event_features = [f for f in features if f.trigger == FatigueFeatures.TRIGGER_EVENT]
    assert event_features and event_features[0].microsleep
    assert features_node.rejected == 0


def test_bad_messages_are_counted_and_the_node_keeps_going(graph):
    node = graph.add(FeatureProcessorNode, publish_period=0.2, min_window=0.5)
    probe = graph.probe()
    features: list[FatigueFeatures] = []
    probe.create_subscription(FatigueFeatures, topics.FATIGUE_FEATURES, features.append, RELIABLE)
    publisher = probe.create_publisher(DriverObservation, topics.DRIVER_OBSERVATION, RELIABLE)
    wait_for_subscribers(publisher)
    publisher.publish(observation(50.0, closed=False))
    publisher.publish(observation(40.0, closed=False))  # time goes backwards
    bad_event = observation(50.5, closed=False, events=[DriverEvent(type=99)])  # unknown event type
    publisher.publish(bad_event)
    for i in range(1, 40):
        publisher.publish(observation(50.0 + i / 30, closed=i % 2 == 0))
    assert wait_for(lambda: node.rejected >= 2, timeout=5)
    assert wait_for(lambda: any(f.window_duration > 1.0 for f in features), timeout=5)
    latest = features[-1]
    assert 0.3 < latest.eye_closure_ratio < 0.7  # half the frames closed, the bad ones ignored
