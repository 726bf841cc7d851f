"""``fatigue-llm intervene``: one intervention as JSON, clear errors for bad inputs."""

from __future__ import annotations

import json

import pytest

from fatigue_llm.intervention.cli import OUTPUT_FIELDS, main

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
    params.write_text("/**/intervention:\n  ros__parameters:\n    backend: tpu\n")
    args = ["--features", str(features_file), "--params", str(params), "--state-dir", str(tmp_path)]
    assert main(args) == 2
    assert "backend" in capsys.readouterr().err
