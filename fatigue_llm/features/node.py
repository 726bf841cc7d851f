"""Feature-processor node: DriverObservation + VehicleSignals -> windowed FatigueFeatures.

Publishes every ``publish_period`` seconds, and at once when a microsleep arrives so the
intervention node's safety path sees it without waiting for the next period.
"""

from __future__ import annotations

import math

from fatigue_msgs.msg import DriverObservation, FatigueFeatures, VehicleSignals
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from fatigue_llm import topics
from fatigue_llm.features.config import FeatureConfig
from fatigue_llm.features.window import FeatureWindow, FeatureWindowError
from fatigue_llm.perception.vehicle import VehicleSignalError
from fatigue_llm.ros.convert import features_to_msg, msg_to_observation, msg_to_vehicle
from fatigue_llm.ros.params import declare_config
from fatigue_llm.ros.runner import run_node

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)



class FeatureProcessorNode(Node):
    def __init__(self, **node_options) -> None:
        super().__init__("feature_processor", **node_options)
        self.config: FeatureConfig = declare_config(self, FeatureConfig)
        self.window = FeatureWindow(self.config)
        self.rejected = 0
        self._publisher = self.create_publisher(FatigueFeatures, topics.FATIGUE_FEATURES, RELIABLE)
        self.create_subscription(DriverObservation, topics.DRIVER_OBSERVATION, self._on_observation, RELIABLE)
        self.create_subscription(VehicleSignals, topics.VEHICLE_SIGNALS, self._on_vehicle, RELIABLE)
        self.create_timer(self.config.publish_period, self._publish_periodic)

    def _on_observation(self, msg: DriverObservation) -> None:
        try:
            safety_event = self.window.add_observation(msg_to_observation(msg))
        except (FeatureWindowError, ValueError) as error:
            self._reject(f"driver observation: {error}")
            return
        if safety_event:
            self._publish(trigger_event=True)

    def _on_vehicle(self, msg: VehicleSignals) -> None:
        try:
            self.window.add_vehicle(msg_to_vehicle(msg))
        except VehicleSignalError as error:
            self._reject(f"vehicle signals: {error}")

    def _publish_periodic(self) -> None:
        if math.isfinite(self.window.latest_s):
            self._publish(trigger_event=False)

    def _publish(self, trigger_event: bool) -> None:
        features = self.window.compute(trigger_event=trigger_event)
        self._publisher.publish(features_to_msg(features))

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        self.get_logger().warning(f"rejected message ({self.rejected} so far): {reason}",
                                  throttle_duration_sec=5.0)


def main(args: list[str] | None = None) -> int:
    return run_node(FeatureProcessorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
