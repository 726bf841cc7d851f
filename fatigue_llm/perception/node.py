"""Perception node: driver camera (video file, webcam, image folder or sensor_msgs/Image)
-> fatigue_msgs/DriverObservation; optional vehicle CSV replay -> fatigue_msgs/VehicleSignals.

Thin: parameters -> PerceptionConfig, messages <-> dataclasses, the core does the work.
"""

from __future__ import annotations

import threading
import time

from fatigue_msgs.msg import DriverObservation, VehicleSignals
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from fatigue_llm import topics
from fatigue_llm.perception.config import PerceptionConfig
from fatigue_llm.perception.image import ImageEncodingError, decode_image
from fatigue_llm.perception.pipeline import FrameError, PerceptionPipeline
from fatigue_llm.perception.sources import SourceError, open_source
from fatigue_llm.perception.types import VehicleSample
from fatigue_llm.perception.vehicle import VehicleSignalError, read_vehicle_csv
from fatigue_llm.ros.convert import observation_to_msg, time_to_seconds, vehicle_to_msg
from fatigue_llm.ros.params import declare_config
from fatigue_llm.ros.runner import run_node

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


class PerceptionNode(LifecycleNode):
    def __init__(self, **node_options) -> None:
        super().__init__("perception", **node_options)
        self.bad_frames = 0
        self.frames = 0
        self._pipeline: PerceptionPipeline | None = None
        self._pipeline_lock = threading.Lock()  # frames arrive on executor threads and the player
        self._vehicle: list[VehicleSample] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._start_times = (0.0, 0.0)  # (monotonic, ROS clock) at activation: the replay time base
        self._image_sub = None
        self.declare_parameter("autostart", True)
        self.config: PerceptionConfig = declare_config(self, PerceptionConfig)

    @property
    def uses_file_source(self) -> bool:
        c = self.config
        return bool(c.video_path or c.image_folder or c.webcam_index >= 0)

    # --- lifecycle -------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._pipeline = PerceptionPipeline(self.config, still_images=bool(self.config.image_folder))
            if self.config.vehicle_csv:
                self._vehicle = read_vehicle_csv(self.config.vehicle_csv)
            if self.uses_file_source:
                open_source(self.config).close()  # fail now, with the file named, not in the player
        except (SourceError, VehicleSignalError, OSError) as error:
            self.get_logger().error(f"cannot configure perception: {error}")
            return TransitionCallbackReturn.FAILURE
        self._obs_pub = self.create_lifecycle_publisher(DriverObservation, topics.DRIVER_OBSERVATION, RELIABLE)
        self._vehicle_pub = self.create_lifecycle_publisher(VehicleSignals, topics.VEHICLE_SIGNALS, RELIABLE)
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)
        self._stop.clear()
        self._start_times = (time.monotonic(), self.get_clock().now().nanoseconds * 1e-9)
        self._threads = []
        if self._vehicle:
            self._threads.append(threading.Thread(target=self._replay_vehicle, name="vehicle-replay", daemon=True))
        if self.uses_file_source:
            self._threads.append(threading.Thread(target=self._play, name="camera-player", daemon=True))
        for thread in self._threads:
            thread.start()
        if not self.uses_file_source:
            # camera streams: best effort, newest frames matter, stale ones do not
            self._image_sub = self.create_subscription(
                Image, self.config.image_topic, self._on_image, qos_profile_sensor_data
            )
            self.get_logger().info(f"waiting for images on {self._image_sub.topic_name}")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._close_pipeline()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._close_pipeline()
        return super().on_shutdown(state)

    def destroy_node(self) -> None:
        self._stop_inputs()
        self._close_pipeline()
        super().destroy_node()

    def _stop_inputs(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._threads = []
        if self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
            self._image_sub = None

    def _close_pipeline(self) -> None:
        with self._pipeline_lock:  # never close MediaPipe under a frame being processed
            if self._pipeline is not None:
                self._pipeline.close()
                self._pipeline = None

    # --- inputs ----------------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        try:
            frame = decode_image(msg.encoding, msg.height, msg.width, msg.step, bytes(msg.data),
                                 bool(msg.is_bigendian))
        except ImageEncodingError as error:
            self._count_bad(f"image from {self.config.image_topic}: {error}")
            return
        self._process(frame, time_to_seconds(msg.header.stamp), msg.header.frame_id or self.config.frame_id)

    def _play(self) -> None:
        """Play a file source in (scaled) real time; stamps = start time + media time."""
        rate = self.config.playback_rate
        wall_start, clock_start = self._start_times
        offset = 0.0
        while not self._stop.is_set():
            try:
                source = open_source(self.config)
            except SourceError as error:
                self.get_logger().error(str(error))
                return
            last_t = offset
            with source:
                for media_t, frame in source:
                    t = offset + media_t
                    last_t = t
                    if rate > 0:
                        delay = wall_start + t / rate - time.monotonic()
                        if delay > 0 and self._stop.wait(delay):
                            return
                    elif self._stop.is_set():
                        return
                    self._process(frame, clock_start + t, self.config.frame_id)
            self.get_logger().info(f"end of input after {self.frames} frames ({self.bad_frames} bad)")
            if not self.config.loop:
                return
            offset = last_t + 0.1

    def _replay_vehicle(self) -> None:
        """Publish the vehicle CSV in real time from activation, on the camera's time base."""
        wall_start, clock_start = self._start_times
        first = self._vehicle[0].timestamp_s
        for sample in self._vehicle:
            delay = wall_start + (sample.timestamp_s - first) - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            if self._stop.is_set():
                return
            shifted = VehicleSample(clock_start + sample.timestamp_s - first, sample.speed, sample.steering_angle,
                                    sample.yaw_rate, sample.lateral_offset, sample.time_driving)
            self._vehicle_pub.publish(vehicle_to_msg(shifted))
        self.get_logger().info(f"end of vehicle CSV after {len(self._vehicle)} samples")

    def _process(self, frame, stamp_s: float, frame_id: str) -> None:
        with self._pipeline_lock:
            if self._pipeline is None:
                return
            try:
                observation = self._pipeline.process(frame, stamp_s)
            except FrameError as error:
                self._count_bad(str(error))
                return
            except Exception as error:  # noqa: BLE001 - a node never dies on one frame
                self._count_bad(f"unexpected error processing a frame: {error!r}")
                return
        self.frames += 1
        self._obs_pub.publish(observation_to_msg(observation, frame_id))

    def _count_bad(self, reason: str) -> None:
        self.bad_frames += 1
        self.get_logger().warning(f"skipped frame ({self.bad_frames} so far): {reason}",
                                  throttle_duration_sec=5.0)


def main(args: list[str] | None = None) -> int:
    return run_node(PerceptionNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
