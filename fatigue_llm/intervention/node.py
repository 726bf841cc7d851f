"""Intervention node (lifecycle): FatigueFeatures -> Intervention.

Two paths, never coupled:
- safety path (executor thread): the deterministic AlertPolicy decides and publishes at once;
- advice path (one worker thread): the on-device LLM writes a follow-up for the same event,
  with a deadline; cloud answers to escalations arrive later as further follow-ups.
A busy LLM never delays an alert: the worker keeps only the newest pending request.
"""

from __future__ import annotations

import threading
import time

from fatigue_msgs.msg import FatigueFeatures as FatigueFeaturesMsg
from fatigue_msgs.msg import Intervention
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy

from fatigue_llm import topics
from fatigue_llm.features.types import FatigueFeatures
from fatigue_llm.intervention.config import InterventionConfig
from fatigue_llm.intervention.policy import AlertPolicy
from fatigue_llm.intervention.types import InterventionDecision, Level
from fatigue_llm.ros.convert import decision_to_msg, msg_to_features
from fatigue_llm.ros.params import declare_config
from fatigue_llm.ros.runner import run_node

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LEVEL_NAMES = {level.value: level.name for level in Level}


class AdviceWorker:
    """One background thread running ``advise`` on the newest pending request only."""

    def __init__(self, advise, publish, log) -> None:
        self._advise, self._publish, self._log = advise, publish, log
        self._pending: tuple[FatigueFeatures, InterventionDecision] | None = None
        self._wake = threading.Condition()
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="llm-advice", daemon=True)
        self._thread.start()

    def submit(self, features: FatigueFeatures, rule: InterventionDecision) -> None:
        with self._wake:
            if self._pending is not None:
                self.dropped += 1  # superseded by newer features before the model got to it
            self._pending = (features, rule)
            self._wake.notify()

    def close(self, timeout: float = 10.0) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._pending is None and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                features, rule = self._pending
                self._pending = None
            try:
                self._publish(self._advise(features, rule))
            except Exception as error:  # noqa: BLE001 - the rule decision already went out
                self._log(f"LLM advice failed, rule decision stands: {error!r}")


class InterventionNode(LifecycleNode):
    def __init__(self, **node_options) -> None:
        super().__init__("intervention", **node_options)
        self.policy: AlertPolicy | None = None
        self.engine = None
        self.worker: AdviceWorker | None = None
        self.rejected = 0
        self._publisher = None
        self._subscription = None
        self._poll_timer = None
        self.declare_parameter("autostart", True)
        self.config: InterventionConfig = declare_config(self, InterventionConfig)

    # --- lifecycle -------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.policy = AlertPolicy(self.config)
        if self.config.llm_enabled:
            self._load_engine()
        self._publisher = self.create_lifecycle_publisher(Intervention, topics.INTERVENTION, RELIABLE)
        return super().on_configure(state)

    def _load_engine(self) -> None:
        from fatigue_llm.intervention.engine import InterventionEngine

        started = time.monotonic()
        try:
            engine = InterventionEngine(self.config)
            engine.load()
        except Exception as error:  # noqa: BLE001 - alerts must work without the model
            self.get_logger().error(f"on-device LLM unavailable, rule-based alerts only: {error}")
            return
        self.engine = engine
        self.get_logger().info(f"LLM engine loaded in {time.monotonic() - started:.1f} s")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)
        self._subscription = self.create_subscription(
            FatigueFeaturesMsg, topics.FATIGUE_FEATURES, self._on_features, RELIABLE
        )
        if self.engine is not None:
            self.worker = AdviceWorker(self.engine.advise, self._publish, self.get_logger().error)
            self._poll_timer = self.create_timer(0.5, self._publish_followups)
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._close_engine()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._close_engine()
        return super().on_shutdown(state)

    def destroy_node(self) -> None:
        self._stop_inputs()
        self._close_engine()
        super().destroy_node()

    def _stop_inputs(self) -> None:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if self._poll_timer is not None:
            self.destroy_timer(self._poll_timer)
            self._poll_timer = None
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def _close_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    # --- paths -----------------------------------------------------------------------------------
    def _on_features(self, msg: FatigueFeaturesMsg) -> None:
        try:
            features = msg_to_features(msg)
        except (ValueError, TypeError) as error:
            self.rejected += 1
            self.get_logger().warning(f"rejected features ({self.rejected} so far): {error}",
                                      throttle_duration_sec=5.0)
            return
        decision = self.policy.evaluate(features, features.timestamp_s)
        if decision is not None:
            self._publish(decision)  # safety path: out before any model runs
        if self.engine is None:
            return
        self.engine.observe(features)
        if decision is not None and decision.level >= self.config.llm_min_level and self.worker is not None:
            self.worker.submit(features, decision)

    def _publish_followups(self) -> None:
        for decision in self.engine.poll_followups():
            self._publish(decision)

    def _publish(self, decision: InterventionDecision) -> None:
        self._publisher.publish(decision_to_msg(decision, self.get_clock().now().to_msg()))
        self.get_logger().info(
            f"{LEVEL_NAMES[int(decision.level)]} [{decision.source}] {decision.action}: {decision.message}"
        )


def main(args: list[str] | None = None) -> int:
    return run_node(InterventionNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
