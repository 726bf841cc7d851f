"""Faults of the LLM process never silence the safety path (real processes, real signals, real DDS).

The intervention and llm nodes run as separate processes under our launcher (llm respawned, as in
the vehicle node set); this test process publishes CRITICAL-level features at 2 Hz and listens to
/intervention and /intervention/partial. In the middle of an answer (at its first streamed text) the
llm process is killed with SIGKILL, then with SIGSEGV; then the model is made to hang past its
deadline; then the llm node is started with a memory cap too small for the model. Every time: rule
alerts keep arriving at their cadence, the abandoned request is logged with its reason, the llm node is
respawned, the next advice arrives from the new process, and the cloud outbox keeps every request.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.ros]

CRITICAL_COOLDOWN_S = 1.0
FEATURE_PERIOD_S = 0.5
MAX_ALERT_GAP_S = 2.5        # alerts are due every 1 s; a blocked safety path shows gaps of many seconds
RECOVERY_TIMEOUT_S = 150.0   # respawn delay + process start + model load on a loaded 2-core machine


class Output:
    """Thread-safe text sink for the launcher's prefixed node output."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            self._lines.append(text)

    def flush(self) -> None:
        pass

    def text(self) -> str:
        with self._lock:
            return "".join(self._lines)


class Car:
    """The probe's view of the running node set."""

    def __init__(self, graph, launcher, out: Output, outbox: Path, hang_trigger: Path, params: Path,
                 params_data: dict) -> None:
        from fatigue_msgs.msg import FatigueFeatures, Intervention, InterventionPartial
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.launcher, self.out, self.outbox, self.hang_trigger = launcher, out, outbox, hang_trigger
        self.params, self.params_data = params, params_data
        self.rules: list[tuple[float, float]] = []      # (monotonic received, latency s)
        self.followups: list[tuple[float, object]] = []  # (monotonic received, Intervention)
        self.partials: list[tuple[float, object]] = []
        self._sent: list[float] = []
        self._kill_on_partial: int | None = None        # signal to send at the next streamed text
        self.killed_at: float | None = None
        self._lock = threading.Lock()
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.node = graph.probe("fault_probe")
        self._features_msg = FatigueFeatures
        self._publisher = self.node.create_publisher(FatigueFeatures, "fatigue/features", reliable)
        self.node.create_subscription(Intervention, "intervention", self._on_intervention, reliable)
        self.node.create_subscription(InterventionPartial, "intervention/partial", self._on_partial, reliable)
        self.node.create_timer(FEATURE_PERIOD_S, self._publish_features)

    def _publish_features(self) -> None:
        msg = self._features_msg()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.window_duration, msg.face_visible_fraction = 60.0, 1.0
        for name in ("blink_frequency", "head_nod", "voice_quality", "steering_reversal_rate", "speed_variance",
                     "yaw_rate", "mean_blink_duration", "steering_angle_std", "sdlp", "time_driving"):
            setattr(msg, name, float("nan"))
        msg.eye_closure_ratio, msg.time_awake = 0.34, 17.0
        msg.microsleep, msg.microsleep_count, msg.longest_eye_closure = True, 1, 1.4
        msg.trigger = self._features_msg.TRIGGER_EVENT
        with self._lock:
            self._sent.append(time.monotonic())
        self._publisher.publish(msg)

    def _on_intervention(self, msg) -> None:
        now = time.monotonic()
        with self._lock:
            if msg.source == "rule" and not msg.follows_id:
                sent = max((t for t in self._sent if t <= now), default=now)
                self.rules.append((now, now - sent))
            else:
                self.followups.append((now, msg))

    def _on_partial(self, msg) -> None:
        now = time.monotonic()
        with self._lock:
            self.partials.append((now, msg))
            sig, self._kill_on_partial = self._kill_on_partial, None
        if sig is not None and not msg.final:
            os.kill(self.llm_pid(), sig)
            self.killed_at = now

    # --- helpers for the scenarios -----------------------------------------------------------------
    def llm_pid(self) -> int:
        return next(node.process.pid for node in self.launcher.nodes if node.spec.name == "llm")

    def kill_mid_answer(self, sig: int) -> None:
        self.killed_at = None
        with self._lock:
            self._kill_on_partial = sig

    def local_followups_since(self, since: float) -> list:
        with self._lock:
            return [msg for at, msg in self.followups if at > since and msg.source == "local_llm"]

    def alert_gaps_since(self, since: float) -> list[float]:
        with self._lock:
            times = [since] + [at for at, _ in self.rules if at > since] + [time.monotonic()]
        return [b - a for a, b in zip(times, times[1:], strict=False)]

    def latencies_since(self, since: float) -> list[float]:
        with self._lock:
            return [latency for at, latency in self.rules if at > since]

    def outbox_ids(self) -> set[str]:
        if not self.outbox.exists():
            return set()
        with sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True) as db:
            return {row[0] for row in db.execute("SELECT id FROM outbox")}

    def write_params(self, **llm_overrides) -> None:
        data = yaml.safe_load(yaml.safe_dump(self.params_data))
        data["/**/llm"]["ros__parameters"].update(llm_overrides)
        tmp = self.params.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(data))
        tmp.replace(self.params)  # atomic: a respawning node never reads half a file


def wait_for(predicate, timeout: float, poll: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


@pytest.fixture(scope="module")
def car(repo, tmp_path_factory):
    from fatigue_llm.nodeset import VEHICLE_NODES
    from fatigue_llm.ros.launcher import Launcher
    from test.ros.helpers import Graph

    tmp = tmp_path_factory.mktemp("faults")
    outbox, hang_trigger = tmp / "outbox.sqlite3", tmp / "hang"
    data = yaml.safe_load((repo / "config" / "vehicle.yaml").read_text())
    data["/**/intervention"]["ros__parameters"].update(
        critical_cooldown=CRITICAL_COOLDOWN_S, advice_timeout=6.0)
    data["/**/llm"]["ros__parameters"].update(
        generation_deadline=4.0, hang_grace=2.0, case_store_path=str(tmp / "cases"), outbox_path=str(outbox),
        # cloud down (nothing listens on the discard port): escalations stay queued in the outbox
        cloud_enabled=True, cloud_url="http://127.0.0.1:9/v1", cloud_model="none", cloud_timeout=1.0)
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump(data))
    specs = tuple(spec for spec in VEHICLE_NODES if spec.name in ("intervention", "llm"))
    assert next(spec for spec in specs if spec.name == "llm").respawn, "the vehicle node set respawns llm"
    out = Output()
    env = dict(os.environ, FATIGUE_LLM_HANG_TRIGGER=str(hang_trigger))
    launcher = Launcher("vehicle", params, {}, out=out, env=env, specs=specs)
    graph = Graph()
    stop = threading.Event()
    car = Car(graph, launcher, out, outbox, hang_trigger, params, data)
    launcher.start()
    watcher = threading.Thread(target=launcher.wait, args=(stop,), daemon=True)
    watcher.start()
    try:
        assert wait_for(lambda: car.local_followups_since(0.0), RECOVERY_TIMEOUT_S), \
            "no local_llm follow-up before any fault:\n" + out.text()[-4000:]
        yield car
    finally:
        stop.set()
        watcher.join(timeout=5.0)
        launcher.stop()
        graph.close()


def _recovers_after(car, started: float, restarts_before: int, what: str) -> None:
    out = car.out
    assert wait_for(lambda: car.launcher.restarts["llm"] > restarts_before, 30.0), \
        f"llm not respawned after {what}:\n{out.text()[-3000:]}"
    assert wait_for(lambda: car.local_followups_since(started + 0.5), RECOVERY_TIMEOUT_S), \
        f"no advice after the llm restart ({what}):\n{out.text()[-3000:]}"
    gaps = car.alert_gaps_since(started)
    assert max(gaps) < MAX_ALERT_GAP_S, f"rule alerts stalled during {what}: gaps {max(gaps):.2f} s"
    assert len(car.latencies_since(started)) >= 3


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV], ids=["SIGKILL", "SIGSEGV"])
def test_llm_killed_mid_answer_alerts_continue_and_advice_returns(car, sig):
    restarts = car.launcher.restarts["llm"]
    exits = len(car.launcher.exits)
    queued = car.outbox_ids()
    started = time.monotonic()
    car.kill_mid_answer(sig)
    assert wait_for(lambda: car.killed_at is not None, 60.0), "no answer was streamed to kill in the middle of"
    _recovers_after(car, started, restarts, sig.name)
    death = car.launcher.exits[exits]
    assert (death.name, death.signal) == ("llm", sig.name)
    assert f"llm died: killed by signal {sig.name}" in car.out.text()
    # the goal in flight when the process died is abandoned by the client, with its reason
    assert wait_for(lambda: "abandoned after" in car.out.text().split(f"signal {sig.name}")[-1], 15.0)
    # every escalation queued before the crash is still in the outbox (SQLite, committed per item)
    assert queued, "no escalation was queued before the crash (cloud escalation at CRITICAL)"
    assert queued <= car.outbox_ids()


def test_llm_hung_past_deadline_is_abandoned_and_respawned(car):
    restarts = car.launcher.restarts["llm"]
    started = time.monotonic()
    car.hang_trigger.touch()
    try:
        assert wait_for(lambda: "generation hangs" in car.out.text(), 60.0), car.out.text()[-3000:]
    finally:
        car.hang_trigger.unlink()  # the respawned process must answer normally
    _recovers_after(car, started, restarts, "a hang")
    tail = car.out.text().split("generation hangs")[-1]
    assert "has not returned for" in tail and "exiting with code 70" in tail  # the llm's own watchdog
    # the client gave the hung request up too (its deadline, or a newer alert's request replaced it)
    assert "abandoned after" in tail.split("[intervention]", 1)[-1]
    assert any(e.name == "llm" and e.code == 70 for e in car.launcher.exits)


def test_llm_with_too_little_memory_fails_cleanly_and_recovers(car):
    restarts = car.launcher.restarts["llm"]
    exits = len(car.launcher.exits)
    started = time.monotonic()
    car.write_params(model_memory_mb=20)  # SmolLM2 Q4_1 needs ~100 MiB
    os.kill(car.llm_pid(), signal.SIGKILL)
    try:
        assert wait_for(lambda: any(e.name == "llm" and e.code == 1 for e in car.launcher.exits[exits:]), 90.0), \
            car.out.text()[-3000:]
    finally:
        car.write_params()  # the operator's fix; the next respawn loads the model
    assert "could not load" in car.out.text() and "(model_memory_mb=20)" in car.out.text()
    _recovers_after(car, started, restarts + 1, "a memory cap")
