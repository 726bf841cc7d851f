"""Latency from a camera frame's arrival to the published DriverObservation, across DDS.

The perception node runs as its own process (as deployed); this process publishes 640x480 bgr8
sensor_msgs/Image frames of the generated driver video at a camera rate and receives the
observations. The observation keeps the image's header stamp, so latency = receive time - stamp
(one clock: same machine). Publishing at 15 and 30 fps side by side in one run shows whether the
node keeps up.

    .venv/bin/python bench/bench_perception_node.py [--seconds 10]

Prints a table and one JSON line (also written to bench/results/perception_node.json).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
from fatigue_llm.ros.environment import apply_local_dds_defaults  # noqa: E402

apply_local_dds_defaults()

import rclpy  # noqa: E402
from fatigue_msgs.msg import DriverObservation  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from fatigue_llm.perception.image import encode_bgr8  # noqa: E402
from fatigue_llm.sim.driver_video import FaceRenderer, frame_truth, sample_script  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "perception_node.json"


def stamp_key(nanoseconds: int) -> int:
    """Stamps pass through float seconds in the core (sub-microsecond rounding): match at 10 us."""
    return round(nanoseconds / 10_000)


def frames(count: int) -> list[np.ndarray]:
    script, renderer = sample_script(), FaceRenderer()
    return [renderer.render(*(lambda t: (t.closure, t.mouth_open, t.pitch_deg))(frame_truth(script, i)))
            for i in range(count)]


def run_rate(node, publisher, images: list[np.ndarray], fps: float, seconds: float, received: dict) -> dict:
    received.clear()
    sent: dict[int, float] = {}
    period = 1.0 / fps
    start = time.monotonic()
    n = int(seconds * fps)
    for i in range(n):
        due = start + i * period
        while time.monotonic() < due:
            rclpy.spin_once(node, timeout_sec=max(0.0, due - time.monotonic()))
        msg = Image()
        now = node.get_clock().now().nanoseconds
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        msg.height, msg.width, msg.step, msg.data = encode_bgr8(images[i % len(images)])
        msg.encoding = "bgr8"
        sent[stamp_key(now)] = now
        publisher.publish(msg)
    drain = time.monotonic() + 2.0
    while time.monotonic() < drain:
        rclpy.spin_once(node, timeout_sec=0.05)
    latencies = np.array([received[k] - sent[k] for k in received if k in sent]) / 1e6
    return {
        "fps_in": fps,
        "frames_sent": n,
        "observations": len(latencies),
        "delivered": len(latencies) / n,
        "latency_ms_p50": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
        "latency_ms_p95": float(np.percentile(latencies, 95)) if len(latencies) else float("nan"),
        "latency_ms_max": float(latencies.max()) if len(latencies) else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    images = frames(60)
    node_process = subprocess.Popen(
        [sys.executable, "-m", "fatigue_llm.perception.node", "--ros-args", "-p", "image_topic:=/bench/image"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    rclpy.init()
    node = rclpy.create_node("bench_perception_node")
    received: dict[int, int] = {}

    def on_observation(msg: DriverObservation) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        received[stamp_key(stamp)] = node.get_clock().now().nanoseconds

    node.create_subscription(DriverObservation, "/driver/observation", on_observation,
                             QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE))
    publisher = node.create_publisher(Image, "/bench/image", qos_profile_sensor_data)
    try:
        deadline = time.monotonic() + 60
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        time.sleep(2.0)  # let the node finish configuring MediaPipe
        rows = [run_rate(node, publisher, images, fps, args.seconds, received) for fps in (15.0, 30.0)]
    finally:
        node_process.send_signal(signal.SIGINT)
        try:
            node_process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node_process.kill()
        node.destroy_node()
        rclpy.try_shutdown()
    print("| camera fps | frames | delivered | latency p50 (ms) | p95 (ms) | max (ms) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fps_in']:.0f} | {r['frames_sent']} | {r['delivered']:.1%} | {r['latency_ms_p50']:.1f} "
              f"| {r['latency_ms_p95']:.1f} | {r['latency_ms_max']:.1f} |")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2))
    print(json.dumps({"bench": "perception_node", "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
