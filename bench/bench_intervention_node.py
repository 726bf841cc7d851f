"""The intervention node as deployed, with TinyLlama-1.1B Q4_0: alert latency, LLM follow-up latency, RSS.

The node runs in its own process with the TinyLlama-shape Q4_0 GGUF (random weights, built and cached by
``bench_llm.py``); this process publishes FatigueFeatures over DDS and receives the Interventions. Each
round publishes WARNING features (rule alert with the LLM idle; the LLM starts on them), then 0.5 s later
MICROSLEEP features (rule alert while the LLM is generating), and waits for the LLM follow-ups.
Side by side in the same run: plain llama-cpp-python loading the same GGUF and generating once, in its
own process, for the memory ratio.

Measured: rule alert latency (publish -> received) with the LLM idle and busy; features -> LLM
follow-up on /intervention for the WARNING event (nothing queued ahead of it); the node's peak RSS
(VmHWM) against plain llama.cpp. Targets: node RSS <= 1.3 GB; follow-up p95 <= 2.5 s; alerts not delayed.

    .venv/bin/python bench/bench_intervention_node.py [--rounds 8] [--threads 2]

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
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 50))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fatigue_llm.ros.environment import apply_local_dds_defaults  # noqa: E402

apply_local_dds_defaults()

import rclpy  # noqa: E402
from bench_llm import DEFAULT_CACHE, prepare_models  # noqa: E402
from fatigue_msgs.msg import FatigueFeatures as FeaturesMsg  # noqa: E402
from fatigue_msgs.msg import Intervention  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

from fatigue_llm import topics  # noqa: E402
from fatigue_llm.features.types import FatigueFeatures  # noqa: E402
from fatigue_llm.ros.convert import features_to_msg  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "intervention_node.json"
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
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
    """Publishes features and records every Intervention with its arrival time."""

    def __init__(self) -> None:
        self.node = rclpy.create_node("bench_intervention_probe")
        self.received: list[tuple[float, Intervention]] = []
        self.node.create_subscription(Intervention, "/" + topics.INTERVENTION,
                                      lambda m: self.received.append((time.monotonic(), m)), RELIABLE)
        self.publisher = self.node.create_publisher(FeaturesMsg, "/" + topics.FATIGUE_FEATURES, RELIABLE)

    def spin_until(self, condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            rclpy.spin_once(self.node, timeout_sec=0.02)
        return condition()

    def publish(self, features: FatigueFeatures) -> float:
        sent = time.monotonic()
        self.sent_wall = time.time()
        self.publisher.publish(features_to_msg(features))
        return sent

    def first(self, predicate) -> tuple[float, Intervention] | None:
        return next(((t, m) for t, m in self.received if predicate(m)), None)


def stamp_s(msg: Intervention) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def run_round(probe: Probe, index: int, timeout: float) -> dict:
    probe.received.clear()
    t = 1000.0 + 100.0 * index
    sent_warning = probe.publish(warning_features(t))
    sent_warning_wall = probe.sent_wall
    probe.spin_until(lambda: probe.first(lambda m: m.source == "rule") is not None, 5.0)
    warning_at, warning = probe.first(lambda m: m.source == "rule")
    probe.spin_until(lambda: False, 0.5)  # the LLM is now generating for the WARNING
    sent_critical = probe.publish(microsleep_features(t + 1.0))
    is_critical = lambda m: m.source == "rule" and m.level == Intervention.CRITICAL  # noqa: E731
    probe.spin_until(lambda: probe.first(is_critical) is not None, 5.0)
    critical_at, critical = probe.first(is_critical)
    follows = lambda rule: lambda m: m.source == "local_llm" and m.follows_id == rule.id  # noqa: E731
    probe.spin_until(lambda: probe.first(follows(critical)) is not None, timeout)
    advice = probe.first(follows(warning))
    llm_busy = advice is not None and advice[0] > critical_at
    return {
        "alert_idle_ms": (warning_at - sent_warning) * 1000,
        # features published -> the node's publish stamp of the alert (same host clock): the node's part
        "alert_idle_node_ms": (stamp_s(warning) - sent_warning_wall) * 1000,
        "alert_busy_ms": (critical_at - sent_critical) * 1000,
        "alert_while_llm_generating": llm_busy,
        "followup_s": advice[0] - sent_warning if advice else None,
        "followup_message": advice[1].message if advice else None,
        "critical_followup": probe.first(follows(critical)) is not None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    model = prepare_models(args.cache_dir, args.threads)["tinyllama_q4_0"]
    plain_mib = plain_llama_peak_mib(model, args.threads)
    state = Path(tempfile.mkdtemp(prefix="bench_intervention_"))
    params = {"model_path": model, "n_threads": args.threads, "case_store_path": str(state / "cases"),
              "outbox_path": str(state / "outbox.sqlite3"), "cooldown": 0.0, "critical_cooldown": 0.0,
              "generation_deadline": 30.0}
    command = [sys.executable, "-m", "fatigue_llm.intervention.node", "--ros-args"]
    for name, value in params.items():
        command += ["-p", f"{name}:={value}"]
    node_process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rclpy.init()
    probe = Probe()
    rows = []
    try:
        if not probe.spin_until(lambda: probe.publisher.get_subscription_count() > 0, 180.0):
            raise SystemExit("the intervention node did not subscribe to the features within 180 s")
        rows = [run_round(probe, i, timeout=60.0) for i in range(-1, args.rounds)][1:]  # round -1: warm-up
        status = Path(f"/proc/{node_process.pid}/status").read_text()
    finally:
        node_process.send_signal(signal.SIGINT)
        try:
            node_process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node_process.kill()
        probe.node.destroy_node()
        rclpy.try_shutdown()
    followups = np.array([r["followup_s"] for r in rows if r["followup_s"] is not None])
    busy = np.array([r["alert_busy_ms"] for r in rows])
    idle = np.array([r["alert_idle_ms"] for r in rows])
    node_mib = status_kib(status, "VmHWM") / 1024
    summary = {
        "bench": "intervention_node", "rounds": len(rows), "threads": args.threads,
        "alert_idle_ms_p50": float(np.median(idle)), "alert_idle_ms_max": float(idle.max()),
        "alert_busy_ms_p50": float(np.median(busy)), "alert_busy_ms_max": float(busy.max()),
        "alerts_while_llm_generating": sum(r["alert_while_llm_generating"] for r in rows),
        "followups": len(followups), "followup_s_p50": float(np.median(followups)),
        "followup_s_p95": float(np.percentile(followups, 95)),
        "critical_followups": sum(r["critical_followup"] for r in rows),
        "node_peak_rss_mib": node_mib, "node_rss_mib": status_kib(status, "VmRSS") / 1024,
        "plain_llama_peak_rss_mib": plain_mib, "rss_ratio_node_to_plain": node_mib / plain_mib,
    }
    s = summary
    print("| TinyLlama Q4_0, 2 threads | p50 | max / p95 | notes |")
    print("|---|---|---|---|")
    print(f"| rule alert, LLM idle (ms) | {s['alert_idle_ms_p50']:.1f} | {s['alert_idle_ms_max']:.1f} | |")
    print(f"| rule alert, LLM generating (ms) | {s['alert_busy_ms_p50']:.1f} | {s['alert_busy_ms_max']:.1f} | "
          f"{s['alerts_while_llm_generating']}/{s['rounds']} published while the model was mid-answer |")
    print(f"| features -> LLM follow-up on /intervention (s) | {s['followup_s_p50']:.2f} | "
          f"{s['followup_s_p95']:.2f} (p95) | {s['followups']}/{s['rounds']} answered |")
    print(f"| peak RSS (MiB) | node {s['node_peak_rss_mib']:.0f} | plain llama.cpp {s['plain_llama_peak_rss_mib']:.0f} "
          f"| ratio {s['rss_ratio_node_to_plain']:.2f}; target node <= 1300 MB |")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"summary": summary, "rounds": rows}, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
