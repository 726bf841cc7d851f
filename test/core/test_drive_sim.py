"""The labelled drive simulator: fatigue shows in the vehicle metrics, determinism, files, CLI."""

from __future__ import annotations

import math

import pytest

from fatigue_llm.perception.vehicle import VehicleWindow, read_vehicle_csv
from fatigue_llm.sim.drive import (
    DriveSimError,
    SimulatedDrive,
    main,
    read_drive_csv,
    simulate_drive,
    write_drive_csv,
)

GAP = math.radians(2.0)


def whole_drive_metrics(drive: SimulatedDrive):
    window = VehicleWindow(1e6, GAP)
    for sample in drive.samples:
        window.add(sample)
    return window.metrics()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drowsy_drive_weaves_and_reverses_more_than_alert(seed):
    alert = whole_drive_metrics(simulate_drive(240, 20, [(0.0, 0.0)], seed))
    drowsy = whole_drive_metrics(simulate_drive(240, 20, [(0.0, 0.9)], seed))
    assert drowsy.sdlp > 1.5 * alert.sdlp
    assert drowsy.steering_reversal_rate > 1.5 * alert.steering_reversal_rate
    assert drowsy.speed_variance > 5 * alert.speed_variance
    assert 0.05 < alert.sdlp < 0.25  # an attentive motorway driver keeps within a few decimetres


def test_alert_driver_has_no_lapses_and_a_drowsy_one_has_some():
    alert = simulate_drive(120, 10, lambda t: 0.0, seed=4)
    drowsy = simulate_drive(120, 10, lambda t: 1.0, seed=4)
    assert not any(alert.lapse) and alert.lapse_events == []
    assert any(drowsy.lapse) and len(drowsy.lapse_events) >= 3


def test_same_seed_same_drive_other_seed_other_drive():
    a = simulate_drive(30, 20, [(0.0, 0.2), (30.0, 0.8)], seed=7)
    b = simulate_drive(30, 20, [(0.0, 0.2), (30.0, 0.8)], seed=7)
    c = simulate_drive(30, 20, [(0.0, 0.2), (30.0, 0.8)], seed=8)
    assert a == b
    assert a.samples != c.samples


def test_samples_and_labels_follow_duration_rate_and_profile():
    drive = simulate_drive(10, 25, [(0.0, 0.0), (10.0, 1.0)], seed=1, time_driving_at_start=3600.0)
    assert len(drive.samples) == len(drive.fatigue) == len(drive.lapse) == 251
    assert drive.samples[-1].timestamp_s == pytest.approx(10.0)
    assert drive.fatigue[0] == 0.0 and drive.fatigue[-1] == 1.0 and drive.fatigue[125] == pytest.approx(0.5)
    assert drive.samples[-1].time_driving == pytest.approx(3610.0)
    assert all(math.isfinite(s.speed) and math.isfinite(s.lateral_offset) for s in drive.samples)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(duration_s=0.0), ["duration"]),
        (dict(duration_s=math.inf), ["duration"]),
        (dict(rate_hz=-5.0), ["rate"]),
        (dict(seed=-1), ["seed"]),
        (dict(fatigue_profile=lambda t: 1.5), ["1.5", "[0, 1]"]),
        (dict(fatigue_profile=[(5.0, 0.1), (1.0, 0.2)]), ["increasing"]),
        (dict(fatigue_profile=[]), ["pairs"]),
    ],
)
def test_bad_simulator_input_is_named(kwargs, words):
    arguments = {**dict(duration_s=10.0, rate_hz=10.0, fatigue_profile=[(0.0, 0.5)], seed=0), **kwargs}
    with pytest.raises(DriveSimError) as error:
        simulate_drive(**arguments)
    for word in words:
        assert word in str(error.value)


# --- files and command line -----------------------------------------------------------------------
def test_csv_round_trip_keeps_samples_and_labels(tmp_path):
    drive = simulate_drive(20, 10, [(0.0, 1.0)], seed=2)
    path = tmp_path / "drive.csv"
    write_drive_csv(path, drive)
    back = read_drive_csv(path)
    assert back.samples == drive.samples and back.fatigue == drive.fatigue and back.lapse == drive.lapse
    assert len(back.lapse_events) == len(drive.lapse_events) > 0  # rebuilt from the 10 Hz flags
    for (start, _), (start_back, _) in zip(drive.lapse_events, back.lapse_events, strict=True):
        assert start_back == pytest.approx(start, abs=0.11)
    assert read_vehicle_csv(path) == drive.samples  # label columns are ignored by plain readers


def test_cli_writes_a_labelled_csv(tmp_path, capsys):
    out = tmp_path / "drive.csv"
    assert main([str(out), "--duration", "12", "--rate", "5", "--fatigue", "0.2:0.9", "--seed", "3"]) == 0
    drive = read_drive_csv(out)
    assert len(drive.samples) == 61
    assert drive.fatigue[0] == pytest.approx(0.2) and drive.fatigue[-1] == pytest.approx(0.9)
    assert "61 samples" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--fatigue", "0.2-0.9"], ["--fatigue", "START:END"]),
        (["--fatigue", "0:2"], ["--fatigue", "[0, 1]"]),
        (["--duration", "-3"], ["--duration", "> 0"]),
        (["--rate", "abc"], ["--rate", "'abc'"]),
        (["--seed", "x"], ["--seed"]),
        (["--duration", "100000"], ["duration", "14400"]),
    ],
)
def test_cli_rejects_bad_arguments_with_a_message(tmp_path, capsys, argv, words):
    with pytest.raises(SystemExit) as exit_:
        code = main([str(tmp_path / "out.csv"), *argv])
        raise SystemExit(code)
    assert exit_.value.code == 2
    message = capsys.readouterr().err
    for word in words:
        assert word in message, message
    assert not (tmp_path / "out.csv").exists()


def test_cli_rejects_a_missing_output_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "no" / "such" / "out.csv")])
    assert exit_.value.code == 2
    assert "does not exist" in capsys.readouterr().err
