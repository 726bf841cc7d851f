"""Feature-processor node: DriverObservation + VehicleSignals (+ VoiceFeatures) -> windowed FatigueFeatures.

Publishes every ``publish_period`` seconds, and at once when a microsleep arrives so the
intervention node's safety path sees it without waiting for the next period.
"""

from __future__ import annotations

import math
import time

from fatigue_msgs.msg import DriverObservation, FatigueFeatures, VehicleSignals, VoiceFeatures
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from fatigue_llm import topics
from fatigue_llm.audio.config import VOICE_TOPIC
from fatigue_llm.audio.messages import msg_to_voice
from fatigue_llm.diagnostics import WARN, Counters, HealthReport, changes, summarize
from fatigue_llm.features.config import FeatureConfig
from fatigue_llm.features.window import FeatureWindow, FeatureWindowError
from fatigue_llm.perception.vehicle import VehicleSignalError
from fatigue_llm.ros.convert import features_to_msg, msg_to_observation, msg_to_vehicle
from fatigue_llm.ros.diagnostics import DiagnosticsPublisher
from fatigue_llm.ros.params import declare_config
from fatigue_llm.ros.runner import run_node

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
NO_INPUT_WARN_S = 5.0  # observations come at camera rate, vehicle signals at bus rate: 5 s of neither is a fault


class FeatureProcessorNode(Node):
    def __init__(self, **node_options) -> None:
        super().__init__("feature_processor", **node_options)
        self.config: FeatureConfig = declare_config(self, FeatureConfig)
        self.window = FeatureWindow(self.config)
        self.counters = Counters("observations_received", "vehicle_received", "observations_rejected",
                                 "vehicle_rejected", "voice_received", "voice_rejected", "features_published")
        self._last_input = time.monotonic()  # from start, so a node that never gets input warns too
        self._last_counts = self.counters.snapshot()
        self._publisher = self.create_publisher(FatigueFeatures, topics.FATIGUE_FEATURES, RELIABLE)
        self.create_subscription(DriverObservation, topics.DRIVER_OBSERVATION, self._on_observation, RELIABLE)
        self.create_subscription(VehicleSignals, topics.VEHICLE_SIGNALS, self._on_vehicle, RELIABLE)
        # one message per voice block (seconds apart), from the audio node's own process
        self.create_subscription(VoiceFeatures, VOICE_TOPIC, self._on_voice, RELIABLE)
        self.create_timer(self.config.publish_period, self._publish_periodic)
        self.diagnostics = DiagnosticsPublisher(self, self.health)

    @property
    def rejected(self) -> int:
        return sum(self.counters.get(name) for name in ("observations_rejected", "vehicle_rejected",
                                                        "voice_rejected"))

    def _on_observation(self, msg: DriverObservation) -> None:
        self._input_arrived("observations_received")
        try:
            safety_event = self.window.add_observation(msg_to_observation(msg))
        except (FeatureWindowError, ValueError) as error:
            self._reject("observations_rejected", f"driver observation: {error}")
            return
        if safety_event:
            self._publish(trigger_event=True)

    def _on_vehicle(self, msg: VehicleSignals) -> None:
        self._input_arrived("vehicle_received")
        try:
            self.window.add_vehicle(msg_to_vehicle(msg))
        except VehicleSignalError as error:
            self._reject("vehicle_rejected", f"vehicle signals: {error}")

    def _on_voice(self, msg: VoiceFeatures) -> None:
        self.counters.increment("voice_received")  # not an input that keeps the node from warning: it is optional
        try:
            self.window.add_voice(msg_to_voice(msg))
        except (FeatureWindowError, ValueError) as error:
            self._reject("voice_rejected", f"voice features: {error}")

    def _input_arrived(self, counter: str) -> None:
        self.counters.increment(counter)
        self._last_input = time.monotonic()

    def _publish_periodic(self) -> None:
        if math.isfinite(self.window.latest_s):
            self._publish(trigger_event=False)

    def _publish(self, trigger_event: bool) -> None:
        features = self.window.compute(trigger_event=trigger_event)
        self._publisher.publish(features_to_msg(features))
        self.counters.increment("features_published")

    def _reject(self, counter: str, reason: str) -> None:
        self.counters.increment(counter)
        self.get_logger().warning(f"rejected message ({self.rejected} so far): {reason}",
                                  throttle_duration_sec=5.0)

    def health(self) -> HealthReport:
        """Counters since start; WARN for rejections in the last status period or no input for NO_INPUT_WARN_S."""
        counts = self.counters.snapshot()
        recent = changes(counts, self._last_counts)
        self._last_counts = counts
        idle_s = time.monotonic() - self._last_input
        problems = []
        rejected = recent["observations_rejected"] + recent["vehicle_rejected"] + recent["voice_rejected"]
        if rejected:
            problems.append((WARN, f"{rejected} input messages rejected in the last period"))
        if idle_s > NO_INPUT_WARN_S:
            problems.append((WARN, f"no input for {idle_s:.0f} s"))
        return summarize(problems, {**counts, "last_input_age_s": idle_s}, ok_message="processing")


def main(args: list[str] | None = None) -> int:
    return run_node(FeatureProcessorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
