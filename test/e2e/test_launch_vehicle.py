"""End to end: `fatigue-llm launch vehicle` starts the three nodes as separate processes; a
CRITICAL Intervention for the sample drive's microsleeps arrives on /intervention over DDS,
`fatigue-llm echo` prints it, and SIGTERM stops every node cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FATIGUE_LLM = str(Path(sys.executable).parent / "fatigue-llm")


@pytest.fixture(scope="module")
def sample_video(tmp_path_factory) -> Path:
    from fatigue_llm.sim.driver_video import make_sample_video

    path = tmp_path_factory.mktemp("sample") / "driver.mp4"
    make_sample_video(path)
    return path


class Collected:
    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)


def start_launch_args(*arguments: str) -> tuple[subprocess.Popen, Collected]:
    process = subprocess.Popen(
        [FATIGUE_LLM, "launch", "vehicle", *arguments],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ),
    )
    return process, Collected(process)


def start_launch(video: Path, *extra: str) -> tuple[subprocess.Popen, Collected]:
    return start_launch_args("--video", str(video), *extra)


@pytest.fixture
def params_file(repo, tmp_path) -> Path:
    """config/vehicle.yaml with the case store and outbox in a temporary folder, the video looping."""
    import yaml

    document = yaml.safe_load((repo / "config" / "vehicle.yaml").read_text())
    intervention = document["/**/intervention"]["ros__parameters"]
    intervention["case_store_path"] = str(tmp_path / "case_store")
    intervention["outbox_path"] = str(tmp_path / "outbox.sqlite3")
    # a loaded CI machine must not turn this test of the data path into a test of the deadline
    intervention["generation_deadline"] = 30.0
    path = tmp_path / "vehicle.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_launch_delivers_critical_intervention_and_stops_cleanly(sample_video, params_file):
    import rclpy
    from fatigue_msgs.msg import Intervention
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    rclpy.init()
    node = rclpy.create_node("e2e_listener")
    received: list[Intervention] = []
    node.create_subscription(Intervention, "/intervention", received.append,
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    launch, log = start_launch(sample_video, "--params", str(params_file), "--loop", "true")
    try:
        echo = subprocess.Popen([FATIGUE_LLM, "echo", "/intervention", "--count", "1", "--timeout", "120"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def done() -> bool:
            critical_rule = any(m.level == Intervention.CRITICAL and m.source == "rule" for m in received)
            llm = any(m.source == "local_llm" for m in received)
            return critical_rule and llm and echo.poll() is not None

        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not done():
            rclpy.spin_once(node, timeout_sec=0.2)
        out, err = echo.communicate(timeout=30)
        assert echo.returncode == 0, err + log.text()[-3000:]
        assert "level:" in out and "source:" in out and "explanation:" in out

        # the sample's microsleeps raise a rule-based CRITICAL at once ...
        critical = [m for m in received if m.level == Intervention.CRITICAL and m.source == "rule"]
        assert critical, log.text()[-3000:]
        assert critical[0].action == Intervention.ACTION_ALERT_AUDIO_HAPTIC
        # ... and the embedded on-device model follows up with its own, explained intervention
        llm = [m for m in received if m.source == "local_llm"]
        assert llm, log.text()[-3000:]
        rule_ids = {m.id for m in received if m.source == "rule"}
        assert all(m.follows_id in rule_ids for m in llm)
        assert all(m.message and len(m.message) <= 160 and "similar cases" in m.explanation for m in llm)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        launch.send_signal(signal.SIGTERM)
        code = launch.wait(timeout=30)
    text = log.text()
    assert code == 0, text[-3000:]
    assert "all nodes stopped" in text
    for line in text.splitlines():
        if line.startswith("[launch] started"):
            pid = int(line.rsplit("pid ", 1)[1].rstrip(")"))
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def test_launch_rejects_missing_video_with_clear_error(tmp_path):
    result = subprocess.run([FATIGUE_LLM, "launch", "vehicle", "--video", str(tmp_path / "nope.mp4")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "nope.mp4" in result.stderr


def test_launch_rejects_malformed_parameter_file(tmp_path):
    params = tmp_path / "bad.yaml"
    params.write_text("/**/intervention:\n  ros__parameters:\n    cooldown: soon\n")
    result = subprocess.run([FATIGUE_LLM, "launch", "vehicle", "--params", str(params)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "bad.yaml" in result.stderr and "cooldown" in result.stderr


def test_echo_times_out_with_nonzero_exit():
    result = subprocess.run([FATIGUE_LLM, "echo", "/no_such_topic", "--count", "1", "--timeout", "2"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "/no_such_topic" in result.stderr


def test_launched_nodes_take_camera_images_and_vehicle_csv(tmp_path):
    """Without a video the perception process listens to sensor_msgs/Image; vehicle signals replayed
    from a simulator CSV reach the feature processor, whose steering features become finite."""
    import math

    import rclpy
    from fatigue_msgs.msg import DriverObservation, FatigueFeatures
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from fatigue_llm.perception.image import encode_bgr8
    from fatigue_llm.sim.drive import main as simulate_drive
    from fatigue_llm.sim.driver_video import FaceRenderer

    vehicle_csv = tmp_path / "drive.csv"
    assert simulate_drive([str(vehicle_csv), "--duration", "120", "--rate", "20", "--fatigue", "0.2:0.8"]) == 0
    launch, log = start_launch_args("--image-topic", "/cam/image", "--vehicle-csv", str(vehicle_csv))
    rclpy.init()
    node = rclpy.create_node("e2e_camera")
    observations: list[DriverObservation] = []
    features: list[FatigueFeatures] = []
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(DriverObservation, "/driver/observation", observations.append, reliable)
    node.create_subscription(FatigueFeatures, "/fatigue/features", features.append, reliable)
    publisher = node.create_publisher(Image, "/cam/image", qos_profile_sensor_data)
    frame = FaceRenderer().render(0.0, 0.0, 0.0)
    try:
        deadline = time.monotonic() + 60
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        assert publisher.get_subscription_count() > 0, log.text()[-3000:]
        deadline = time.monotonic() + 60
        while len(observations) < 20 and time.monotonic() < deadline:
            msg = Image()
            now = node.get_clock().now().nanoseconds
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
            msg.height, msg.width, msg.step, msg.data = encode_bgr8(frame)
            msg.encoding = "bgr8"
            publisher.publish(msg)
            end = time.monotonic() + 1 / 15
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.01)
        assert len(observations) >= 20, log.text()[-3000:]
        assert sum(o.face_found for o in observations) >= 15
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(math.isfinite(f.steering_reversal_rate) for f in features):
            rclpy.spin_once(node, timeout_sec=0.1)
        assert any(math.isfinite(f.steering_reversal_rate) and math.isfinite(f.sdlp) for f in features)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        launch.send_signal(signal.SIGINT)
        assert launch.wait(timeout=30) == 0, log.text()[-3000:]
