"""Node health on /diagnostics with real rclpy: rejected input turns a node WARN, and it keeps going."""

from __future__ import annotations

import math
from functools import partial

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from fatigue_msgs.msg import DriverEvent, DriverObservation
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from fatigue_llm.diagnostics import OK, WARN, Counters, HealthReport, summarize
from fatigue_llm.features.node import FeatureProcessorNode
from fatigue_llm.perception.image import encode_bgr8
from fatigue_llm.perception.node import PerceptionNode
from fatigue_llm.ros.diagnostics import DIAGNOSTICS_QOS, DIAGNOSTICS_TOPIC, DiagnosticsPublisher
from fatigue_llm.ros.runner import autostart

from .helpers import wait_for, wait_for_subscribers

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


class StatusLog:
    """Every DiagnosticStatus seen on /diagnostics, with its values as a dict."""

    def __init__(self, probe) -> None:
        self.statuses: list[DiagnosticStatus] = []
        probe.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_array, DIAGNOSTICS_QOS)

    def _on_array(self, msg: DiagnosticArray) -> None:
        self.statuses.extend(msg.status)

    def find(self, name: str, level: bytes | None, **values: str) -> DiagnosticStatus | None:
        """The first status of that node at that level (None: any) whose values include these."""
        for status in list(self.statuses):
            kv = {v.key: v.value for v in status.values}
            if status.name == name and level in (None, status.level) and all(kv.get(k) == v
                                                                            for k, v in values.items()):
                return status
        return None


def observation(t: float, events=()) -> DriverObservation:
    msg = DriverObservation()
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int(round((t % 1) * 1e9))
    msg.face_found = True
    msg.ear, msg.eye_closure = 0.30, 0.0
    msg.events = list(events)
    for name in ("ear_left", "ear_right", "ear_threshold", "mar", "head_pitch", "head_yaw", "head_roll"):
        setattr(msg, name, math.nan)
    return msg


def test_feature_processor_warns_on_a_rejected_observation_then_recovers(graph):
    node = graph.add(partial(FeatureProcessorNode, namespace="car_diag"))
    probe = graph.probe()
    log = StatusLog(probe)
    publisher = probe.create_publisher(DriverObservation, "/car_diag/driver/observation", RELIABLE)
    wait_for_subscribers(publisher)

    publisher.publish(observation(100.0, events=[DriverEvent(type=99)]))  # unknown event type: rejected
    assert wait_for(lambda: log.find("/car_diag/feature_processor", DiagnosticStatus.WARN,
                                     observations_rejected="1"), timeout=3.0)
    warn = log.find("/car_diag/feature_processor", DiagnosticStatus.WARN, observations_rejected="1")
    assert "rejected" in warn.message
    assert warn.hardware_id == "car_diag"
    values = {v.key: v.value for v in warn.values}
    assert values["observations_received"] == "1" and values["vehicle_rejected"] == "0"
    assert node.rejected == 1

    publisher.publish(observation(100.1))  # a good one: the next period has no rejections
    assert wait_for(lambda: log.find("/car_diag/feature_processor", DiagnosticStatus.OK,
                                     observations_received="2", observations_rejected="1"), timeout=3.0)


def test_perception_counts_a_bad_image_and_processes_the_next_one(graph):
    from fatigue_llm.sim.driver_video import FaceRenderer

    node = graph.add(PerceptionNode, autostart=False, image_topic="/camera/image_raw")
    assert autostart(node)
    probe = graph.probe()
    log = StatusLog(probe)
    observations: list[DriverObservation] = []
    probe.create_subscription(DriverObservation, "driver/observation", observations.append, RELIABLE)
    publisher = probe.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    wait_for_subscribers(publisher)

    good = Image(encoding="bgr8")
    good.height, good.width, good.step, data = encode_bgr8(FaceRenderer().render())
    good.data = data
    good.header.stamp.sec = 10
    bad = Image(encoding="yuv422_yuy2_weird", height=good.height, width=good.width, step=good.step, data=data)
    publisher.publish(bad)
    assert wait_for(lambda: node.bad_frames == 1, timeout=3.0)
    publisher.publish(good)
    assert wait_for(lambda: len(observations) == 1, timeout=10.0), "the node stopped processing after a bad frame"

    assert wait_for(lambda: log.find("/perception", DiagnosticStatus.WARN, frames_rejected="1"), timeout=3.0)
    assert "rejected" in log.find("/perception", DiagnosticStatus.WARN, frames_rejected="1").message
    assert wait_for(lambda: log.find("/perception", None, frames_received="2", frames_processed="1",
                                     frames_rejected="1", source="topic", active="true"), timeout=3.0)


def test_a_failing_report_is_published_as_error_and_the_node_keeps_publishing(graph):
    node = graph.probe("reporter")
    calls = Counters()

    def report() -> HealthReport:
        if calls.increment("calls") == 1:
            raise RuntimeError("sensor table missing")
        return HealthReport(OK, "fine", {"ready": True, "rate": 1 / 3, "missing": math.nan, "count": 7})

    DiagnosticsPublisher(node, report, period_s=0.1)
    log = StatusLog(graph.probe())
    assert wait_for(lambda: log.find("/reporter", DiagnosticStatus.ERROR), timeout=3.0)
    assert "sensor table missing" in log.find("/reporter", DiagnosticStatus.ERROR).message
    assert wait_for(lambda: log.find("/reporter", DiagnosticStatus.OK, ready="true", rate="0.333333",
                                     missing="nan", count="7"), timeout=3.0)
    assert log.find("/reporter", DiagnosticStatus.OK).hardware_id == "vehicle"


def test_summarize_takes_the_worst_level_and_counters_count_from_zero():
    assert summarize([], {"a": 1}).level == OK
    report = summarize([(WARN, "slow"), ("ERROR", "gone"), (WARN, "late")], {})
    assert report.level == "ERROR" and report.message == "slow; gone; late"
    with pytest.raises(ValueError, match="health level"):
        HealthReport("BAD", "", {})
    counters = Counters("a")
    assert counters.snapshot() == {"a": 0} and counters.increment("b", 2) == 2 and counters.get("c") == 0

