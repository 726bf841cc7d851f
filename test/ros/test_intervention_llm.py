"""Intervention node with the real embedded GGUF model: the safety path never waits for the LLM."""

from __future__ import annotations

import time

import pytest
from fatigue_msgs.msg import FatigueFeatures, Intervention
from rclpy.qos import QoSProfile, ReliabilityPolicy

from fatigue_llm import topics
from fatigue_llm.features.types import FatigueFeatures as Features
from fatigue_llm.intervention.node import InterventionNode
from fatigue_llm.ros.convert import features_to_msg
from fatigue_llm.ros.runner import autostart

from .helpers import wait_for, wait_for_subscribers

pytestmark = pytest.mark.slow
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def test_microsleep_alert_is_not_delayed_by_a_busy_llm(graph, tmp_path):
    node = graph.add(InterventionNode, autostart=False, llm_enabled=True,
                     case_store_path=str(tmp_path / "cases"), outbox_path=str(tmp_path / "outbox.sqlite3"))
    assert autostart(node)
    assert node.engine is not None, "the embedded model must load"
    probe = graph.probe()
    received: list[tuple[float, Intervention]] = []
    probe.create_subscription(Intervention, topics.INTERVENTION,
                              lambda m: received.append((time.monotonic(), m)), RELIABLE)
    publisher = probe.create_publisher(FatigueFeatures, topics.FATIGUE_FEATURES, RELIABLE)
    wait_for_subscribers(publisher)

    warning = Features(timestamp_s=100.0, window_duration=60.0, eye_closure_ratio=0.2, blink_frequency=30.0)
    publisher.publish(features_to_msg(warning))
    assert wait_for(lambda: len(received) >= 1, timeout=5)  # rule WARNING; the LLM starts on it
    sent = time.monotonic()
    microsleep = Features(timestamp_s=101.0, window_duration=61.0, eye_closure_ratio=0.25, microsleep=True,
                          longest_eye_closure=1.2, trigger_event=True)
    publisher.publish(features_to_msg(microsleep))

    assert wait_for(lambda: any(m.level == Intervention.CRITICAL and m.source == "rule" for _, m in received),
                    timeout=5)
    arrived, critical = next((t, m) for t, m in received if m.level == Intervention.CRITICAL)
    assert arrived - sent < 0.5, "the rule alert waited for something"
    # the LLM follow-ups come after, each tied to the rule decision it explains
    assert wait_for(lambda: sum(m.source == "local_llm" for _, m in received) >= 1, timeout=60)
    rule_ids = {m.id for _, m in received if m.source == "rule"}
    for _, m in received:
        if m.source == "local_llm":
            assert m.follows_id in rule_ids
            assert m.explanation
    first_llm = min(t for t, m in received if m.source == "local_llm")
    assert arrived < first_llm
