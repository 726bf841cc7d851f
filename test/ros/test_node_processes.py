"""Node executables as processes: bad parameters end them with a clear message and exit code 2."""

from __future__ import annotations

import subprocess
import sys


def run_node(module: str, *ros_args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, "--ros-args", *ros_args],
                          capture_output=True, text=True, timeout=60)


def test_malformed_parameter_file_is_reported(tmp_path):
    params = tmp_path / "broken.yaml"
    params.write_text("/**:\n  ros__parameters: [this is: not a mapping\n")
    result = run_node("fatigue_llm.features.node", "--params-file", str(params))
    assert result.returncode == 2
    assert "broken.yaml" in result.stderr


def test_invalid_parameter_value_names_parameter_and_value():
    result = run_node("fatigue_llm.features.node", "-p", "perclos_window:=-5.0")
    assert result.returncode == 2
    assert "perclos_window" in result.stderr and "-5.0" in result.stderr


def test_wrong_parameter_type_is_reported():
    result = run_node("fatigue_llm.intervention.node", "-p", "cooldown:=soon")
    assert result.returncode == 2
    assert "cooldown" in result.stderr
