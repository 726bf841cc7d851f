"""The perception pipeline: one camera frame + timestamp in, one FrameObservation out (no ROS)."""

from __future__ import annotations

import math

import numpy as np

from fatigue_llm.perception import geometry
from fatigue_llm.perception.blinks import BlinkRecord
from fatigue_llm.perception.config import PerceptionConfig
from fatigue_llm.perception.detectors import DriverStateDetectors, EyeClosureRecord, FaceMeasurement
from fatigue_llm.perception.landmarks import FaceLandmarks, FaceMeshDetector
from fatigue_llm.perception.types import FrameObservation

# tracking_confidence = 1 / (1 + (rms / (RIGIDITY_SCALE * eye_span))^2), see `rigidity_confidence`.
# Our measurement on the generated video (a smiling face vs the neutral model): rms ~0.08 of the eye span,
# so confidence ~0.78 for a good track.
RIGIDITY_SCALE = 0.15


class FrameError(ValueError):
    """A frame the pipeline cannot use (size, dtype, channels); the message names the problem and shape."""


class TimestampError(FrameError):
    """A frame timestamp that is not finite or does not increase."""


def check_frame(frame: object) -> np.ndarray:
    """The frame as an HxWx3 (BGR) or HxW (grey) uint8 array; HxWx1 is taken as grey.

    Raises FrameError for anything else: not an array, not uint8, zero size, other channel counts.
    """
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"frame must be a numpy array, got {type(frame).__name__}")
    desc = f"shape {frame.shape}, dtype {frame.dtype}"
    if frame.dtype != np.uint8:
        raise FrameError(f"frame must be uint8, got {desc}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] != 3):
        raise FrameError(f"frame must be HxWx3 BGR or HxW grey, got {desc}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise FrameError(f"frame is empty, got {desc}")
    return np.ascontiguousarray(frame)


def rigidity_confidence(face: FaceLandmarks, reprojection_rms: float) -> float:
    """How well the mesh fits a rigid face, in (0, 1]: 1 for a perfect fit of the head-pose model, 0.5 when
    the RMS reprojection error is RIGIDITY_SCALE of the distance between the outer eye corners.

    MediaPipe's face-mesh solution exposes no tracking score; this is a plausibility measure of the
    landmarks (a mesh dragged onto a non-face or a badly occluded face fits poorly), not a probability.
    """
    span = float(np.hypot(*(face.points[geometry.RIGHT_EYE[0], :2] - face.points[geometry.LEFT_EYE[0], :2])))
    if not (math.isfinite(reprojection_rms) and span > 0):
        return 0.0
    return 1.0 / (1.0 + (reprojection_rms / (RIGIDITY_SCALE * span)) ** 2)


def _mean_finite(a: float, b: float) -> float:
    """Mean of the finite values among a and b (NaN if neither is)."""
    if math.isfinite(a) and math.isfinite(b):
        return 0.5 * (a + b)
    return a if math.isfinite(a) else b


class PerceptionPipeline:
    """Face mesh -> EAR / MAR / head pose -> driver-state detectors, for one camera.

    `still_images=True` runs MediaPipe without tracking and decides yawns per frame (image folders).
    Frames must come in increasing timestamp order. Invalid input raises FrameError / TimestampError and
    leaves the state untouched, so the caller can count the frame as bad and go on. Construction raises
    ConfigError for an invalid config. Not thread-safe: one pipeline per camera thread.
    """

    def __init__(self, config: PerceptionConfig, still_images: bool = False) -> None:
        config.validate()
        self.config = config
        self.still_images = still_images
        self._detectors = DriverStateDetectors(config, still_images)
        self._mesh: FaceMeshDetector | None = FaceMeshDetector(
            still_images, config.min_detection_confidence, config.min_tracking_confidence)
        self._last_t: float | None = None
        self.last_closure: EyeClosureRecord | None = None
        """The eye closure (blink, slow blink, microsleep) that ended at the last processed frame, if any."""
        self.last_blink: BlinkRecord | None = None
        """The blink dip (first..last frame, perception/blinks.py) that ended at the previous frame, if any."""

    def _check_timestamp(self, timestamp_s: object) -> float:
        try:
            t = float(timestamp_s)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise TimestampError(f"timestamp must be a number of seconds, got {timestamp_s!r}") from None
        if not math.isfinite(t):
            raise TimestampError(f"timestamp must be finite, got {t}")
        if self._last_t is not None and t <= self._last_t:
            raise TimestampError(
                f"timestamp {t:.6f} s does not increase (previous frame at {self._last_t:.6f} s)")
        return t

    def process(self, frame: np.ndarray, timestamp_s: float) -> FrameObservation:
        """The driver state at one frame (HxWx3 BGR or HxW grey uint8) taken at `timestamp_s` seconds.

        Raises FrameError (bad frame) or TimestampError (non-finite, repeated or decreasing timestamp).
        """
        image = check_frame(frame)
        t = self._check_timestamp(timestamp_s)
        if self._mesh is None:
            raise RuntimeError("PerceptionPipeline.process() called after close()")
        face = self._mesh.detect(image)
        self._last_t = t
        if face is None:
            state = self._detectors.update(t, None)
            self.last_closure = state.eye.finished
            self.last_blink = state.eye.blink_finished
            return FrameObservation(t, False, ear_threshold=state.eye.ear_threshold,
                                    calibrated=state.eye.calibrated, events=state.events)
        ear_right, ear_left = geometry.eye_aspect_ratios(face.points)
        ear = _mean_finite(ear_right, ear_left)
        mar = geometry.mouth_aspect_ratio(face.points)
        pose = geometry.head_pose(face.points, face.width, face.height)
        pitch = yaw = roll = math.nan
        confidence = 0.0
        if pose is not None:
            pitch, yaw, roll = pose.pitch, pose.yaw, pose.roll
            confidence = rigidity_confidence(face, pose.reprojection_rms)
        inner_lip = geometry.inner_lip_opening(face.points)
        state = self._detectors.update(t, FaceMeasurement(ear, mar, pitch, inner_lip))
        self.last_closure = state.eye.finished
        self.last_blink = state.eye.blink_finished
        eye = state.eye
        return FrameObservation(
            timestamp_s=t, face_found=True, tracking_confidence=confidence,
            ear_left=ear_left, ear_right=ear_right, ear=ear, ear_threshold=eye.ear_threshold,
            calibrated=eye.calibrated, eyes_closed=eye.eyes_closed, eye_closure=eye.eye_closure,
            closed_duration_s=eye.closed_duration_s, mar=mar, yawning=state.yawning,
            pitch_rad=pitch, yaw_rad=yaw, roll_rad=roll, events=state.events, blink=eye.blink,
        )

    def close(self) -> None:
        """Release MediaPipe; further process() calls raise RuntimeError. Safe to call twice."""
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def __enter__(self) -> PerceptionPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
