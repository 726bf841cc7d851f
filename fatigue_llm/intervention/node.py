"""Intervention node (lifecycle): FatigueFeatures -> Intervention, the safety path.

It runs only the deterministic AlertPolicy and publishes its decision at once. For a decision at or
above ``llm_min_level`` it then sends an Advise goal to the ``llm`` node (another process) and
publishes the follow-up when the result comes back. It never waits for that answer and imports no
model code: a slow, hung or crashed LLM costs the follow-up, never the alert. A goal without a result
after ``advice_timeout`` is abandoned, logged with its reason and counted on /diagnostics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fatigue_msgs.action import Advise
from fatigue_msgs.msg import FatigueFeatures as FatigueFeaturesMsg
from fatigue_msgs.msg import Intervention
from rclpy.action import ActionClient
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy

from fatigue_llm import topics
from fatigue_llm.diagnostics import Counters, HealthReport
from fatigue_llm.features.types import FatigueFeatures
from fatigue_llm.intervention.config import InterventionConfig
from fatigue_llm.intervention.policy import AlertPolicy
from fatigue_llm.intervention.types import InterventionDecision, Level
from fatigue_llm.ros.action import SpinSafeActionClient
from fatigue_llm.ros.convert import decision_to_msg, features_to_msg, msg_to_features_checked
from fatigue_llm.ros.diagnostics import DiagnosticsPublisher
from fatigue_llm.ros.params import declare_config
from fatigue_llm.ros.runner import run_node

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LEVEL_NAMES = {level.value: level.name for level in Level}
SWEEP_PERIOD_S = 0.25


@dataclass
class PendingAdvice:
    rule_id: str
    sent_s: float           # monotonic
    goal_handle: object = None  # ClientGoalHandle once accepted


class InterventionNode(LifecycleNode):
    def __init__(self, **node_options) -> None:
        super().__init__("intervention", **node_options)
        self.policy: AlertPolicy | None = None
        self.counters = Counters(  # all reported from the start, so monitors see stable keys
            "alerts_published", "features_rejected", "features_out_of_range", "feature_values_out_of_range",
            "advice_requested", "advice_received", "advice_fallback", "advice_dropped", "advice_rejected",
            "advice_timed_out", "advice_failed", "llm_restarts")
        # goals in flight by rule id; the llm node answers one at a time and drops a queued goal that a
        # newer one overtook, so this holds the running answer and the newest request
        self.pending: dict[str, PendingAdvice] = {}
        self.llm_instances: list[str] = []         # llm processes that answered, in order
        self._publisher = None
        self._subscription = None
        self._client: ActionClient | None = None
        self._sweep_timer = None
        self._diagnostics = DiagnosticsPublisher(self, self._health)  # first: destroy_node closes it
        self.declare_parameter("autostart", True)
        self.config: InterventionConfig = declare_config(self, InterventionConfig)

    # --- lifecycle -------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.policy = AlertPolicy(self.config)
        self._publisher = self.create_lifecycle_publisher(Intervention, topics.INTERVENTION, RELIABLE)
        if self.config.llm_enabled:
            self._client = SpinSafeActionClient(self, Advise, topics.ADVISE_ACTION)
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)
        self._subscription = self.create_subscription(
            FatigueFeaturesMsg, topics.FATIGUE_FEATURES, self._on_features, RELIABLE)
        if self._client is not None:
            self._sweep_timer = self.create_timer(SWEEP_PERIOD_S, self._sweep)
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_client()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._destroy_client()
        return super().on_shutdown(state)

    def destroy_node(self) -> None:
        self._stop_inputs()
        self._destroy_client()
        self._diagnostics.close()
        super().destroy_node()

    def _stop_inputs(self) -> None:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if self._sweep_timer is not None:
            self.destroy_timer(self._sweep_timer)
            self._sweep_timer = None
        self.pending.clear()

    def _destroy_client(self) -> None:
        if self._client is not None:
            self._client.destroy()
            self._client = None

    # --- safety path -----------------------------------------------------------------------------
    def _on_features(self, msg: FatigueFeaturesMsg) -> None:
        try:
            features, violations = msg_to_features_checked(msg)
        except (ValueError, TypeError) as error:
            self.counters.increment("features_rejected")
            self.get_logger().warning(f"rejected features ({self.counters.get('features_rejected')} so far): "
                                      f"{error}", throttle_duration_sec=5.0)
            return
        if violations:  # acted on as absent (NaN); the valid features beside them still count
            self.counters.increment("features_out_of_range")
            self.counters.increment("feature_values_out_of_range", len(violations))
            self.get_logger().warning("features out of physical range, treated as absent: "
                                      + "; ".join(str(v) for v in violations), throttle_duration_sec=5.0)
        decision = self.policy.evaluate(features, features.timestamp_s)
        if decision is None:
            return
        self._publish(decision)  # out before any model is asked
        self.counters.increment("alerts_published")
        if self._client is not None and decision.level >= self.config.llm_min_level:
            self._request_advice(features, decision)

    # --- advice path (never awaited) -------------------------------------------------------------
    def _request_advice(self, features: FatigueFeatures, decision: InterventionDecision) -> None:
        if not self._client.server_is_ready():
            self.counters.increment("advice_dropped")
            self.get_logger().warning(f"advice for {decision.id[:8]} dropped: the llm node is not available",
                                      throttle_duration_sec=5.0)
            return
        goal = Advise.Goal(features=features_to_msg(features),
                           rule=decision_to_msg(decision, self.get_clock().now().to_msg()),
                           deadline=float(self.config.advice_timeout))
        pending = PendingAdvice(decision.id, time.monotonic())
        self.pending[decision.id] = pending
        self.counters.increment("advice_requested")
        future = self._client.send_goal_async(goal)
        future.add_done_callback(lambda done: self._on_goal_response(pending, done))

    def _on_goal_response(self, pending: PendingAdvice, future) -> None:
        handle = future.result()
        if self.pending.get(pending.rule_id) is not pending:
            if handle is not None and handle.accepted:
                handle.cancel_goal_async()  # abandoned meanwhile: free the model for newer work
            return
        if handle is None or not handle.accepted:
            del self.pending[pending.rule_id]
            self.counters.increment("advice_rejected")
            self.get_logger().warning(f"advice for {pending.rule_id[:8]} rejected by the llm node "
                                      "(model not loaded)")
            return
        pending.goal_handle = handle
        handle.get_result_async().add_done_callback(lambda done: self._on_result(pending, done))

    def _on_result(self, pending: PendingAdvice, future) -> None:
        if self.pending.get(pending.rule_id) is not pending:
            return  # abandoned (past its deadline) before the answer came
        del self.pending[pending.rule_id]
        response = future.result()
        result = response.result if response is not None else None
        if result is None or not result.intervention.id:
            self.counters.increment("advice_dropped" if "superseded" in (result.failure if result else "")
                                    else "advice_failed")
            reason = result.failure if result is not None else "no result"
            self.get_logger().warning(f"advice for {pending.rule_id[:8]} failed: {reason}")
            return
        self._note_instance(result.llm_instance)
        self.counters.increment("advice_received")
        if result.failure:
            self.counters.increment("advice_fallback")
        msg = result.intervention
        msg.header.stamp = self.get_clock().now().to_msg()
        self._publisher.publish(msg)
        self.get_logger().info(f"{LEVEL_NAMES.get(msg.level, msg.level)} [{msg.source}] {msg.action}: "
                               f"{msg.message} (follow-up after {time.monotonic() - pending.sent_s:.2f} s)")

    def _note_instance(self, instance: str) -> None:
        if instance and (not self.llm_instances or self.llm_instances[-1] != instance):
            if self.llm_instances:
                self.counters.increment("llm_restarts")
                self.get_logger().info(f"the llm node answers again (instance {instance}, was "
                                       f"{self.llm_instances[-1]})")
            self.llm_instances.append(instance)

    def _sweep(self) -> None:
        now = time.monotonic()
        for pending in list(self.pending.values()):
            if now - pending.sent_s > self.config.advice_timeout:
                gone = "" if self._client.server_is_ready() else "; the llm node is gone"
                self._abandon(pending, f"no result within {self.config.advice_timeout:.1f} s{gone}",
                              "advice_timed_out")

    def _abandon(self, pending: PendingAdvice, reason: str, counter: str) -> None:
        del self.pending[pending.rule_id]
        self.counters.increment(counter)
        self.get_logger().warning(f"advice for {pending.rule_id[:8]} abandoned after "
                                  f"{time.monotonic() - pending.sent_s:.1f} s: {reason}; the rule alert stands")
        if pending.goal_handle is not None:
            pending.goal_handle.cancel_goal_async()

    def _publish(self, decision: InterventionDecision) -> None:
        self._publisher.publish(decision_to_msg(decision, self.get_clock().now().to_msg()))
        self.get_logger().info(
            f"{LEVEL_NAMES[int(decision.level)]} [{decision.source}] {decision.action}: {decision.message}"
        )

    # --- health ----------------------------------------------------------------------------------
    def _health(self) -> HealthReport:
        values: dict[str, object] = self.counters.snapshot()
        values["llm_enabled"] = self._client is not None
        llm_ready = self._client is not None and self._client.server_is_ready()
        values["llm_available"] = llm_ready
        values["advice_pending"] = len(self.pending)
        if self.policy is None:
            return HealthReport("WARN", "not configured", values)
        if self._client is not None and not llm_ready:
            return HealthReport("WARN", "rule alerts only: the llm node is not available", values)
        return HealthReport("OK", "rule policy active", values)


def main(args: list[str] | None = None) -> int:
    return run_node(InterventionNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
