"""``fatigue-llm bag record`` and ``bag play`` over real DDS between real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from fatigue_msgs.msg import FatigueFeatures
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from fatigue_llm.bags import BagWriter, get_typestore, new_message, open_bag

from .helpers import wait_for

pytestmark = pytest.mark.ros

COUNT = 20
PERIOD_S = 0.05

# Publishes COUNT FatigueFeatures (reliable) and DriverObservations (sensor data, best effort) once the
# recorder has subscribed to both, header.stamp.sec = index; then stays a moment so nothing is cut off.
PUBLISHER = textwrap.dedent(f"""
    import time
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from fatigue_msgs.msg import DriverEvent, DriverObservation, FatigueFeatures
    rclpy.init()
    node = rclpy.create_node("bag_test_publisher")
    features = node.create_publisher(FatigueFeatures, "/fatigue/features", 10)
    observations = node.create_publisher(DriverObservation, "/driver/observation", qos_profile_sensor_data)
    deadline = time.monotonic() + 30
    while (features.get_subscription_count() < 1 or observations.get_subscription_count() < 1) \\
            and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # let the recorder's reader finish matching in the other direction too
    for i in range({COUNT}):
        f = FatigueFeatures(trigger=FatigueFeatures.TRIGGER_PERIODIC, eye_closure_ratio=i / 100, microsleep_count=i)
        f.header.stamp.sec = i
        features.publish(f)
        o = DriverObservation(face_found=True, ear=0.3,
                              events=[DriverEvent(type=DriverEvent.BLINK, duration=0.1 * (i % 3))])
        o.header.stamp.sec = i
        observations.publish(o)
        time.sleep({PERIOD_S})
    print("published", flush=True)
    time.sleep(1.0)
    node.destroy_node()
    rclpy.shutdown()
""")


def _bag_cli(python: str, *args: str) -> list[str]:
    return [python, "-m", "fatigue_llm.cli", "bag", *args]


def _finish(process: subprocess.Popen, timeout: float = 30) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"{process.args} did not finish:\n{err[-3000:]}")
    return process.returncode, out, err


class Arrivals:
    """Messages a subscription got, with their monotonic arrival times."""

    def __init__(self) -> None:
        self.items: list[tuple[float, object]] = []
        self._lock = threading.Lock()

    def __call__(self, msg: object) -> None:
        with self._lock:
            self.items.append((time.monotonic(), msg))

    @property
    def span(self) -> float:
        return self.items[-1][0] - self.items[0][0]


def _features_bag(path: Path, span_s: float = 1.0, count: int = COUNT) -> Path:
    """A bag of FatigueFeatures evenly spread over span_s, header.stamp.sec = index."""
    store = get_typestore()
    time_type, header_type = store.types["builtin_interfaces/msg/Time"], store.types["std_msgs/msg/Header"]
    start_ns = 1_700_000_000 * 10**9
    with BagWriter(path) as writer:
        writer.add_topic("/fatigue/features", "fatigue_msgs/msg/FatigueFeatures")
        for i in range(count):
            msg = new_message("fatigue_msgs/msg/FatigueFeatures", header=header_type(stamp=time_type(sec=i, nanosec=0),
                                                                                    frame_id=""))
            writer.write("/fatigue/features", start_ns + int(i * span_s / (count - 1) * 1e9), msg)
    return path


def _subscribe(graph, msg_type, topic: str, reliable: bool = True) -> Arrivals:
    arrivals = Arrivals()
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)
    graph.probe(f"bag_test_sub_{topic.strip('/').replace('/', '_')}").create_subscription(msg_type, topic, arrivals,
                                                                                          qos)
    return arrivals


def _play(python: str, bag: Path, *args: str) -> tuple[int, str, str]:
    process = subprocess.Popen(_bag_cli(python, "play", str(bag), "--wait-subscribers", "10", *args),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return _finish(process)


@pytest.mark.slow
def test_record_then_play_round_trip(tmp_path, python, graph):
    bag = tmp_path / "drive"
    recorder = subprocess.Popen(_bag_cli(python, "record", "/fatigue/features", "/driver/observation",
                                         "--out", str(bag)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    publisher = subprocess.Popen([python, "-c", PUBLISHER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rc, out, err = _finish(publisher, timeout=60)
    assert rc == 0 and "published" in out, err
    assert not bag.exists(), "the bag appeared before the recorder closed it"
    recorder.send_signal(signal.SIGINT)
    rc, _, err = _finish(recorder)
    assert rc == 0, err
    assert "recording /driver/observation (fatigue_msgs/msg/DriverObservation, best_effort)" in err  # as published
    assert "warning" not in err  # the graph's type hashes match the .msg files the bag stores

    with open_bag(bag) as reader:
        assert reader.error is None
        topics = reader.topics
        assert topics["/fatigue/features"].count == COUNT
        assert topics["/driver/observation"].count >= COUNT - 2  # best effort: tolerate a lost sample
        qos = topics["/driver/observation"].offered_qos[0]
        assert qos.reliability.name == "BEST_EFFORT"
        features = [m.decode() for m in reader.messages(["/fatigue/features"])]
        observations = [m.decode() for m in reader.messages(["/driver/observation"])]
        stamps = [m.stamp_ns for m in reader.messages(["/fatigue/features"])]
    assert [f.header.stamp.sec for f in features] == list(range(COUNT))
    assert features[7].microsleep_count == 7 and features[7].eye_closure_ratio == pytest.approx(0.07)
    assert observations[0].events[0].type == 0 and observations[0].face_found
    recorded_span = (stamps[-1] - stamps[0]) / 1e9
    assert recorded_span == pytest.approx((COUNT - 1) * PERIOD_S, abs=0.3)  # stamps are receive times

    arrivals = _subscribe(graph, FatigueFeatures, "/fatigue/features")
    rc, _, err = _play(python, bag, "--topics", "/fatigue/features")
    assert rc == 0, err
    assert wait_for(lambda: len(arrivals.items) == COUNT, timeout=5), f"{len(arrivals.items)} arrived\n{err}"
    assert [m.header.stamp.sec for _, m in arrivals.items] == list(range(COUNT))
    assert arrivals.span == pytest.approx(recorded_span, abs=0.25)


@pytest.mark.slow
@pytest.mark.parametrize("rate", [1.0, 2.0])
def test_play_rate_scales_the_timing(tmp_path, python, graph, rate):
    bag = _features_bag(tmp_path / "features", span_s=1.2)
    arrivals = _subscribe(graph, FatigueFeatures, "/fatigue/features")
    rc, _, err = _play(python, bag, "--rate", str(rate))
    assert rc == 0, err
    assert wait_for(lambda: len(arrivals.items) == COUNT, timeout=5), f"{len(arrivals.items)} arrived\n{err}"
    assert [m.header.stamp.sec for _, m in arrivals.items] == list(range(COUNT))
    assert arrivals.span == pytest.approx(1.2 / rate, abs=0.2)


@pytest.mark.slow
def test_play_publishes_clock(tmp_path, python, graph):
    bag = _features_bag(tmp_path / "features", span_s=1.0)
    with open_bag(bag) as reader:
        start_ns, end_ns = reader.start_ns, reader.end_ns
    clock = _subscribe(graph, Clock, "/clock", reliable=False)
    features = _subscribe(graph, FatigueFeatures, "/fatigue/features")
    rc, _, err = _play(python, bag, "--clock", "50")
    assert rc == 0, err
    assert wait_for(lambda: len(features.items) == COUNT, timeout=5)
    stamps = [m.clock.sec * 10**9 + m.clock.nanosec for _, m in clock.items]
    assert len(stamps) >= 20, f"only {len(stamps)} /clock messages in ~1 s at 50 Hz"
    assert stamps == sorted(stamps)
    assert start_ns <= stamps[0] and stamps[-1] <= end_ns + 10**8  # bag time, not wall time


@pytest.mark.slow
def test_play_loop_until_sigint(tmp_path, python, graph):
    bag = _features_bag(tmp_path / "features", span_s=0.3, count=5)
    arrivals = _subscribe(graph, FatigueFeatures, "/fatigue/features")
    player = subprocess.Popen(_bag_cli(python, "play", str(bag), "--loop", "--rate", "2", "--wait-subscribers", "10"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: len(arrivals.items) >= 15, timeout=20), f"{len(arrivals.items)} arrived"
    player.send_signal(signal.SIGINT)
    rc, _, err = _finish(player)
    assert rc == 0, err
    assert [m.header.stamp.sec for _, m in arrivals.items[:15]] == [0, 1, 2, 3, 4] * 3


def test_record_sigterm_without_publisher_closes_an_empty_bag(tmp_path, python):
    bag = tmp_path / "empty"
    recorder = subprocess.Popen(_bag_cli(python, "record", "/nobody/publishes", "--out", str(bag), "--storage",
                                         "sqlite3"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    recorder.send_signal(signal.SIGTERM)
    rc, _, err = _finish(recorder)
    assert rc == 1 and "no publisher appeared on /nobody/publishes" in err and "Traceback" not in err
    with open_bag(bag) as reader:  # closed cleanly: a complete (empty) bag
        assert reader.storage == "sqlite3" and reader.message_count == 0


@pytest.mark.slow
def test_record_stops_after_count(tmp_path, python):
    source = _features_bag(tmp_path / "source", span_s=2.0, count=40)
    bag = tmp_path / "counted"
    recorder = subprocess.Popen(_bag_cli(python, "record", "fatigue/features", "--out", str(bag), "--count", "5",
                                         "--storage", "sqlite3"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    player = subprocess.Popen(_bag_cli(python, "play", str(source), "--wait-subscribers", "20"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rc, _, err = _finish(recorder)
    _finish(player)
    assert rc == 0, err
    with open_bag(bag) as reader:
        assert reader.topics["/fatigue/features"].count == 5
        assert [m.decode().header.stamp.sec for m in reader.messages()] == [0, 1, 2, 3, 4]


def test_play_unknown_bag_is_a_clean_error(tmp_path, python):
    rc, _, err = _play(python, tmp_path / "missing")
    assert rc == 2
    assert err.startswith("error: ") and "missing" in err and "Traceback" not in err


def test_record_refuses_existing_bag(tmp_path, python):
    bag = _features_bag(tmp_path / "features")
    process = subprocess.run(_bag_cli(python, "record", "/fatigue/features", "--out", str(bag), "--duration", "1"),
                             capture_output=True, text=True, timeout=30)
    assert process.returncode == 2
    assert "already exists" in process.stderr and "Traceback" not in process.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
