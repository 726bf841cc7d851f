"""Node executables as processes: bad parameters end them with a clear message and exit code 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


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


MODEL_LIBRARIES = ("libllama", "libggml", "libtorch", "faiss", "llama_cpp", "transformers")


def test_intervention_process_loads_no_model_code():
    """The safety path's process maps no LLM runtime: a crash there cannot take the alerts with it."""
    process = subprocess.Popen([sys.executable, "-m", "fatigue_llm.intervention.node"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(4.0)  # configured and active: every import it will ever do is done
        assert process.poll() is None, process.communicate()[0]
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        loaded = sorted({name for name in MODEL_LIBRARIES if name in maps})
        assert not loaded, f"intervention node mapped model code: {loaded}"
        status = dict(line.split(":", 1) for line in Path(f"/proc/{process.pid}/status").read_text().splitlines())
        rss_mib = int(status["VmRSS"].split()[0]) / 1024
        assert rss_mib < 250, f"intervention node RSS {rss_mib:.0f} MiB"  # rclpy + numpy, no model (~100 MiB)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)


def test_llm_process_yields_the_cpu_to_the_safety_path(tmp_path):
    """Every thread of the llm process runs at a lower priority (nice +10), llama.cpp's workers included."""
    process = subprocess.Popen([sys.executable, "-m", "fatigue_llm.llm.node", "--ros-args",
                                "-p", f"case_store_path:={tmp_path / 'cases'}",
                                "-p", f"outbox_path:={tmp_path / 'outbox.sqlite3'}"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(8.0)  # model loaded: llama.cpp's threads exist
        assert process.poll() is None, process.communicate()[0]
        tasks = list(Path(f"/proc/{process.pid}/task").iterdir())
        nices = {int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]) for task in tasks}
        assert nices == {max(10, os.nice(0))}, f"thread nice values {sorted(nices)}"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)
