"""Parameters of the perception node (one frozen dataclass; see fatigue_llm.config)."""

from __future__ import annotations

from dataclasses import dataclass

from fatigue_llm.config import ConfigError


@dataclass(frozen=True)
class PerceptionConfig:
    # --- input: exactly one of video_path / image_folder / webcam_index >= 0, else image_topic
    video_path: str = ""            # video file to play as the camera
    image_folder: str = ""          # folder of still images, sorted by name
    webcam_index: int = -1          # V4L2 device index; -1 = no webcam
    image_topic: str = "/camera/image_raw"  # sensor_msgs/Image input when no file source is set
    playback_rate: float = 1.0      # 1.0 = real time for file sources; 0 = as fast as possible
    loop: bool = False              # restart the video at its end
    folder_frame_rate: float = 10.0  # Hz assumed between still images
    vehicle_csv: str = ""           # optional CSV of vehicle signals replayed alongside the video
    frame_id: str = "driver_camera"

    # --- face mesh
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5

    # --- eyes (defaults and their evidence: see fatigue_llm/perception/README or docstrings)
    calibration_duration: float = 5.0   # s of open-eye baseline learnt per driver
    closed_fraction: float = 0.65       # eyes closed when EAR < closed_fraction * open baseline
    fallback_ear_threshold: float = 0.20  # used until calibration completes
    slow_blink_duration: float = 0.3    # s
    microsleep_duration: float = 1.0    # s
    face_lost_duration: float = 0.5     # s without a face before a FACE_LOST event

    # --- mouth / head
    yawn_mar_threshold: float = 0.6
    yawn_min_duration: float = 1.0      # s
    # Yawns from the inner-lip opening (perception/yawns.py; values measured there and in the README):
    yawn_opening_threshold: float = 0.25  # video: inner-lip opening above the driver's resting level
    yawn_inner_threshold: float = 0.6     # still images (and video at once): absolute inner-lip opening
    yawn_frame_hold: float = 0.4          # s a wide opening lasts before video frames count as yawning
    nod_pitch_threshold_deg: float = 12.0
    nod_max_duration: float = 2.0       # s

    # --- appended by the perception core
    # EAR of fully closed lids as a fraction of the open baseline (eye_closure = 1 there). MediaPipe's mesh
    # never collapses the lids: our measurement on the generated video is 0.48 (open 0.30, closed 0.146).
    full_closure_ear_fraction: float = 0.5
    # Blinks as dips below an adapting open-eye level (perception/blinks.py; values measured there).
    blink_baseline_window: float = 6.0  # s of open-eye frames whose median is the open level
    blink_min_drop: float = 0.09        # a blink's deepest frame is >= 9 % below the open level
    blink_max_duration: float = 1.5     # s; a shallower dip that lasts longer is a new level (squint)

    def validate(self) -> None:
        sources = [bool(self.video_path), bool(self.image_folder), self.webcam_index >= 0]
        if sum(sources) > 1:
            raise ConfigError(
                "set at most one of video_path, image_folder, webcam_index "
                f"(got video_path={self.video_path!r}, image_folder={self.image_folder!r}, "
                f"webcam_index={self.webcam_index})"
            )
        positive = ("calibration_duration", "slow_blink_duration", "microsleep_duration",
                    "folder_frame_rate", "yawn_min_duration", "nod_max_duration", "blink_baseline_window",
                    "blink_max_duration")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"parameter '{name}' must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.closed_fraction < 1.0:
            raise ConfigError(f"parameter 'closed_fraction' must be in (0, 1), got {self.closed_fraction}")
        if not 0.0 < self.blink_min_drop < 1.0:
            raise ConfigError(f"parameter 'blink_min_drop' must be in (0, 1), got {self.blink_min_drop}")
        for name in ("yawn_opening_threshold", "yawn_inner_threshold"):
            if not 0.0 < getattr(self, name) < 2.0:
                raise ConfigError(f"parameter '{name}' must be in (0, 2), got {getattr(self, name)}")
        if self.yawn_frame_hold < 0:
            raise ConfigError(f"parameter 'yawn_frame_hold' must be >= 0, got {self.yawn_frame_hold}")
        if self.playback_rate < 0:
            raise ConfigError(f"parameter 'playback_rate' must be >= 0, got {self.playback_rate}")
