"""The intervention + llm nodes as deployed (two processes, respawning llm), TinyLlama-1.1B Q4_0.

Both nodes run under our launcher with the vehicle node set's specs (the llm node respawned after
2 s); the llm node loads the TinyLlama-shape Q4_0 GGUF (random weights, built and cached by
``bench_llm.py``). This process publishes FatigueFeatures over DDS and receives Interventions, the
streamed partial text and /diagnostics. Side by side in the same run:

- normal rounds: WARNING features (rule alert with the LLM idle; the LLM starts on them), 0.5 s later
  MICROSLEEP features (rule alert while the LLM writes), then wait for the follow-ups;
- kill rounds: WARNING features, SIGKILL to the llm process at its first streamed text, then MICROSLEEP
  features every 0.25 s until the respawned llm serves again (alert latency while it is killed and
  respawned; respawn time = kill -> the new process's /diagnostics say the model is loaded), then one
  more WARNING to show the next advice arrives;
- the same requests through ``InterventionEngine.advise`` in this process (the in-process design the
  split replaced), for the cost of the split;
- plain llama-cpp-python loading the same GGUF, for the memory ratio.

Targets: rule alert <= 100 ms at all times; follow-up p50 within 5 % of the in-process figure.

    .venv/bin/python bench/bench_intervention_node.py [--rounds 8] [--kill-rounds 3] [--threads 2]

Prints a table and JSON (also written to bench/results/intervention_node.json).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 50))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fatigue_llm.ros.environment import apply_local_dds_defaults  # noqa: E402

apply_local_dds_defaults()

import rclpy  # noqa: E402
from bench_llm import DEFAULT_CACHE, prepare_models  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from fatigue_msgs.msg import FatigueFeatures as FeaturesMsg  # noqa: E402
from fatigue_msgs.msg import Intervention, InterventionPartial  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

from fatigue_llm import topics  # noqa: E402
from fatigue_llm.features.types import FatigueFeatures  # noqa: E402
from fatigue_llm.ros.convert import features_to_msg  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "intervention_node.json"
RELIABLE = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
ALERT_TARGET_MS = 100.0
SPLIT_COST_TARGET = 1.05
PLAIN_LLAMA = """
import sys, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=1024, n_threads=int(sys.argv[2]), use_mmap=False,
                      verbose=False)
llm.create_chat_completion(messages=[{"role": "user", "content": "Say hello."}], max_tokens=16)
print(open("/proc/self/status").read())
"""


def status_kib(text: str, field: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(field + ":"))
    return float(line.split()[1])


def plain_llama_peak_mib(model: str, threads: int) -> float:
    done = subprocess.run([sys.executable, "-c", PLAIN_LLAMA, model, str(threads)], capture_output=True,
                          text=True, check=True, timeout=600)
    return status_kib(done.stdout, "VmHWM") / 1024


def warning_features(t: float) -> FatigueFeatures:
    return FatigueFeatures(timestamp_s=t, window_duration=60.0, eye_closure_ratio=0.2, blink_frequency=30.0,
                           time_awake=15.0, time_driving=3600.0)


def microsleep_features(t: float) -> FatigueFeatures:
    return FatigueFeatures(timestamp_s=t, window_duration=60.0, eye_closure_ratio=0.32, microsleep=True,
                           longest_eye_closure=1.3, microsleep_count=1, trigger_event=True)


class Probe:
    """Publishes features; records Interventions, partial texts and the llm node's health with arrival times."""

    def __init__(self) -> None:
        self.node = rclpy.create_node("bench_intervention_probe")
        self.received: list[tuple[float, Intervention]] = []
        self.partials: list[tuple[float, InterventionPartial]] = []
        self.llm_health: list[tuple[float, dict]] = []
        self.on_partial = None
        self.node.create_subscription(Intervention, "/" + topics.INTERVENTION,
                                      lambda m: self.received.append((time.monotonic(), m)), RELIABLE)
        self.node.create_subscription(InterventionPartial, "/" + topics.INTERVENTION_PARTIAL, self._partial,
                                      RELIABLE)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, RELIABLE)
        self.publisher = self.node.create_publisher(FeaturesMsg, "/" + topics.FATIGUE_FEATURES, RELIABLE)

    def _partial(self, msg: InterventionPartial) -> None:
        now = time.monotonic()
        self.partials.append((now, msg))
        if self.on_partial is not None and not msg.final:
            self.on_partial()

    def _diagnostics(self, msg: DiagnosticArray) -> None:
        now = time.monotonic()
        for status in msg.status:
            if status.name.endswith("/llm"):
                self.llm_health.append((now, {kv.key: kv.value for kv in status.values}))

    def spin_until(self, condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            rclpy.spin_once(self.node, timeout_sec=0.1)  # arrival times are taken in the callbacks
        return condition()

    def publish(self, features: FatigueFeatures) -> float:
        sent = time.monotonic()
        self.publisher.publish(features_to_msg(features))
        return sent

    def first(self, predicate, since: float = 0.0) -> tuple[float, Intervention] | None:
        return next(((t, m) for t, m in self.received if t >= since and predicate(m)), None)

    def alert_after(self, sent: float, timeout: float = 5.0) -> float:
        """Latency (ms) of the first rule alert received after ``sent``."""
        is_rule = lambda m: m.source == "rule"  # noqa: E731
        self.spin_until(lambda: self.first(is_rule, sent) is not None, timeout)
        found = self.first(is_rule, sent)
        if found is None:
            raise SystemExit(f"no rule alert within {timeout} s of a publish")
        return (found[0] - sent) * 1000


def follows(rule: Intervention):
    return lambda m: m.source == "local_llm" and m.follows_id == rule.id


def run_round(probe: Probe, t: float, timeout: float) -> dict:
    sent_warning = probe.publish(warning_features(t))
    idle_ms = probe.alert_after(sent_warning)
    warning = probe.first(lambda m: m.source == "rule", sent_warning)[1]
    probe.spin_until(lambda: False, 0.5)  # the LLM is now writing the WARNING follow-up
    sent_critical = probe.publish(microsleep_features(t + 1.0))
    busy_ms = probe.alert_after(sent_critical)
    critical = probe.first(lambda m: m.source == "rule" and m.level == Intervention.CRITICAL, sent_critical)[1]
    probe.spin_until(lambda: probe.first(follows(critical), sent_critical) is not None, timeout)
    advice = probe.first(follows(warning), sent_warning)
    partial = next((at for at, p in probe.partials if at >= sent_warning and p.follows_id == warning.id
                    and not p.final), None)
    return {
        "alert_idle_ms": idle_ms, "alert_busy_ms": busy_ms,
        "alert_while_llm_generating": advice is not None and advice[0] > sent_critical,
        "followup_s": advice[0] - sent_warning if advice else None,
        "first_partial_s": partial - sent_warning if partial else None,
        "followup_message": advice[1].message if advice else None,
        "critical_followup": probe.first(follows(critical), sent_critical) is not None,
    }


def run_kill_round(probe: Probe, launcher, t: float, timeout: float) -> dict:
    """Kill the llm at its first streamed text; alerts every 0.25 s until the respawned llm is loaded."""
    pid = next(node.process.pid for node in launcher.nodes if node.spec.name == "llm")
    killed: list[float] = []

    def kill() -> None:
        if not killed:
            os.kill(pid, signal.SIGKILL)
            killed.append(time.monotonic())

    probe.on_partial = kill
    probe.publish(warning_features(t))
    probe.spin_until(lambda: bool(killed), timeout)
    probe.on_partial = None
    if not killed:
        raise SystemExit("the llm never streamed text to be killed at")
    old = {h.get("instance") for _, h in probe.llm_health}
    latencies = []
    back = lambda: any(at > killed[0] and h.get("instance") not in old and h.get("model_loaded") == "true"  # noqa: E731
                       for at, h in probe.llm_health)
    step = 0
    while not back() and time.monotonic() - killed[0] < timeout:
        step += 1
        latencies.append(probe.alert_after(probe.publish(microsleep_features(t + 0.25 * step))))
        probe.spin_until(lambda: False, 0.25)
    if not back():
        raise SystemExit(f"the llm node was not back within {timeout} s of the kill")
    ready = next(at for at, h in probe.llm_health if at > killed[0] and h.get("instance") not in old
                 and h.get("model_loaded") == "true")
    # the next advice after the restart
    sent = probe.publish(warning_features(t + 100.0))
    probe.alert_after(sent)
    rule = probe.first(lambda m: m.source == "rule", sent)[1]
    probe.spin_until(lambda: probe.first(follows(rule), sent) is not None, timeout)
    advice = probe.first(follows(rule), sent)
    return {"respawn_s": ready - killed[0], "alert_during_respawn_ms": latencies,
            "advice_after_restart_s": advice[0] - sent if advice else None}


class Sink:
    """Keeps the nodes' output (the launcher's prefixed lines) for a failure report."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.append(text)

    def flush(self) -> None:
        pass


def measure_nodes(model: str, args: argparse.Namespace, state: Path) -> tuple[list, list, dict]:
    from fatigue_llm.nodeset import VEHICLE_NODES
    from fatigue_llm.ros.launcher import Launcher

    data = yaml.safe_load((REPO / "config" / "vehicle.yaml").read_text())
    data["/**/intervention"]["ros__parameters"].update(cooldown=0.0, critical_cooldown=0.0, advice_timeout=60.0)
    data["/**/llm"]["ros__parameters"].update(
        model_path=model, n_threads=args.threads, case_store_path=str(state / "cases"),
        outbox_path=str(state / "outbox.sqlite3"), generation_deadline=30.0)
    params = state / "params.yaml"
    params.write_text(yaml.safe_dump(data))
    specs = tuple(spec for spec in VEHICLE_NODES if spec.name in ("intervention", "llm"))
    sink = Sink()
    launcher = Launcher("vehicle", params, {}, out=sink, specs=specs)
    stop = threading.Event()
    probe = Probe()
    rows, kills, rss = [], [], {}
    launcher.start()
    watcher = threading.Thread(target=launcher.wait, args=(stop,), daemon=True)
    watcher.start()
    try:
        if not probe.spin_until(lambda: any(h.get("model_loaded") == "true" for _, h in probe.llm_health), 300.0):
            raise SystemExit("the llm node did not load the model within 300 s:\n" + "".join(sink.lines[-30:]))
        rows = [run_round(probe, 1000.0 + 100.0 * i, timeout=60.0) for i in range(-1, args.rounds)][1:]
        kills = [run_kill_round(probe, launcher, 5000.0 + 1000.0 * i, timeout=120.0)
                 for i in range(args.kill_rounds)]
        for node in launcher.nodes:
            status = Path(f"/proc/{node.process.pid}/status").read_text()
            rss[node.spec.name] = status_kib(status, "VmHWM") / 1024
    finally:
        stop.set()
        watcher.join(timeout=5.0)
        launcher.stop()
        probe.node.destroy_node()
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.with_suffix(".log").write_text("".join(sink.lines))  # the nodes' own timings and errors
    return rows, kills, rss


def measure_in_process(model: str, args: argparse.Namespace, rounds: int) -> list[float]:
    """features -> follow-up through InterventionEngine.advise in this process (no split, no DDS), on the
    same request sequence as the node rounds (so llama.cpp reuses as much of the previous prompt)."""
    from fatigue_llm.intervention.config import InterventionConfig
    from fatigue_llm.intervention.engine import InterventionEngine, rule_decision_for
    from fatigue_llm.llm.config import LlmConfig

    config = LlmConfig(model_path=model, n_threads=args.threads, generation_deadline=30.0)
    rules = InterventionConfig(cooldown=0.0, critical_cooldown=0.0)
    with tempfile.TemporaryDirectory() as state:
        engine = InterventionEngine(config, state_dir=Path(state))
        engine.load()
        try:
            latencies = []
            for i in range(-1, rounds):  # the node rounds' sequence: WARNING (timed), then MICROSLEEP
                t = 1000.0 + 100.0 * i
                features = warning_features(t)
                started = time.perf_counter()
                engine.advise(features, rule_decision_for(features, rules))
                if i >= 0:
                    latencies.append(time.perf_counter() - started)
                critical = microsleep_features(t + 1.0)
                engine.advise(critical, rule_decision_for(critical, rules))
            return latencies
        finally:
            engine.close()


def summarize(rows: list, kills: list, rss: dict, in_process: list[float], plain_mib: float, args) -> dict:
    followups = np.array([r["followup_s"] for r in rows if r["followup_s"] is not None])
    partials = np.array([r["first_partial_s"] for r in rows if r["first_partial_s"] is not None])
    idle = np.array([r["alert_idle_ms"] for r in rows])
    busy = np.array([r["alert_busy_ms"] for r in rows])
    respawning = np.array([ms for k in kills for ms in k["alert_during_respawn_ms"]]) if kills else np.array([])
    inproc = np.array(in_process)
    every_alert = np.concatenate([idle, busy, respawning])
    return {
        "bench": "intervention_node", "rounds": len(rows), "kill_rounds": len(kills), "threads": args.threads,
        "alert_idle_ms_p50": float(np.median(idle)), "alert_idle_ms_max": float(idle.max()),
        "alert_busy_ms_p50": float(np.median(busy)), "alert_busy_ms_max": float(busy.max()),
        "alert_respawning_ms_p50": float(np.median(respawning)) if respawning.size else None,
        "alert_respawning_ms_max": float(respawning.max()) if respawning.size else None,
        "alerts_during_respawn": int(respawning.size),
        "alert_target_met": bool(every_alert.max() <= ALERT_TARGET_MS),
        "alerts_while_llm_generating": sum(r["alert_while_llm_generating"] for r in rows),
        "followups": len(followups), "followup_s_p50": float(np.median(followups)),
        "followup_s_p95": float(np.percentile(followups, 95)),
        "in_process_s_p50": float(np.median(inproc)), "in_process_s_p95": float(np.percentile(inproc, 95)),
        "split_cost_ratio_p50": float(np.median(followups) / np.median(inproc)),
        "first_partial_s_p50": float(np.median(partials)) if partials.size else None,
        "first_partial_s_p95": float(np.percentile(partials, 95)) if partials.size else None,
        "critical_followups": sum(r["critical_followup"] for r in rows),
        "respawn_s": [round(k["respawn_s"], 2) for k in kills],
        "advice_after_restart_s": [k["advice_after_restart_s"] for k in kills],
        "intervention_peak_rss_mib": rss.get("intervention"), "llm_peak_rss_mib": rss.get("llm"),
        "plain_llama_peak_rss_mib": plain_mib,
        "rss_ratio_llm_to_plain": rss["llm"] / plain_mib if rss.get("llm") else None,
    }


def table(s: dict) -> str:
    def ms(p50, top):
        return f"{p50:.1f} | {top:.1f}" if p50 is not None else "- | -"

    respawns = ", ".join(f"{v:.1f}" for v in s["respawn_s"]) or "-"
    after = ", ".join(f"{v:.2f}" if v is not None else "none" for v in s["advice_after_restart_s"]) or "-"
    lines = [
        f"| TinyLlama Q4_0, {s['threads']} threads, intervention + llm processes | p50 | max / p95 | notes |",
        "|---|---|---|---|",
        f"| rule alert, LLM idle (ms) | {ms(s['alert_idle_ms_p50'], s['alert_idle_ms_max'])} | |",
        f"| rule alert, LLM writing (ms) | {ms(s['alert_busy_ms_p50'], s['alert_busy_ms_max'])} | "
        f"{s['alerts_while_llm_generating']}/{s['rounds']} published while the model was mid-answer |",
        "| rule alert, llm killed and respawning (ms) | "
        f"{ms(s['alert_respawning_ms_p50'], s['alert_respawning_ms_max'])} | {s['alerts_during_respawn']} "
        f"alerts over {s['kill_rounds']} SIGKILLs; target <= {ALERT_TARGET_MS:.0f} ms at all times: "
        f"{'met' if s['alert_target_met'] else 'NOT met'} |",
        f"| features -> LLM follow-up on /intervention (s) | {s['followup_s_p50']:.2f} | {s['followup_s_p95']:.2f} "
        f"(p95) | {s['followups']}/{s['rounds']} answered |",
        f"| same requests, engine in-process (s) | {s['in_process_s_p50']:.2f} | {s['in_process_s_p95']:.2f} (p95) | "
        f"split costs x{s['split_cost_ratio_p50']:.3f} at p50 (target <= {SPLIT_COST_TARGET}) |",
        f"| features -> first partial text (s) | {s['first_partial_s_p50']:.2f} | {s['first_partial_s_p95']:.2f} "
        "(p95) | on intervention/partial |",
        f"| llm respawn: SIGKILL -> model loaded again (s) | {respawns} | | 2 s respawn delay included; "
        f"next advice after it: {after} s |",
        f"| peak RSS (MiB) | intervention {s['intervention_peak_rss_mib']:.0f} | llm {s['llm_peak_rss_mib']:.0f} | "
        f"plain llama.cpp {s['plain_llama_peak_rss_mib']:.0f} (llm/plain {s['rss_ratio_llm_to_plain']:.2f}) |",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--kill-rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    model = prepare_models(args.cache_dir, args.threads)["tinyllama_q4_0"]
    plain_mib = plain_llama_peak_mib(model, args.threads)
    rclpy.init()
    try:
        rows, kills, rss = measure_nodes(model, args, Path(tempfile.mkdtemp(prefix="bench_intervention_")))
    finally:
        rclpy.try_shutdown()
    in_process = measure_in_process(model, args, args.rounds)
    summary = summarize(rows, kills, rss, in_process, plain_mib, args)
    print(table(summary))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"summary": summary, "rounds": rows, "kills": kills,
                                   "in_process_s": in_process}, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
