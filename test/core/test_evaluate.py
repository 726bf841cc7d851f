"""Replay evaluation end to end on real bags: simulate -> `fatigue-llm evaluate` -> results.jsonl / metrics.json /
report.html; pass criteria of every shipped scenario; MCAP = sqlite3; partial bags; sidecar labels; the fleet
with worker processes and on a local Ray cluster gives the serial run's merged metrics."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fatigue_llm.evaluation.evaluate import EvalOptions, evaluate, offline_trace
from fatigue_llm.sim.scenario import load_scenario
from fatigue_llm.sim.simulate import simulate

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "configs" / "scenarios"
SHARED_BAGS = REPO.parent / "shared" / "data" / "rosbag2"
TIMING = ("stage_latency_ms", "stage_p95_ms")


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fatigue_llm.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _drive(tmp: Path, name: str, storage: str = "mcap", seed: int = 0, duration_s: float = 180.0) -> Path:
    """An observation-level drive that goes from alert to sleepy (and has a microsleep) within ``duration_s``."""
    data = yaml.safe_load((SCENARIOS / "highway_drowsiness.yaml").read_text())
    data.update(seed=seed, duration_s=duration_s, pass_criteria={})
    data["fatigue"] = [{"t_s": 0, "f": 0.3}, {"t_s": duration_s * 0.4, "f": 0.6}, {"t_s": duration_s, "f": 0.95}]
    data["events"]["microsleeps"] = [{"start_s": duration_s * 0.9, "duration_s": 2.0}]
    data["camera"]["enabled"] = False
    source = tmp / f"{name}.yaml"
    source.write_text(yaml.safe_dump(data))
    out = tmp / name
    simulate(load_scenario(source), out, storage, progress=False)
    return out


def _without_timing(metrics: dict) -> dict:
    """Metrics that must not depend on where or when a bag ran (wall-clock latencies do)."""
    cleaned = {k: v for k, v in metrics.items() if k not in TIMING}
    if "per_bag" in cleaned:
        cleaned["per_bag"] = [{k: v for k, v in row.items() if k not in TIMING} for row in cleaned["per_bag"]]
    return cleaned


@pytest.fixture(scope="module")
def drives(tmp_path_factory) -> Path:
    """Three observation-level highway drives of 3 minutes (different seeds) in one folder."""
    folder = tmp_path_factory.mktemp("fleet")
    for seed in (1, 2, 3):
        _drive(folder, f"highway-{seed}", seed=seed)
    return folder


def test_one_bag_gives_results_metrics_and_report(tmp_path, drives):
    bag = drives / "highway-1"
    done = _cli("evaluate", str(bag), "--scenario", str(SCENARIOS / "highway_drowsiness.yaml"), "--out",
                str(tmp_path / "out"))
    assert done.returncode in (0, 1), done.stderr
    lines = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert lines[0]["type"] == "condition" and lines[-1]["type"] == "verdict"
    windows = [line for line in lines if line["type"] == "window"]
    assert 170 <= len(windows) <= 181  # one per publish_period (1 s) of a 180 s drive
    assert {w["truth_level"] for w in windows} == {0, 1, 2}  # the labels came from truth/fatigue
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["passed"] == lines[-1]["passed"] == (done.returncode == 0)
    assert metrics["blink_counts"]["n_true"] > 30 and metrics["blink_f1"] > 0.9  # observation-level blinks
    assert metrics["level_accuracy"] is not None and metrics["roc_auc"] is not None
    assert "<img" in (tmp_path / "out" / "report.html").read_text()


def test_mcap_and_sqlite3_bags_of_one_drive_evaluate_the_same(tmp_path):
    options = EvalOptions()
    traces = [offline_trace(_drive(tmp_path, storage, storage=storage, seed=4, duration_s=60.0),
                            options) for storage in ("mcap", "sqlite3")]
    from fatigue_llm.evaluation.metrics import compute_metrics

    first, second = (_without_timing(compute_metrics(t)) for t in traces)
    first.pop("name"), second.pop("name")
    assert first == second
    assert repr(traces[0].windows) == repr(traces[1].windows)  # repr: NaN features compare equal
    assert traces[0].interventions == traces[1].interventions


def test_a_truncated_bag_is_evaluated_as_far_as_it_goes_and_the_report_says_where(tmp_path):
    bag = _drive(tmp_path, "cut", seed=5, duration_s=300.0)  # several MCAP chunks
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: int(len(data) * 0.7)])  # footer, summary and the last chunks gone (a killed recorder)
    done = _cli("evaluate", str(bag), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr  # no criteria: what could be read is judged, not refused
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["stopped_at"] and mcap.name in metrics["stopped_at"]
    assert 30.0 < metrics["duration_s"] < 290.0
    verdict = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[-1])
    assert verdict["stopped_at"] == metrics["stopped_at"]
    assert "stopped" in (tmp_path / "out" / "report.html").read_text().lower()


def test_vehicle_only_recording_with_sidecar_labels(tmp_path):
    """Real datasets come as vehicle signals (or camera) only, with labels in a CSV beside them."""
    from fatigue_llm.bags import BagWriter, open_bag

    full = _drive(tmp_path, "full", seed=6, duration_s=120.0)
    vehicle_only = tmp_path / "vehicle-only"
    with open_bag(full) as reader, BagWriter(vehicle_only, storage="sqlite3") as writer:
        writer.add_topic("vehicle/signals", "fatigue_msgs/msg/VehicleSignals")
        for message in reader.messages(["vehicle/signals"]):
            writer.write_raw("vehicle/signals", message.stamp_ns, message.raw)
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as handle:
        csv.writer(handle).writerows([("start_s", "end_s", "level"), (0, 60, "alert"), (60, 120, "drowsy")])
    done = _cli("evaluate", str(vehicle_only), "--labels", str(labels), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert sum(map(sum, metrics["confusion_matrix"])) > 100  # windows judged against the sidecar labels
    assert metrics["closed_frame_f1"] is None and metrics["blink_f1"] is None  # no camera: not measurable


@pytest.mark.parametrize("args, expected", [
    (["{shared}/mcap/talker"], "none of the topics the system reads"),
    (["{tmp}/missing-bag"], "no such bag or folder"),
    (["{drive}", "--labels", "{tmp}/nope.csv"], "--labels"),
    (["{drive}", "--workers", "0"], "--workers must be >= 1"),
])
def test_bad_input_exits_2_naming_the_problem(tmp_path, drives, args, expected):
    if "{shared}" in args[0] and not SHARED_BAGS.is_dir():
        pytest.skip(f"{SHARED_BAGS} is absent (a clone outside this workplace)")
    filled = [a.format(shared=SHARED_BAGS, tmp=tmp_path, drive=drives / "highway-1") for a in args]
    done = _cli("evaluate", *filled, "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_scenario_with_an_unknown_metric_is_refused(tmp_path, drives):
    text = (SCENARIOS / "microsleep_episode.yaml").read_text() + "\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("pass_criteria:\n", "pass_criteria:\n  blink_fscore: {min: 0.5}\n"))
    done = _cli("evaluate", str(drives / "highway-1"), "--scenario", str(bad), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "blink_fscore" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_fleet_with_two_workers_merges_to_the_serial_metrics(tmp_path, drives):
    options = EvalOptions()
    assert evaluate([str(drives)], tmp_path / "serial", options, workers=1, show_progress=False) in (True, False)
    evaluate([str(drives)], tmp_path / "parallel", options, workers=2, show_progress=False)
    serial = json.loads((tmp_path / "serial" / "metrics.json").read_text())
    parallel = json.loads((tmp_path / "parallel" / "metrics.json").read_text())
    assert serial["n_traces"] == 3 and [b["name"] for b in serial["per_bag"]] == [
        "highway-1", "highway-2", "highway-3"]
    for name in ("highway-1", "highway-2", "highway-3"):
        assert (tmp_path / "parallel" / name / "report.html").is_file()
    assert _without_timing(serial) == _without_timing({**parallel, "bags": serial["bags"]})
    # pooled, not averaged: the fleet's blink counts are the sum of the bags'
    per_bag = [json.loads((tmp_path / "serial" / n / "metrics.json").read_text()) for n in
               ("highway-1", "highway-2", "highway-3")]
    assert serial["blink_counts"]["n_true"] == sum(m["blink_counts"]["n_true"] for m in per_bag)


@pytest.mark.slow
def test_llm_option_runs_the_advice_path_on_each_alert_and_reports_its_speed(tmp_path):
    bag = _drive(tmp_path, "llm", seed=7, duration_s=60.0)
    done = _cli("evaluate", str(bag), "--llm", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    lines = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    issued = [iv for line in lines for iv in line.get("interventions", line.get("interventions_after_last_window",
                                                                                 []))]
    rules = [iv for iv in issued if iv["source"] == "rule" and iv["level"] >= 1]
    follow_ups = [iv for iv in issued if iv["source"] in ("local_llm", "cloud")]
    assert rules and len(follow_ups) <= len(rules)
    assert follow_ups, issued  # the embedded SmolLM2 + adapter answered (a failure would fall back to "rule")
    assert metrics["llm_tokens_per_s"] > 1.0
    assert metrics["stage_latency_ms"]["llm_follow_up_ms"]["n"] == len(rules)


@pytest.mark.slow
def test_fleet_on_a_local_ray_cluster_merges_to_the_serial_metrics(tmp_path, drives):
    ray = pytest.importorskip("ray")
    evaluate([str(drives)], tmp_path / "serial", EvalOptions(), workers=1, show_progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # a real local cluster (raylet, GCS)
    try:
        assert ray.cluster_resources()["CPU"] == 2
        evaluate([str(drives)], tmp_path / "ray", EvalOptions(), ray_address="auto", show_progress=False)
    finally:
        ray.shutdown()
    serial = json.loads((tmp_path / "serial" / "metrics.json").read_text())
    on_ray = json.loads((tmp_path / "ray" / "metrics.json").read_text())
    assert _without_timing(serial) == _without_timing({**on_ray, "bags": serial["bags"]})


# Known perception failures that this scenario exists to show (issue 11): under a hand MediaPipe keeps
# tracking a plausible mesh with EAR ~0.19 and reports a false microsleep; in the dark tunnel the closed
# eyes measure above the closed threshold and the scripted 1.2 s microsleep reads as a slow blink.
# strict: the test fails as soon as perception gets it right, so the mark is removed then.
KNOWN_FAILURES = {"face_occluded_lighting": "perception misses the microsleep in the dark and sees one under "
                                            "the hand (issue 11)"}


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    pytest.param(p.stem, marks=pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[p.stem]))
    if p.stem in KNOWN_FAILURES else p.stem for p in sorted(SCENARIOS.glob("*.yaml"))])
def test_every_shipped_scenario_passes_its_criteria(tmp_path, name):
    scenario = SCENARIOS / f"{name}.yaml"
    bag = tmp_path / name
    made = _cli("simulate", "--scenario", str(scenario), "--out", str(bag))
    assert made.returncode == 0, made.stderr
    done = _cli("evaluate", str(bag), "--scenario", str(scenario), "--out", str(tmp_path / "out"), timeout=900)
    verdict = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[-1])
    failed = [c for c in verdict["conditions"] if not c["passed"]]
    assert done.returncode == 0 and not failed, (failed, done.stderr[-2000:])
    shutil.rmtree(bag)
