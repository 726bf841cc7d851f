"""Intervention node + llm node with the real embedded GGUF model, over DDS between two rclpy contexts
(each spun as deployed): the safety path never waits for the LLM, follow-ups arrive through the Advise
action, and the message text streams on intervention/partial before the follow-up."""

from __future__ import annotations

import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from fatigue_msgs.msg import FatigueFeatures, Intervention, InterventionPartial
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy

from fatigue_llm import topics
from fatigue_llm.features.types import FatigueFeatures as Features
from fatigue_llm.intervention.node import InterventionNode
from fatigue_llm.llm.node import LlmNode
from fatigue_llm.ros.convert import features_to_msg
from fatigue_llm.ros.runner import autostart

from .helpers import Graph, wait_for, wait_for_subscribers

pytestmark = pytest.mark.slow
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
WARNING = Features(timestamp_s=100.0, window_duration=60.0, eye_closure_ratio=0.2, blink_frequency=30.0)
MICROSLEEP = Features(timestamp_s=101.0, window_duration=61.0, eye_closure_ratio=0.25, microsleep=True,
                      longest_eye_closure=1.2, trigger_event=True)


@pytest.fixture
def llm_graph():
    graph = Graph(MultiThreadedExecutor, num_threads=3)  # as llm_node spins
    yield graph
    graph.close()


class Probe:
    def __init__(self, graph) -> None:
        self.node = graph.probe()
        self.received: list[tuple[float, Intervention]] = []
        self.partials: list[tuple[float, InterventionPartial]] = []
        self.statuses: list = []
        self.node.create_subscription(Intervention, topics.INTERVENTION,
                                      lambda m: self.received.append((time.monotonic(), m)), RELIABLE)
        self.node.create_subscription(InterventionPartial, topics.INTERVENTION_PARTIAL,
                                      lambda m: self.partials.append((time.monotonic(), m)), RELIABLE)
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self.statuses.extend(m.status), RELIABLE)
        self.publisher = self.node.create_publisher(FatigueFeatures, topics.FATIGUE_FEATURES, RELIABLE)

    def of(self, source: str) -> list[Intervention]:
        return [m for _, m in self.received if m.source == source]

    def status(self, name: str):
        return next((s for s in reversed(self.statuses) if s.name.endswith(name)), None)


def _start(graph, llm_graph, tmp_path):
    intervention = graph.add(InterventionNode, autostart=False, llm_enabled=True)
    llm = llm_graph.add(LlmNode, autostart=False, case_store_path=str(tmp_path / "cases"),
                        outbox_path=str(tmp_path / "outbox.sqlite3"))
    assert autostart(llm), llm.load_error
    assert autostart(intervention)
    assert wait_for(lambda: intervention._client.server_is_ready(), timeout=10), "Advise server not discovered"
    return intervention, llm


def test_microsleep_alert_is_not_delayed_by_a_busy_llm(graph, llm_graph, tmp_path):
    _start(graph, llm_graph, tmp_path)
    probe = Probe(graph)
    wait_for_subscribers(probe.publisher, count=2)  # intervention and llm (closed-loop effectiveness)
    probe.publisher.publish(features_to_msg(WARNING))
    assert wait_for(lambda: probe.of("rule"), timeout=5)  # rule WARNING; the LLM starts on it
    sent = time.monotonic()
    probe.publisher.publish(features_to_msg(MICROSLEEP))

    assert wait_for(lambda: any(m.level == Intervention.CRITICAL for m in probe.of("rule")), timeout=5)
    arrived = next(t for t, m in probe.received if m.level == Intervention.CRITICAL and m.source == "rule")
    assert arrived - sent < 0.5, "the rule alert waited for something"
    # the LLM follow-up comes after, tied to the rule decision it explains
    assert wait_for(lambda: probe.of("local_llm"), timeout=60)
    rule_ids = {m.id for m in probe.of("rule")}
    for m in probe.of("local_llm"):
        assert m.follows_id in rule_ids
        assert m.explanation
    first_llm = min(t for t, m in probe.received if m.source == "local_llm")
    assert arrived < first_llm


def test_message_text_streams_on_partial_before_the_followup(graph, llm_graph, tmp_path):
    intervention, llm = _start(graph, llm_graph, tmp_path)
    probe = Probe(graph)
    wait_for_subscribers(probe.publisher, count=2)
    probe.publisher.publish(features_to_msg(MICROSLEEP))
    assert wait_for(lambda: probe.of("local_llm"), timeout=60)
    followup_at, followup = next((t, m) for t, m in probe.received if m.source == "local_llm")
    mine = [(t, p) for t, p in probe.partials if p.follows_id == followup.follows_id]
    streamed = [p.text for _, p in mine if not p.final]
    assert streamed, "no partial text before the answer was complete"
    assert all(a == b[:len(a)] for a, b in zip(streamed, streamed[1:], strict=False)), "partials must grow"
    assert mine[0][0] < followup_at
    final = [p for _, p in mine if p.final]
    assert len(final) == 1 and final[0].text == followup.message  # the checked text, as published
    # health: both nodes report on /diagnostics with their counters
    assert wait_for(lambda: (probe.status("/llm") is not None and probe.status("/intervention") is not None
                             and dict((v.key, v.value) for v in probe.status("/intervention").values)
                             .get("advice_received") == "1"), timeout=5)
    llm_values = {v.key: v.value for v in probe.status("/llm").values}
    assert llm_values["model_loaded"] == "true" and probe.status("/llm").level == DiagnosticStatus.OK
    assert llm_values["instance"] == llm.instance


def test_without_the_llm_node_alerts_flow_and_advice_is_dropped(graph):
    intervention = graph.add(InterventionNode, autostart=False, llm_enabled=True)
    assert autostart(intervention)
    probe = Probe(graph)
    wait_for_subscribers(probe.publisher)
    probe.publisher.publish(features_to_msg(MICROSLEEP))
    assert wait_for(lambda: probe.of("rule"), timeout=5)
    assert intervention.counters.get("advice_dropped") == 1
    warn = DiagnosticStatus.WARN
    assert wait_for(lambda: probe.status("/intervention") is not None and probe.status("/intervention").level == warn,
                    timeout=5)
    values = {v.key: v.value for v in probe.status("/intervention").values}
    assert values["llm_available"] == "false" and values["advice_dropped"] == "1"


def test_out_of_range_features_are_counted_and_treated_as_absent(graph):
    intervention = graph.add(InterventionNode, autostart=False, llm_enabled=False)
    assert autostart(intervention)
    probe = Probe(graph)
    wait_for_subscribers(probe.publisher)
    garbage = features_to_msg(Features(timestamp_s=5.0, window_duration=60.0, eye_closure_ratio=0.2))
    garbage.blink_frequency, garbage.time_awake = 1e30, -5.0   # no sensor produces these
    probe.publisher.publish(garbage)
    assert wait_for(lambda: probe.of("rule"), timeout=5)
    alert = probe.of("rule")[0]
    assert alert.level == Intervention.WARNING  # from the valid PERCLOS beside the garbage
    assert "blink" not in alert.explanation and "awake" not in alert.explanation
    assert intervention.counters.get("features_out_of_range") == 1
    assert intervention.counters.get("feature_values_out_of_range") == 2
