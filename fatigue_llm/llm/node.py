"""The llm node (lifecycle, its own process): the on-device LLM behind the Advise action.

The intervention node publishes the rule decision first and then sends an Advise goal; this node
retrieves similar cases, lets the model write the follow-up (streamed as action feedback and on
``intervention/partial``), triages and escalates to the cloud outbox, and returns the follow-up as
the result. It runs apart from the safety path so that whatever the model runtime does (SIGILL,
SIGSEGV, OOM kill, hang) costs advice only; the launcher respawns this process.

- one model, one answer at a time: a goal waiting behind a newer one is dropped (superseded);
- a watchdog ends the process when an answer is stuck past ``generation_deadline + hang_grace``
  (a hung native call cannot be interrupted from Python; a respawn can recover it);
- ``model_memory_mb`` caps the memory the model may take, so an oversized model fails to load here
  instead of the kernel's OOM killer picking a process of its own choosing.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
import uuid

from fatigue_msgs.action import Advise
from fatigue_msgs.msg import FatigueFeatures as FatigueFeaturesMsg
from fatigue_msgs.msg import Intervention, InterventionPartial
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy

from fatigue_llm import topics
from fatigue_llm.diagnostics import Counters, HealthReport
from fatigue_llm.intervention.types import InterventionDecision
from fatigue_llm.llm.config import LlmConfig
from fatigue_llm.ros.convert import decision_to_msg, msg_to_decision, msg_to_features_checked
from fatigue_llm.ros.diagnostics import DiagnosticsPublisher
from fatigue_llm.ros.params import declare_config
from fatigue_llm.ros.runner import run_node

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
WATCHDOG_PERIOD_S = 0.5
PARTIAL_PERIOD_S = 0.1  # at most ~10 partial texts a second: each is DDS work on a CPU the model saturates
HUNG_EXIT_CODE = 70  # EX_SOFTWARE: the supervisor (launcher / launch_ros respawn) starts us again
# Fault injection for the fault tests only: while the file this variable names exists, an answer's
# first streamed text blocks the generation thread for good, as a native call that never returns
# would. Never set in a vehicle.
HANG_TRIGGER_ENV = "FATIGUE_LLM_HANG_TRIGGER"


def process_data_mib() -> float:
    """The process's data memory now (VmData: heap and private anonymous mappings), MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def lower_priority(niceness: int) -> None:
    """Run every thread of this process at nice ``niceness`` at least (Linux nice values are per thread;
    threads created later, like llama.cpp's workers, inherit the creating thread's). The model saturates the
    CPU while it loads and writes; the rule alerts of the intervention process must not wait behind it."""
    for task in os.listdir("/proc/self/task"):
        tid = int(task)
        try:
            os.setpriority(os.PRIO_PROCESS, tid, max(niceness, os.getpriority(os.PRIO_PROCESS, tid)))
        except (ProcessLookupError, PermissionError):
            pass  # a thread that just ended


def cap_model_memory(model_mib: int) -> int:
    """Limit the process's data memory to what it uses now plus ``model_mib``. Returns the limit, MiB."""
    limit_mib = int(process_data_mib() + model_mib)
    limit = limit_mib * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    return limit_mib


class LlmNode(LifecycleNode):
    def __init__(self, own_process: bool = False, **node_options) -> None:
        """``own_process``: this node is the process (``llm_node``), so it may lower the process priority."""
        super().__init__("llm", **node_options)
        self.counters = Counters("advice_answered", "advice_fallback", "advice_superseded", "advice_rejected",
                                 "advice_bad_goal", "features_rejected", "features_out_of_range")
        self._diagnostics = DiagnosticsPublisher(self, self._health)  # first: destroy_node closes it
        self.load_error = ""
        self.engine = None
        self._busy: tuple[str, float] | None = None  # (rule id, monotonic start) of the answer running
        self.declare_parameter("autostart", True)
        self.config: LlmConfig = declare_config(self, LlmConfig)
        self.instance = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # tells the client when we were respawned
        if own_process and self.config.niceness > 0:
            lower_priority(self.config.niceness)
        self._model_lock = threading.Lock()
        self._latest_goal: str | None = None
        self._server = None
        self._partial_publisher = None
        self._followup_publisher = None
        self._subscription = None
        self._poll_timer = None
        self._watchdog = threading.Thread(target=self._watch, name="llm-watchdog", daemon=True)

    # --- lifecycle -------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from fatigue_llm.intervention.engine import InterventionEngine

        started = time.monotonic()
        try:
            if self.config.model_memory_mb > 0:
                limit = cap_model_memory(self.config.model_memory_mb)
                self.get_logger().info(f"model memory capped at {self.config.model_memory_mb} MiB "
                                       f"(process data limit {limit} MiB)")
            engine = InterventionEngine(self.config)
            engine.load()
        except Exception as error:  # noqa: BLE001 - reported, then the process exits
            self.load_error = f"{type(error).__name__}: {error}"
            self.get_logger().fatal(f"on-device LLM could not load: {self.load_error}"
                                    + (f" (model_memory_mb={self.config.model_memory_mb})"
                                       if self.config.model_memory_mb > 0 else ""))
            return TransitionCallbackReturn.FAILURE
        self.engine = engine
        self.get_logger().info(f"LLM engine loaded in {time.monotonic() - started:.1f} s (instance {self.instance})")
        self._partial_publisher = self.create_publisher(InterventionPartial, topics.INTERVENTION_PARTIAL, RELIABLE)
        self._followup_publisher = self.create_lifecycle_publisher(Intervention, topics.INTERVENTION, RELIABLE)
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)
        # goals are answered in their own threads (the model lock serialises them), so the executor
        # keeps serving cancels, features and diagnostics while the model writes
        self._server = ActionServer(
            self, Advise, topics.ADVISE_ACTION, execute_callback=self._execute,
            goal_callback=self._on_goal, cancel_callback=lambda _goal: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup())
        self._subscription = self.create_subscription(
            FatigueFeaturesMsg, topics.FATIGUE_FEATURES, self._on_features, RELIABLE,
            callback_group=MutuallyExclusiveCallbackGroup())
        self._poll_timer = self.create_timer(0.5, self._publish_cloud_followups)
        if not self._watchdog.is_alive():
            self._watchdog.start()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_serving()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._close_engine()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_serving()
        self._close_engine()
        return super().on_shutdown(state)

    def destroy_node(self) -> None:
        self._stop_serving()
        self._close_engine()
        self._diagnostics.close()
        super().destroy_node()

    def _stop_serving(self) -> None:
        if self._server is not None:
            self._server.destroy()
            self._server = None
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if self._poll_timer is not None:
            self.destroy_timer(self._poll_timer)
            self._poll_timer = None

    def _close_engine(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            with self._model_lock:
                engine.close()  # saves the case store; the outbox is SQLite, committed per item

    # --- advice ----------------------------------------------------------------------------------
    def _on_goal(self, goal: Advise.Goal) -> GoalResponse:
        if self.engine is None:
            self.counters.increment("advice_rejected")
            return GoalResponse.REJECT
        self._latest_goal = goal.rule.id
        return GoalResponse.ACCEPT

    def _execute(self, goal_handle) -> Advise.Result:
        goal = goal_handle.request
        rule_id = goal.rule.id
        received = time.monotonic()
        with self._model_lock:
            if self._latest_goal != rule_id:
                return self._abandon(goal_handle, "superseded by a newer request", "advice_superseded")
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
                return self._result(None, "canceled by the client")
            try:
                features, _ = msg_to_features_checked(goal.features)
                rule = msg_to_decision(goal.rule)
            except (ValueError, TypeError) as error:
                return self._abandon(goal_handle, f"bad goal: {error}", "advice_bad_goal")
            self._busy = (rule_id, time.monotonic())
            try:
                decision = self.engine.advise(features, rule, on_message=self._streamer(goal_handle, rule_id))
            finally:
                self._busy = None
        failure = self.engine.last_failure if self.engine is not None else "engine closed"
        self.counters.increment("advice_answered" if not failure else "advice_fallback")
        self.get_logger().info(f"advice for {rule_id[:8]} in {time.monotonic() - received:.2f} s "
                               f"(engine {decision.latency_ms / 1000:.2f} s)")
        if failure:
            self.get_logger().warning(f"advice for {rule_id[:8]}: model answer not used ({failure})")
        self._publish_final_partial(rule_id, decision.message)
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
        else:
            goal_handle.succeed()
        return self._result(decision, failure)

    def _streamer(self, goal_handle, rule_id: str):
        trigger = os.environ.get(HANG_TRIGGER_ENV)
        last_sent = [0.0]

        def on_message(text: str) -> None:
            now = time.monotonic()
            if now - last_sent[0] < PARTIAL_PERIOD_S:
                return  # the next one (or the final partial) carries this text too
            last_sent[0] = now
            goal_handle.publish_feedback(Advise.Feedback(follows_id=rule_id, text=text))
            msg = InterventionPartial(follows_id=rule_id, text=text, final=False)
            msg.header.stamp = self.get_clock().now().to_msg()
            self._partial_publisher.publish(msg)
            if trigger and os.path.exists(trigger):  # fault injection: a call that never returns
                self.get_logger().warning(f"fault injection: {HANG_TRIGGER_ENV} set, generation hangs")
                threading.Event().wait()

        return on_message

    def _publish_final_partial(self, rule_id: str, text: str) -> None:
        msg = InterventionPartial(follows_id=rule_id, text=text, final=True)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._partial_publisher.publish(msg)

    def _abandon(self, goal_handle, reason: str, counter: str) -> Advise.Result:
        self.counters.increment(counter)
        self.get_logger().info(f"advice for {goal_handle.request.rule.id[:8]} dropped: {reason}")
        goal_handle.abort()
        return self._result(None, reason)

    def _result(self, decision: InterventionDecision | None, failure: str) -> Advise.Result:
        result = Advise.Result(failure=failure, llm_instance=self.instance)
        if decision is not None:
            result.intervention = decision_to_msg(decision, self.get_clock().now().to_msg())
        return result

    def _on_features(self, msg: FatigueFeaturesMsg) -> None:
        engine = self.engine
        if engine is None:
            return
        try:
            features, violations = msg_to_features_checked(msg)
        except (ValueError, TypeError) as error:
            self.counters.increment("features_rejected")
            self.get_logger().warning(f"rejected features: {error}", throttle_duration_sec=5.0)
            return
        if violations:
            self.counters.increment("features_out_of_range")
        engine.observe(features)  # closed loop: how well earlier advice worked

    def _publish_cloud_followups(self) -> None:
        if self.engine is None:
            return
        for decision in self.engine.poll_followups():
            self._followup_publisher.publish(decision_to_msg(decision, self.get_clock().now().to_msg()))
            self.get_logger().info(f"cloud follow-up [{decision.action}]: {decision.message}")

    # --- health ----------------------------------------------------------------------------------
    def _watch(self) -> None:
        """End the process when an answer is stuck past its deadline (the respawn recovers)."""
        limit = self.config.generation_deadline + self.config.hang_grace
        while True:
            time.sleep(WATCHDOG_PERIOD_S)
            busy = self._busy
            if busy is not None and time.monotonic() - busy[1] > limit:
                rule_id, since = busy
                message = (f"advice for {rule_id[:8]} abandoned: the model has not returned for "
                           f"{time.monotonic() - since:.1f} s (deadline {self.config.generation_deadline:.1f} s "
                           f"+ grace {self.config.hang_grace:.1f} s); exiting with code {HUNG_EXIT_CODE} "
                           "so that the llm node is respawned")
                self.get_logger().fatal(message)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(HUNG_EXIT_CODE)  # a stuck native call cannot be joined; nothing to save that
                # is not already committed (case store saved per answer, outbox per item)

    def _health(self) -> HealthReport:
        values: dict[str, object] = {"instance": self.instance, "model_loaded": self.engine is not None,
                                     **self.counters.snapshot()}
        busy = self._busy
        values["answering_s"] = round(time.monotonic() - busy[1], 1) if busy else 0.0
        engine = self.engine
        if engine is not None and engine.escalator is not None:
            values["outbox_depth"] = engine.escalator.outbox.pending_count()
        if engine is None:
            return HealthReport("ERROR", f"model not loaded{': ' + self.load_error if self.load_error else ''}",
                                values)
        if busy and values["answering_s"] > self.config.generation_deadline:
            return HealthReport("WARN", "answer running past its deadline", values)
        return HealthReport("OK", "model loaded", values)


def main(args: list[str] | None = None) -> int:
    from rclpy.executors import MultiThreadedExecutor

    # the action server answers in a thread of its own while the executor serves cancels and health
    return run_node(lambda: LlmNode(own_process=True), args,
                    executor_factory=lambda: MultiThreadedExecutor(num_threads=3))


if __name__ == "__main__":
    raise SystemExit(main())
