"""Perception node: driver camera (video file, webcam, image folder or sensor_msgs/Image)
-> fatigue_msgs/DriverObservation; optional vehicle CSV replay -> fatigue_msgs/VehicleSignals.

Thin: parameters -> PerceptionConfig, messages <-> dataclasses, the core does the work.
"""

from __future__ import annotations

import math
import threading
import time

from fatigue_msgs.msg import DriverObservation, VehicleSignals
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from fatigue_llm import topics
from fatigue_llm.diagnostics import ERROR, WARN, Counters, HealthReport, changes, summarize
from fatigue_llm.perception.config import PerceptionConfig
from fatigue_llm.perception.image import ImageEncodingError, decode_image
from fatigue_llm.perception.pipeline import FrameError, PerceptionPipeline
from fatigue_llm.perception.sources import SourceError, open_source
from fatigue_llm.perception.types import VehicleSample
from fatigue_llm.perception.vehicle import VehicleSignalError, read_vehicle_csv
from fatigue_llm.ros.convert import observation_to_msg, time_to_seconds, vehicle_to_msg
from fatigue_llm.ros.diagnostics import DiagnosticsPublisher
from fatigue_llm.ros.params import declare_config
from fatigue_llm.ros.runner import run_node

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
NO_FRAME_WARN_S = 2.0        # a driver camera runs at >= 10 fps: 2 s without a frame is a stalled camera
FACE_FOUND_WARN_BELOW = 0.5  # face missing in most frames: camera misaimed, occluded or the driver gone


class PerceptionNode(LifecycleNode):
    def __init__(self, **node_options) -> None:
        super().__init__("perception", **node_options)
        self.counters = Counters("frames_received", "frames_processed", "frames_rejected", "faces_found")
        self._last_counts = self.counters.snapshot()
        self._last_frame: float | None = None  # monotonic time of the last frame received
        self._active_since: float | None = None  # monotonic time of activation; None while not active
        self._source_error: str | None = None  # why the camera source failed, until it works again
        self._input_ended = False  # a file source played to its end (not looping): no frames is expected
        self._pipeline: PerceptionPipeline | None = None
        self._pipeline_lock = threading.Lock()  # frames arrive on executor threads and the player
        self._vehicle: list[VehicleSample] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._start_times = (0.0, 0.0)  # (monotonic, ROS clock) at activation: the replay time base
        self._image_sub = None
        self.declare_parameter("autostart", True)
        self.config: PerceptionConfig = declare_config(self, PerceptionConfig)
        self.diagnostics = DiagnosticsPublisher(self, self.health)

    @property
    def uses_file_source(self) -> bool:
        c = self.config
        return bool(c.video_path or c.image_folder or c.webcam_index >= 0)

    @property
    def source_kind(self) -> str:
        c = self.config
        if c.video_path:
            return "video"
        if c.image_folder:
            return "image_folder"
        return "webcam" if c.webcam_index >= 0 else "topic"

    @property
    def frames(self) -> int:
        return self.counters.get("frames_processed")

    @property
    def bad_frames(self) -> int:
        return self.counters.get("frames_rejected")

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
            self._source_error = str(error)
            return TransitionCallbackReturn.FAILURE
        self._source_error = None
        self._obs_pub = self.create_lifecycle_publisher(DriverObservation, topics.DRIVER_OBSERVATION, RELIABLE)
        self._vehicle_pub = self.create_lifecycle_publisher(VehicleSignals, topics.VEHICLE_SIGNALS, RELIABLE)
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)
        self._stop.clear()
        self._start_times = (time.monotonic(), self.get_clock().now().nanoseconds * 1e-9)
        self._active_since, self._input_ended = time.monotonic(), False
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
        self._active_since = None
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._close_pipeline()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._active_since = None
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
        self._frame_arrived()
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
            last_t = offset
            try:  # image folders raise while iterating (an undecodable file), videos only on open
                with open_source(self.config) as source:
                    self._source_error = None  # (re)opened: a failure before is over
                    for media_t, frame in source:
                        self._frame_arrived()
                        t = offset + media_t
                        last_t = t
                        if rate > 0:
                            delay = wall_start + t / rate - time.monotonic()
                            if delay > 0 and self._stop.wait(delay):
                                return
                        elif self._stop.is_set():
                            return
                        self._process(frame, clock_start + t, self.config.frame_id)
            except SourceError as error:
                self.get_logger().error(str(error))
                self._source_error = str(error)
                return
            self.get_logger().info(f"end of input after {self.frames} frames ({self.bad_frames} bad)")
            if self.source_kind == "webcam" and not self._stop.is_set():
                self._source_error = f"webcam {self.config.webcam_index} stopped delivering frames"
            if not self.config.loop:
                self._input_ended = True
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
        self.counters.increment("frames_processed")
        if observation.face_found:
            self.counters.increment("faces_found")
        self._obs_pub.publish(observation_to_msg(observation, frame_id))

    def _frame_arrived(self) -> None:
        self.counters.increment("frames_received")
        self._last_frame = time.monotonic()

    def _count_bad(self, reason: str) -> None:
        count = self.counters.increment("frames_rejected")
        self.get_logger().warning(f"skipped frame ({count} so far): {reason}", throttle_duration_sec=5.0)

    # --- health ----------------------------------------------------------------------------------
    def health(self) -> HealthReport:
        """ERROR when the source failed; WARN for a stalled camera, rejected frames or a face mostly not found."""
        counts = self.counters.snapshot()
        recent = changes(counts, self._last_counts)
        self._last_counts = counts
        now = time.monotonic()
        last_frame, active_since = self._last_frame, self._active_since
        processed = recent["frames_processed"]
        face_fraction = recent["faces_found"] / processed if processed else math.nan
        problems = []
        if self._source_error:
            problems.append((ERROR, f"{self.source_kind} source failed: {self._source_error}"))
        elif active_since is not None and not self._input_ended:
            waiting_s = now - max(active_since, last_frame or active_since)
            if waiting_s > NO_FRAME_WARN_S:
                problems.append((WARN, f"no frame for {waiting_s:.1f} s"))
        if recent["frames_rejected"]:
            problems.append((WARN, f"{recent['frames_rejected']} frames rejected in the last period"))
        if face_fraction < FACE_FOUND_WARN_BELOW:  # False for NaN: no frames is the stall check's business
            problems.append((WARN, f"face found in {face_fraction:.0%} of the last {processed} frames"))
        values = {
            "source": self.source_kind,
            "active": active_since is not None,
            **counts,
            "face_found_fraction": face_fraction,
            "last_frame_age_s": now - last_frame if last_frame is not None else math.nan,
        }
        idle_message = "end of input" if self._input_ended else "inactive"
        ok_message = "processing" if active_since is not None and not self._input_ended else idle_message
        return summarize(problems, values, ok_message=ok_message)


def main(args: list[str] | None = None) -> int:
    return run_node(PerceptionNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
