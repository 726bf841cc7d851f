"""``fatigue-llm intervene``: one intervention as JSON, clear errors for bad inputs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from fatigue_llm.intervention.cli import OUTPUT_FIELDS, main, read_features

WARNING_FEATURES = {"timestamp_s": 100.0, "window_duration": 60.0, "eye_closure_ratio": 0.22,
                    "blink_frequency": 31.0, "time_awake": 17.0}


@pytest.fixture
def features_file(tmp_path):
    path = tmp_path / "features.json"
    path.write_text(json.dumps(WARNING_FEATURES))
    return path


def test_prints_one_intervention_as_json(features_file, tmp_path, capsys):
    code = main(["--features", str(features_file), "--json", "--state-dir", str(tmp_path / "state")])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert tuple(data) == OUTPUT_FIELDS
    assert data["level"] in ("WARNING", "CRITICAL") and data["source"] in ("local_llm", "rule")
    assert isinstance(data["escalated"], bool) and data["latency_ms"] > 0 and data["explanation"]


def test_human_readable_output(features_file, tmp_path, capsys):
    assert main(["--features", str(features_file), "--state-dir", str(tmp_path / "state")]) == 0
    assert "confidence" in capsys.readouterr().out


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not valid JSON"),
    ('["a"]', "expected a JSON object"),
    ('{"eye_closure_ratio": 0.2, "blinks": 3}', "unknown feature field(s) ['blinks']"),
    ('{"eye_closure_ratio": "high"}', "field 'eye_closure_ratio' must be a number"),
])
def test_bad_features_name_file_and_field(tmp_path, capsys, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["--features", str(path), "--json", "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and expected in err


def test_missing_features_file(tmp_path, capsys):
    assert main(["--features", str(tmp_path / "nope.json"), "--state-dir", str(tmp_path)]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_missing_model_is_named(features_file, tmp_path, capsys):
    missing = tmp_path / "no_model.gguf"
    args = ["--features", str(features_file), "--model", str(missing), "--state-dir", str(tmp_path)]
    assert main(args) == 2
    assert str(missing) in capsys.readouterr().err


def test_bad_params_file_is_named(features_file, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("/**/llm:\n  ros__parameters:\n    backend: tpu\n")
    args = ["--features", str(features_file), "--params", str(params), "--state-dir", str(tmp_path)]
    assert main(args) == 2
    assert "backend" in capsys.readouterr().err


ISSUE_FEATURES = '{"blink_frequency": 1e308, "time_awake": -5, "eye_closure_ratio": NaN}'


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    """The installed ``fatigue-llm`` command beside this interpreter (python -m where there is none)."""
    command = Path(sys.executable).with_name("fatigue-llm")
    argv = [str(command)] if command.exists() else [sys.executable, "-m", "fatigue_llm.cli"]
    return subprocess.run([*argv, "intervene", *args], capture_output=True, text=True, timeout=120)


def test_values_no_sensor_can_produce_are_refused_by_the_installed_command(tmp_path):
    path = tmp_path / "features.json"
    path.write_text(ISSUE_FEATURES)
    result = _run_cli("--features", str(path), "--json", "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 2, result
    assert result.stdout == ""  # nothing published
    err = result.stderr
    assert err.startswith(f"error: {path}: ")
    assert "field 'blink_frequency' = 1e+308 is outside [0, 120] /min" in err
    assert "field 'time_awake' = -5 is outside [0, 72] h" in err
    assert "field 'eye_closure_ratio' = NaN is not a JSON number; use null or omit the field" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_refused(tmp_path, capsys, literal):
    path = tmp_path / "features.json"
    path.write_text(f'{{"eye_closure_ratio": 0.3, "sdlp": {literal}}}')
    assert main(["--features", str(path), "--json", "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: field 'sdlp' = {literal} is not a JSON number; use null or omit the field" in err
    assert "eye_closure_ratio" not in err


def test_null_is_an_absent_feature(tmp_path):
    path = tmp_path / "features.json"
    path.write_text('{"window_duration": 60, "eye_closure_ratio": 0.22, "sdlp": null, "yawn_count": null, '
                    '"microsleep": null}')
    features = read_features(path)
    assert features.eye_closure_ratio == 0.22 and math.isnan(features.sdlp)
    assert features.yawn_count == 0 and features.microsleep is False
