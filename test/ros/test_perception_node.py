"""Perception node with real rclpy: Image topic in, DriverObservation out; bad images counted."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fatigue_msgs.msg import DriverObservation
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from fatigue_llm import topics
from fatigue_llm.perception.image import encode_bgr8
from fatigue_llm.perception.node import PerceptionNode
from fatigue_llm.ros.runner import autostart

from .helpers import wait_for, wait_for_subscribers

RELIABLE = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def face_frames(tmp_path_factory) -> list[np.ndarray]:
    from fatigue_llm.sim.driver_video import make_sample_video

    path = tmp_path_factory.mktemp("video") / "sample.mp4"
    make_sample_video(path)
    capture = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < 30:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 30
    return frames


def image_msg(frame: np.ndarray, t: float, encoding: str = "bgr8") -> Image:
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
    msg.header.frame_id = "driver_camera"
    msg.height, msg.width, msg.step, data = encode_bgr8(frame)
    msg.encoding = encoding
    msg.data = data
    return msg


def test_image_topic_to_observations_and_bad_frames_are_skipped(graph, face_frames):
    node = graph.add(PerceptionNode, autostart=False, image_topic="/camera/image_raw")
    assert autostart(node)
    probe = graph.probe()
    observations: list[DriverObservation] = []
    probe.create_subscription(DriverObservation, topics.DRIVER_OBSERVATION, observations.append, RELIABLE)
    # a reliable publisher matches the node's best-effort subscription (the reverse would not)
    publisher = probe.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    wait_for_subscribers(publisher)

    bad = image_msg(face_frames[0], 0.5)
    bad.encoding = "yuv422_yuy2_weird"
    truncated = image_msg(face_frames[0], 0.6)
    truncated.data = truncated.data[:100]
    for i, frame in enumerate(face_frames):
        publisher.publish(image_msg(frame, 1.0 + i / 15))
        if i == 5:
            publisher.publish(bad)
            publisher.publish(truncated)
        wait_for(lambda n=i: len(observations) > n - 3, timeout=1.0)  # pace like a camera
    assert wait_for(lambda: len(observations) >= 25, timeout=15)
    assert node.bad_frames >= 2
    found = [o for o in observations if o.face_found]
    assert len(found) >= 20
    assert all(0.05 < o.ear < 0.6 for o in found)
    assert observations[-1].header.frame_id == "driver_camera"


def test_missing_video_fails_configuration_with_the_file_named(graph, tmp_path):
    node = graph.add(PerceptionNode, autostart=False, video_path=str(tmp_path / "missing.mp4"))
    assert not autostart(node)
