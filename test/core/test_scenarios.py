"""Scenario files and the labelled drive simulator (`fatigue-llm simulate`): validation, the driver's fatigue
dynamics, and real bags (MCAP and SQLite 3) read back with the bag library; camera runs use the real renderer."""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from fatigue_llm.bags.reader import open_bag
from fatigue_llm.bags.typestore import get_typestore
from fatigue_llm.perception.types import EventType
from fatigue_llm.sim import driver_video
from fatigue_llm.sim.drive import simulate_drive
from fatigue_llm.sim.scenario import (
    ALERT,
    DROWSY,
    SLEEPY,
    ScenarioError,
    driver_script,
    kss_of,
    level_of,
    load_scenario,
    scenario_from_mapping,
)
from fatigue_llm.sim.simulate import (
    START_NS,
    build_timeline,
    head_pitches,
    lid_closures,
    main,
    mouth_openings,
    script_events,
    simulate,
)

REPO = Path(__file__).resolve().parents[2]
SCENARIO_DIR = REPO / "configs" / "scenarios"
SHIPPED = ("alert_commute", "highway_drowsiness", "microsleep_episode", "face_occluded_lighting")


def minimal(**changes) -> dict:
    data = {"name": "t", "duration_s": 30, "fatigue": [{"t_s": 0, "f": 0.2}]}
    data.update(changes)
    return data


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class Bag:
    storage: str
    topics: dict[str, tuple[str, int]]      # topic -> (type, count)
    start_ns: int
    duration_ns: int
    messages: dict[str, list]               # topic -> decoded messages
    raw: list[tuple[str, int, bytes]]


def read_bag(path: Path) -> Bag:
    messages: dict[str, list] = {}
    raw = []
    with open_bag(path) as bag:
        topics = {name: (info.msgtype, info.count) for name, info in bag.topics.items()}
        for message in bag.messages():
            decoded = message.decode()
            assert decoded.header.stamp.sec * 10**9 + decoded.header.stamp.nanosec == message.stamp_ns
            messages.setdefault(message.topic, []).append(decoded)
            raw.append((message.topic, message.stamp_ns, bytes(message.raw)))
        return Bag(bag.storage, topics, bag.start_ns, bag.duration_ns, messages, raw)


def seconds(stamp) -> float:
    return (stamp.sec * 10**9 + stamp.nanosec - START_NS) / 1e9


# ------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_scenario_loads_and_cites_its_sources(name):
    scenario = load_scenario(SCENARIO_DIR / f"{name}.yaml")
    assert scenario.name == name
    assert "et al." in scenario.description  # the published relations it follows
    metrics = {c.metric for c in scenario.pass_criteria}
    assert metrics and metrics <= {"level_accuracy", "blink_f1", "closed_frame_f1", "detection_latency_s",
                                   "false_interventions_per_hour", "microsleep_detected"}
    if scenario.camera.enabled:  # rendered scenarios stay short (~10-20 ms per frame)
        assert scenario.duration_s * scenario.camera.fps <= 1800
    assert sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml")) == sorted(SHIPPED)


@pytest.mark.parametrize(("data", "needles"), [
    (minimal(camra={}), ["unknown key", "camra"]),
    (minimal(camera={"fsp": 10}), ["camera.fsp"]),
    (minimal(events={"microsleeps": [{"start_s": 5, "duration_s": 2, "depth": 1}]}),
     ["events.microsleeps[0].depth"]),
    (minimal(camera={"fps": "fast"}), ["camera.fps", "'fast'"]),
    (minimal(camera={"enabled": "yes"}), ["camera.enabled", "'yes'"]),
    (minimal(seed=1.5), ["seed", "1.5"]),
    (minimal(camera={"fps": 60}), ["camera.fps", "60"]),
    (minimal(fatigue=[{"t_s": 0, "f": 1.2}]), ["fatigue[0].f", "1.2"]),
    (minimal(fatigue=[{"t_s": 0, "f": 0.1}, {"t_s": 0, "f": 0.5}]), ["fatigue[1].t_s", "increase"]),
    (minimal(fatigue=[]), ["fatigue", "keyframe"]),
    (minimal(fatigue=[{"t_s": 0}]), ["missing", "fatigue[0].f"]),
    (minimal(fatigue={"t_s": 0, "f": 0.1}), ["fatigue", "expected a list"]),
    ({"name": "t", "duration_s": 30}, ["missing", "fatigue"]),
    (minimal(events={"microsleeps": [{"start_s": 5, "duration_s": 0.4}]}),
     ["events.microsleeps[0].duration_s", "0.4"]),
    (minimal(events={"yawns": [{"start_s": 5, "duration_s": 6}, {"start_s": 8, "duration_s": 6}]}),
     ["events.yawns[1]", "overlap"]),
    (minimal(events={"nods": [{"start_s": 40, "duration_s": 1}]}), ["events.nods[0]", "40"]),
    (minimal(camera={"occlusions": [{"start_s": 1, "end_s": 2, "kind": "scarf"}]}),
     ["camera.occlusions[0].kind", "scarf"]),
    (minimal(camera={"lighting": [{"start_s": 1, "end_s": 2, "ramp_s": 1}]}), ["camera.lighting[0].ramp_s"]),
    (minimal(pass_criteria=[1]), ["pass_criteria", "mapping"]),
    (minimal(pass_criteria={"blink_f1": 0.8}), ["pass_criteria.blink_f1", "0.8"]),
    (minimal(pass_criteria={"blink_f1": {"minimum": 0.8}}), ["pass_criteria.blink_f1.minimum"]),
    (minimal(pass_criteria={"blink_f1": {"min": "high"}}), ["pass_criteria.blink_f1.min", "'high'"]),
    (minimal(pass_criteria={"blink_f1": {"min": 0.9, "max": 0.5}}), ["pass_criteria.blink_f1", "above max"]),
])
def test_invalid_scenarios_name_file_key_and_value(tmp_path, data, needles):
    path = write_yaml(tmp_path / "bad.yaml", data)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for needle in needles:
        assert needle in message


def test_unreadable_or_malformed_files_are_scenario_errors(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ScenarioError, match="expected a mapping"):
        load_scenario(tmp_path / "list.yaml")


def test_pass_criteria_keep_their_bounds():
    scenario = scenario_from_mapping(minimal(pass_criteria={"blink_f1": {"min": 0.8},
                                                            "detection_latency_s": {"max": 60, "min": 0}}))
    blink, latency = scenario.pass_criteria
    assert (blink.metric, blink.min, blink.max) == ("blink_f1", 0.8, None)
    assert latency.passes(12.0) and not latency.passes(61.0) and not latency.passes(math.nan)


# ------------------------------------------------------------------------------------- truth and dynamics
def test_levels_follow_kss_bands():
    assert kss_of(0.0) == 1.0 and kss_of(1.0) == 9.0
    f = np.array([0.0, 0.5, 0.56, 0.57, 0.8, 0.82, 1.0])
    assert level_of(f).tolist() == [ALERT, ALERT, ALERT, DROWSY, DROWSY, SLEEPY, SLEEPY]
    assert (ALERT, DROWSY, SLEEPY) == (0, 1, 2)
    truth_type = get_typestore().types["fatigue_msgs/msg/FatigueTruth"]
    assert (truth_type.ALERT, truth_type.DROWSY, truth_type.SLEEPY) == (ALERT, DROWSY, SLEEPY)


def test_vectorised_truth_equals_the_renderer_functions():
    script = driver_script(load_scenario(SCENARIO_DIR / "microsleep_episode.yaml"))
    times = np.arange(0, script.duration_s, 1 / 97)  # off the frame grid, through every stroke
    closure, closure_idx = lid_closures(script, times)
    mouth, _ = mouth_openings(script, times)
    pitch, _ = head_pitches(script, times)
    for i, t in enumerate(times.tolist()):
        assert (closure[i], closure_idx[i]) == driver_video.lid_closure(script, t)
        assert mouth[i] == driver_video.mouth_opening(script, t)[0]
        assert pitch[i] == driver_video.head_pitch(script, t)[0]


def test_driver_script_is_seeded_and_closures_never_overlap():
    scenario = load_scenario(SCENARIO_DIR / "highway_drowsiness.yaml")
    script = driver_script(scenario)
    assert script == driver_script(scenario)
    assert script.closures != driver_script(scenario.with_overrides(seed=99)).closures
    ends = [c.start_s + c.duration_s for c in script.closures]
    starts = [c.start_s for c in script.closures]
    assert all(start > end for start, end in zip(starts[1:], ends[:-1], strict=True))
    microsleep_starts = [c.start_s for c in script.closures if c.duration_s >= 1.0]
    alert_until = 261.0  # f reaches the DROWSY band (KSS 5.5) here
    assert microsleep_starts and min(microsleep_starts) > alert_until  # microsleeps only late in the drive
    assert 575.0 in microsleep_starts  # the scripted one


def test_blinks_get_longer_and_more_frequent_and_perclos_rises_with_level():
    scenario = load_scenario(SCENARIO_DIR / "highway_drowsiness.yaml").with_overrides(seed=1)
    script = driver_script(scenario)
    timeline = build_timeline(scenario, script)
    perclos = [timeline.eyes_closed[timeline.level == k].mean() for k in (ALERT, DROWSY, SLEEPY)]
    assert perclos[0] < perclos[1] < perclos[2]
    assert perclos[0] < 0.06 and perclos[2] > 0.12  # ~2-4 % alert, well above the 15 % mark when sleepy
    level_at = {round(t, 6): lv for t, lv in zip(timeline.times.tolist(), timeline.level.tolist(), strict=True)}
    blinks = [(c.start_s, c.duration_s) for c in script.closures if c.duration_s < 1.0]

    def level(t: float) -> int:
        return level_at.get(round(math.floor(t * script.fps) / script.fps, 6), SLEEPY)

    durations = [np.mean([d for t, d in blinks if level(t) == k]) for k in (ALERT, DROWSY, SLEEPY)]
    seconds_at = [np.sum(timeline.level == k) / script.fps for k in (ALERT, DROWSY, SLEEPY)]
    rates = [60 * sum(level(t) == k for t, _ in blinks) / seconds_at[k] for k in (ALERT, DROWSY, SLEEPY)]
    assert durations[0] < durations[1] < durations[2]
    assert durations[2] > 2 * durations[0]
    assert rates[0] < rates[2]


def test_forced_lapses_hold_the_wheel_from_the_microsleep_onset():
    drive = simulate_drive(40, 100, [(0.0, 0.1)], seed=2, forced_lapses=[(20.0, 2.0)])
    assert drive.lapse_events[0][0] == pytest.approx(20.0)
    assert drive.lapse[2000] and drive.lapse[2150] and not drive.lapse[1990]
    assert drive.samples[:2000] == simulate_drive(40, 100, [(0.0, 0.1)], seed=2).samples[:2000]


# ------------------------------------------------------------------------------- shipped scenarios, no camera
@pytest.fixture(scope="module")
def no_camera_runs(tmp_path_factory):
    """Every shipped scenario simulated once without the camera, with its sidecar CSVs."""
    folder = tmp_path_factory.mktemp("no_camera")
    runs = {}
    for name in SHIPPED:
        out = folder / name
        code = main(["--scenario", str(SCENARIO_DIR / f"{name}.yaml"), "--out", str(out), "--no-camera", "--quiet",
                     "--labels-csv", str(folder / f"{name}.labels.csv"),
                     "--events-csv", str(folder / f"{name}.events.csv")])
        assert code == 0
        runs[name] = (load_scenario(SCENARIO_DIR / f"{name}.yaml"), read_bag(out), folder)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_no_camera_bag_has_the_right_topics_counts_and_stamps(no_camera_runs, name):
    scenario, bag, _ = no_camera_runs[name]
    frames = round(scenario.duration_s * scenario.camera.fps)
    vehicle = math.floor(scenario.duration_s * scenario.vehicle.rate_hz) + 1
    assert bag.topics == {"vehicle/signals": ("fatigue_msgs/msg/VehicleSignals", vehicle),
                          "truth/fatigue": ("fatigue_msgs/msg/FatigueTruth", frames),
                          "driver/observation": ("fatigue_msgs/msg/DriverObservation", frames)}
    assert bag.storage == "mcap"
    assert bag.start_ns == START_NS and bag.duration_ns == round(scenario.duration_s * 1e9)
    truth, observations = bag.messages["truth/fatigue"], bag.messages["driver/observation"]
    assert [t.header.stamp for t in truth] == [o.header.stamp for o in observations]
    assert seconds(truth[1].header.stamp) == pytest.approx(1 / scenario.camera.fps)
    stamps = [seconds(v.header.stamp) for v in bag.messages["vehicle/signals"]]
    assert stamps[0] == 0.0 and stamps[-1] == pytest.approx(scenario.duration_s)
    vehicle_msg = bag.messages["vehicle/signals"][-1]
    assert vehicle_msg.time_driving == pytest.approx(scenario.driver.time_driving_h * 3600 + scenario.duration_s)
    assert truth[0].time_awake == pytest.approx(scenario.driver.time_awake_h)
    # the synthesised observation agrees with the truth it came from
    agree = np.mean([o.eyes_closed == t.eyes_closed for o, t in zip(observations, truth, strict=True)
                     if t.face_visible])
    assert agree > 0.97
    assert all(not o.face_found and math.isnan(o.ear) for o, t in zip(observations, truth, strict=True)
               if not t.face_visible)


@pytest.mark.slow
def test_truth_shows_the_intended_levels(no_camera_runs):
    def levels(name):
        return Counter(t.level for t in no_camera_runs[name][1].messages["truth/fatigue"])

    assert set(levels("alert_commute")) == {ALERT}
    highway = [t.level for t in no_camera_runs["highway_drowsiness"][1].messages["truth/fatigue"]]
    assert highway[0] == ALERT and highway[-1] == SLEEPY and set(highway) == {ALERT, DROWSY, SLEEPY}
    assert highway == sorted(highway)  # monotone: alert -> drowsy -> sleepy
    assert set(levels("microsleep_episode")) == {DROWSY, SLEEPY}
    assert not any(t.microsleep for t in no_camera_runs["alert_commute"][1].messages["truth/fatigue"])


@pytest.mark.slow
def test_sdlp_is_higher_when_sleepy_than_alert(no_camera_runs):
    bag = no_camera_runs["highway_drowsiness"][1]
    truth = bag.messages["truth/fatigue"]
    truth_t = np.array([seconds(t.header.stamp) for t in truth])
    level = np.array([t.level for t in truth])
    vehicle = bag.messages["vehicle/signals"]
    at = level[np.clip(np.searchsorted(truth_t, [seconds(v.header.stamp) for v in vehicle], "right") - 1, 0, None)]
    lateral = np.array([v.lateral_offset for v in vehicle])
    assert lateral[at == SLEEPY].std() > 1.3 * lateral[at == ALERT].std()


@pytest.mark.slow
def test_microsleeps_are_observed_at_onset_and_listed_in_the_events_csv(no_camera_runs):
    scenario, bag, folder = no_camera_runs["microsleep_episode"]
    truth, observations = bag.messages["truth/fatigue"], bag.messages["driver/observation"]
    onsets = [(seconds(o.header.stamp), e) for o in observations for e in o.events
              if e.type == EventType.MICROSLEEP]
    assert [round(seconds(e.start), 1) for _, e in onsets] == [30.0, 48.0]
    for reported_at, event in onsets:  # at onset: as soon as the eyes were closed ~1 s, not when they reopen
        assert event.duration == pytest.approx(1.0, abs=0.1)
        assert reported_at - seconds(event.start) < 1.1
    closed = [seconds(t.header.stamp) for t in truth if t.microsleep]
    assert min(closed) == pytest.approx(30.0, abs=0.07) and max(closed) == pytest.approx(50.5, abs=0.07)
    with open(folder / "microsleep_episode.events.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["start_s", "end_s", "event"]
    assert [(r["start_s"], r["end_s"]) for r in rows if r["event"] == "microsleep"] == [
        ("30.000", "31.500"), ("48.000", "50.500")]
    assert Counter(r["event"] for r in rows)["yawn"] == 1
    assert {r["event"] for r in rows} <= {"blink", "slow_blink", "microsleep", "yawn", "nod"}
    assert rows == sorted(rows, key=lambda r: float(r["start_s"]))
    assert len(rows) == len(script_events(driver_script(scenario)))


@pytest.mark.slow
def test_labels_csv_covers_the_drive_with_level_periods(no_camera_runs):
    folder = no_camera_runs["highway_drowsiness"][2]
    with open(folder / "highway_drowsiness.labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["level"] for r in rows] == ["alert", "drowsy", "sleepy"]
    assert rows[0]["start_s"] == "0.000" and rows[-1]["end_s"] == "600.000"
    assert all(a["end_s"] == b["start_s"] for a, b in zip(rows, rows[1:], strict=False))
    assert float(rows[1]["start_s"]) == pytest.approx(261.0, abs=0.1)  # f = 0.5625 (KSS 5.5) on the keyframes


@pytest.mark.slow
def test_occlusions_hide_the_face_in_truth_and_observation(no_camera_runs):
    scenario, bag, _ = no_camera_runs["face_occluded_lighting"]
    truth, observations = bag.messages["truth/fatigue"], bag.messages["driver/observation"]
    hidden = [seconds(t.header.stamp) for t in truth if not t.face_visible]
    expected = [i / 15 for i in range(900) if 15 <= i / 15 < 18 or 35 <= i / 15 < 37]
    assert hidden == pytest.approx(expected)
    lost = [seconds(e.start) for o in observations for e in o.events if e.type == EventType.FACE_LOST]
    assert lost == pytest.approx([15.0, 35.0])


# ------------------------------------------------------------------------------------ determinism, storages
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_same_seed_gives_identical_messages_in_both_storages(tmp_path, storage):
    scenario = load_scenario(SCENARIO_DIR / "highway_drowsiness.yaml").with_overrides(duration_s=40.0, camera=False)
    simulate(scenario, tmp_path / "a", storage, progress=False)
    simulate(scenario, tmp_path / "b", storage, progress=False)
    simulate(scenario.with_overrides(seed=4), tmp_path / "c", storage, progress=False)
    a, b, c = (read_bag(tmp_path / name) for name in "abc")
    assert a.storage == storage
    assert a.raw == b.raw
    assert a.raw != c.raw
    assert len(a.raw) == 801 + 2 * 600


def test_cli_overrides_and_delegation(tmp_path, capsys):
    from fatigue_llm.cli import main as cli_main

    out = tmp_path / "bag"
    assert cli_main(["simulate", "--scenario", str(SCENARIO_DIR / "alert_commute.yaml"), "--out", str(out),
                     "--duration", "10", "--seed", "5", "--storage", "sqlite3", "--quiet"]) == 0
    assert "seed 5" in capsys.readouterr().out
    bag = read_bag(out)
    assert bag.storage == "sqlite3" and bag.duration_ns == 10 * 10**9
    assert bag.topics["truth/fatigue"][1] == 150 and "driver/observation" in bag.topics  # camera.enabled: false
    assert main(["--scenario", str(SCENARIO_DIR / "alert_commute.yaml"), "--out", str(tmp_path / "cam"),
                 "--duration", "1", "--camera", "--quiet"]) == 0
    assert read_bag(tmp_path / "cam").topics["camera/image_raw"] == ("sensor_msgs/msg/Image", 15)


def test_cli_bad_input_is_an_error_line_with_exit_2(tmp_path, capsys):
    bad = write_yaml(tmp_path / "bad.yaml", minimal(camera={"fps": "fast"}))
    assert main(["--scenario", str(bad), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "camera.fps" in err and "'fast'" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
    good = write_yaml(tmp_path / "good.yaml", minimal(camera={"enabled": False}, duration_s=2))
    (tmp_path / "taken").mkdir()
    assert main(["--scenario", str(good), "--out", str(tmp_path / "taken"), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["--scenario", str(good), "--out", str(tmp_path / "y"), "--quiet",
                 "--labels-csv", str(tmp_path / "no" / "such" / "labels.csv")]) == 2
    assert "folder does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--scenario", str(good), "--out", str(tmp_path / "z"), "--duration", "-1"])
    assert info.value.code == 2


# ----------------------------------------------------------------------------------------------- camera
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_camera_run_writes_images_of_the_scenario_size(tmp_path, storage):
    data = minimal(duration_s=3, seed=2, fatigue=[{"t_s": 0, "f": 0.7}],
                   events={"microsleeps": [{"start_s": 1.0, "duration_s": 1.2}], "spontaneous": False},
                   camera={"fps": 10, "width": 160, "height": 120,
                           "occlusions": [{"start_s": 2.5, "end_s": 3.0, "kind": "hand"}],
                           "lighting": [{"start_s": 0.0, "end_s": 2.0, "gain": 0.4, "ramp_s": 0.5}]})
    simulate(scenario_from_mapping(data), tmp_path / "cam", storage, progress=False)
    bag = read_bag(tmp_path / "cam")
    assert bag.topics == {"vehicle/signals": ("fatigue_msgs/msg/VehicleSignals", 61),
                          "truth/fatigue": ("fatigue_msgs/msg/FatigueTruth", 30),
                          "camera/image_raw": ("sensor_msgs/msg/Image", 30)}
    images = bag.messages["camera/image_raw"]
    frames = [m.data.reshape(m.height, m.width, 3) for m in images]
    assert all((m.height, m.width, m.encoding, m.step) == (120, 160, "bgr8", 480) for m in images)
    assert all(f.shape == (120, 160, 3) and f.dtype == np.uint8 for f in frames)
    assert [i.header.stamp for i in images] == [t.header.stamp for t in bag.messages["truth/fatigue"]]
    brightness = [float(f.mean()) for f in frames]
    assert brightness[10] < 0.6 * brightness[22]  # inside the dark ramp vs after it
    truth = bag.messages["truth/fatigue"]
    assert [t.face_visible for t in truth[24:27]] == [True, False, False]


def test_rendered_frames_are_identical_for_a_seed(tmp_path):
    data = minimal(duration_s=1.5, seed=3, camera={"fps": 10, "width": 96, "height": 72})
    simulate(scenario_from_mapping(data), tmp_path / "a", "mcap", progress=False)
    simulate(scenario_from_mapping(data), tmp_path / "b", "mcap", progress=False)
    assert read_bag(tmp_path / "a").raw == read_bag(tmp_path / "b").raw


def test_rendered_drive_is_seen_by_real_perception_as_the_truth_says(tmp_path):
    from fatigue_llm.perception.config import PerceptionConfig
    from fatigue_llm.perception.pipeline import PerceptionPipeline

    # the microsleep comes once the EAR baseline is calibrated (5 s of visible face) and after the dimming
    data = minimal(duration_s=10, seed=1, fatigue=[{"t_s": 0, "f": 0.7}],
                   events={"spontaneous": False, "microsleeps": [{"start_s": 7.0, "duration_s": 1.5}]},
                   camera={"fps": 10, "width": 320, "height": 240,
                           "occlusions": [{"start_s": 1.0, "end_s": 2.0, "kind": "out_of_view"}],
                           "lighting": [{"start_s": 3.0, "end_s": 6.0, "gain": 0.5, "contrast": 0.8, "ramp_s": 1}]})
    simulate(scenario_from_mapping(data), tmp_path / "cam", progress=False)
    bag = read_bag(tmp_path / "cam")
    with PerceptionPipeline(PerceptionConfig()) as pipeline:
        observed = [pipeline.process(m.data.reshape(m.height, m.width, 3), seconds(m.header.stamp))
                    for m in bag.messages["camera/image_raw"]]
    truth = bag.messages["truth/fatigue"]
    assert [o.face_found for o in observed] == [t.face_visible for t in truth]
    visible = [(o, t) for o, t in zip(observed, truth, strict=True) if t.face_visible]
    assert np.mean([o.eyes_closed == t.eyes_closed for o, t in visible]) > 0.95
    microsleeps = [e for o in observed for e in o.events if e.type == EventType.MICROSLEEP]
    assert [round(e.start_s, 1) for e in microsleeps] == [7.0]
