"""Publish a node's HealthReport as diagnostic_msgs/DiagnosticArray on /diagnostics, once per period.

/diagnostics is absolute on purpose: diagnostic_aggregator and rqt_robot_monitor read that one topic for the
whole robot, so every namespace reports there and the status name (the node's full name) tells them apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from fatigue_llm.diagnostics import ERROR, LEVELS, HealthReport

DIAGNOSTICS_TOPIC = "/diagnostics"
DIAGNOSTICS_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
_LEVEL_BYTES = {name: bytes([index]) for index, name in enumerate(LEVELS)}  # OK=0, WARN=1, ERROR=2, STALE=3


def format_value(value: object) -> str:
    """KeyValue text: bools as true/false, floats in at most 6 significant digits, the rest as str()."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


class DiagnosticsPublisher:
    """A timer that calls report() every period_s and publishes the result as one DiagnosticStatus.

    Uses a plain publisher and timer even on a LifecycleNode, so health is visible in every lifecycle state
    (an unconfigured or failed node is exactly the one to watch). A report() that raises is published as
    ERROR with the exception text; it never reaches the executor.
    """

    def __init__(self, node: Node, report: Callable[[], HealthReport], period_s: float = 1.0) -> None:
        self._node = node
        self._report = report
        self._name = node.get_fully_qualified_name()
        self._hardware_id = node.get_namespace().strip("/") or "vehicle"
        self._publisher = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, DIAGNOSTICS_QOS)
        self._timer = node.create_timer(period_s, self.publish)

    def publish(self) -> None:
        """Publish one status now (the timer calls this; tests and shutdown paths may too)."""
        if self._publisher is None:
            return
        try:
            report = self._report()
        except Exception as error:  # noqa: BLE001 - a broken health report must not stop the node
            self._node.get_logger().error(f"health report failed: {error!r}", throttle_duration_sec=10.0)
            report = HealthReport(ERROR, f"health report failed: {error!r}", {})
        array = DiagnosticArray()
        array.header.stamp = self._node.get_clock().now().to_msg()
        array.status = [self.status(report)]
        self._publisher.publish(array)

    def status(self, report: HealthReport) -> DiagnosticStatus:
        return DiagnosticStatus(
            level=_LEVEL_BYTES[report.level],
            name=self._name,
            message=report.message,
            hardware_id=self._hardware_id,
            values=[KeyValue(key=str(key), value=format_value(value)) for key, value in report.values.items()],
        )

    def close(self) -> None:
        """Stop publishing and free the timer and publisher (safe to call twice, or after destroy_node)."""
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._timer = None
        if self._publisher is not None:
            self._node.destroy_publisher(self._publisher)
            self._publisher = None
