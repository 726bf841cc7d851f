"""The windowed fatigue feature vector (plain data; mirrors fatigue_msgs/FatigueFeatures)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

NAN = math.nan

# The seed project's eight features, in its CSV column order.
SEED_FEATURES = (
    "eye_closure_ratio",
    "blink_frequency",
    "head_nod",
    "voice_quality",
    "steering_stability",
    "speed_variance",
    "yaw_rate",
    "time_awake",
)


@dataclass(frozen=True)
class FatigueFeatures:
    timestamp_s: float = NAN          # end of the window
    trigger_event: bool = False       # published at once for a safety event
    window_duration: float = 0.0      # s
    face_visible_fraction: float = NAN
    # seed features
    eye_closure_ratio: float = NAN    # PERCLOS P80, [0, 1]
    blink_frequency: float = NAN      # blinks / min
    head_nod: float = NAN             # nods / min
    voice_quality: float = NAN        # [0, 1]; no voice source yet
    steering_stability: float = NAN   # steering reversals / min
    speed_variance: float = NAN       # (m/s)^2
    yaw_rate: float = NAN             # rad/s std
    time_awake: float = NAN           # h
    # supporting detail
    mean_blink_duration: float = NAN  # s
    longest_eye_closure: float = 0.0  # s
    microsleep_count: int = 0
    slow_blink_count: int = 0
    yawn_count: int = 0
    steering_angle_std: float = NAN   # rad
    sdlp: float = NAN                 # m
    time_driving: float = NAN         # s
    microsleep: bool = False          # a microsleep started since the previous publication

    def seed_vector(self) -> list[float]:
        """The eight seed features in seed CSV order (NaN where absent)."""
        return [float(getattr(self, name)) for name in SEED_FEATURES]

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "<features>") -> FatigueFeatures:
        """Build from a JSON-like mapping; unknown keys are an error naming the key."""
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{source}: unknown feature field(s) {unknown}; known: {sorted(known)}")
        kwargs = {}
        for name, value in values.items():
            if value is None:
                value = NAN
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                if known[name] in ("bool", bool) and isinstance(value, bool):
                    kwargs[name] = value
                    continue
                raise ValueError(f"{source}: field '{name}' must be a number, got {value!r}")
            kwargs[name] = value
        return cls(**kwargs)
