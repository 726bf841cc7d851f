"""`fatigue-llm evaluate BAG --live`: a short simulated drive played into the real node set (separate processes,
DDS, its own ROS_DOMAIN_ID) gives the three result files, one window per publish period from the real feature
node, a CRITICAL from the real intervention node at the microsleep, and the offline replay's verdict on levels
and microsleeps within what DDS timing allows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "configs" / "scenarios"
DURATION_S = 60.0
MICROSLEEP_S = 54.0
RATE = 4


def _drive(tmp: Path) -> Path:
    """An observation-level drive (no camera) from alert to sleepy with one 2 s microsleep at 54 s."""
    from fatigue_llm.sim.scenario import load_scenario
    from fatigue_llm.sim.simulate import simulate

    data = yaml.safe_load((SCENARIOS / "highway_drowsiness.yaml").read_text())
    data.update(seed=7, duration_s=DURATION_S, pass_criteria={})
    data["fatigue"] = [{"t_s": 0, "f": 0.3}, {"t_s": DURATION_S * 0.4, "f": 0.6}, {"t_s": DURATION_S, "f": 0.95}]
    data["events"]["microsleeps"] = [{"start_s": MICROSLEEP_S, "duration_s": 2.0}]
    data["camera"]["enabled"] = False
    source = tmp / "short.yaml"
    source.write_text(yaml.safe_dump(data))
    out = tmp / "short"
    simulate(load_scenario(source), out, "mcap", progress=False)
    return out


def _evaluate(*args: str, timeout: float, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fatigue_llm.cli", "evaluate", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def _interventions(lines: list[dict]) -> list[dict]:
    issued = [iv for line in lines if line["type"] == "window" for iv in line["interventions"]]
    return issued + lines[-1].get("interventions_after_last_window", [])


def test_live_params_copy_turns_the_llm_off_and_follows_the_bag_clock(tmp_path):
    from fatigue_llm.config import read_parameter_file
    from fatigue_llm.evaluation.live import live_params
    from fatigue_llm.ros.launcher import default_params_file

    path = live_params(default_params_file(), llm=False, folder=tmp_path)
    intervention = read_parameter_file(path, "intervention")
    assert intervention["llm_enabled"] is False and intervention["use_sim_time"] is True
    assert intervention["critical_perclos"] == read_parameter_file(default_params_file(),
                                                                   "intervention")["critical_perclos"]
    assert all(read_parameter_file(path, node)["use_sim_time"] is True
               for node in ("perception", "feature_processor"))
    kept = live_params(default_params_file(), llm=True, folder=tmp_path)
    assert read_parameter_file(kept, "intervention")["llm_enabled"] is True


@pytest.mark.slow
def test_live_evaluation_records_the_real_nodes_and_agrees_with_offline(tmp_path):
    began = time.monotonic()
    bag = _drive(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "ROS_DOMAIN_ID"}  # live picks a domain of its own
    env["OMP_NUM_THREADS"] = "1"
    live_out, offline_out = tmp_path / "live", tmp_path / "offline"

    done = _evaluate(str(bag), "--live", "--rate", str(RATE), "--out", str(live_out), timeout=75, env=env)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    domain = re.search(r"ROS_DOMAIN_ID=(\d+)", done.stderr)
    assert domain and 100 <= int(domain.group(1)) <= 200, done.stderr
    for name in ("results.jsonl", "metrics.json", "report.html"):
        assert (live_out / name).is_file(), name
    live = json.loads((live_out / "metrics.json").read_text())
    lines = _lines(live_out)
    assert live["mode"] == "live" and live["passed"] == (done.returncode == 0)
    assert lines[0]["type"] == "condition" and lines[-1]["type"] == "verdict"

    # one window per publish_period (1 s) of bag time, from the feature node's timer on the bag's /clock
    windows = [line for line in lines if line["type"] == "window"]
    assert abs(len(windows) - DURATION_S / 1.0) <= 3, [w["t"] for w in windows]
    assert all(-0.5 <= w["t"] <= DURATION_S + 0.5 for w in windows)  # bag time, not wall time
    assert {w["truth_level"] for w in windows} >= {0, 2}  # truth/fatigue read from the bag

    # the intervention node's safety path: CRITICAL right at the microsleep, stamped in bag time
    critical = [iv for iv in _interventions(lines) if iv["level"] == 3]
    assert critical, done.stderr[-3000:]
    assert any(MICROSLEEP_S <= iv["t"] <= MICROSLEEP_S + 4.0 and iv["source"] == "rule" for iv in critical), critical
    assert live["microsleep_detected"] == 1.0
    assert "live_feature_to_intervention_ms" in live["stage_latency_ms"]

    done = _evaluate(str(bag), "--out", str(offline_out), timeout=60, env=env)
    assert done.returncode in (0, 1), done.stderr
    offline = json.loads((offline_out / "metrics.json").read_text())
    assert offline["mode"] == "offline"
    assert live["microsleep_detected"] == offline["microsleep_detected"]
    assert live["level_accuracy"] == pytest.approx(offline["level_accuracy"], abs=0.1)
    assert live["windows_evaluated"] == pytest.approx(offline["windows_evaluated"], abs=3)
    assert live["blink_f1"] == pytest.approx(offline["blink_f1"], abs=0.05)  # every observation arrived
    assert time.monotonic() - began < 90


def test_trace_from_received_messages_maps_wall_clock_stamps_to_the_triggering_features():
    """An Intervention stamped in wall time (use_sim_time overridden) takes the time of the features it answered;
    windows, truth-free labels and the latency between them come from the receive times."""
    from fatigue_msgs.msg import FatigueFeatures, Intervention

    from fatigue_llm.evaluation.evaluate import replay_config
    from fatigue_llm.evaluation.live import BagPlan, Received, build_trace

    start_ns = 1_700_000_000 * 10**9
    received = Received()
    for k in range(1, 4):
        msg = FatigueFeatures()
        msg.header.stamp.sec = 1_700_000_000 + k
        msg.eye_closure_ratio = 0.05 * k
        received.features.append((100.0 + k, msg))
    alert = Intervention(level=Intervention.CRITICAL, action="alert_audio_haptic", source="rule")
    alert.header.stamp.sec = 1_900_000_000  # wall time, far outside the bag
    received.interventions.append((102.004, alert))
    plan = BagPlan(start_ns, start_ns + 4 * 10**9, ("driver/observation",), "")
    trace = build_trace("fake", plan, received, replay_config(""))
    assert [w.t for w in trace.windows] == [1.0, 2.0, 3.0]
    assert [w.truth_level for w in trace.windows] == [None, None, None]
    assert [(i.t, i.level, i.source) for i in trace.interventions] == [(2.0, 3, "rule")]
    assert trace.stage_latency_ms["live_feature_to_intervention_ms"] == [pytest.approx(4.0, abs=0.01)]
    assert trace.duration_s == 4.0 and trace.stopped_at is None
