"""Parameters of the feature-processor node."""

from __future__ import annotations

from dataclasses import dataclass

from fatigue_llm.config import ConfigError


@dataclass(frozen=True)
class FeatureConfig:
    perclos_window: float = 60.0      # s; PERCLOS P80 over this window (Wierwille 1994; NHTSA 1998)
    vehicle_window: float = 60.0      # s of vehicle signals for steering / speed / lane statistics
    publish_period: float = 1.0       # s between periodic FatigueFeatures
    min_window: float = 2.0           # s of data before features are published (NaN otherwise)
    hours_awake_at_start: float = -1.0  # h the driver was awake when the node started; < 0 = unknown
    steering_reversal_gap_deg: float = 2.0  # minimum steering-angle swing counted as a reversal
    voice_window: float = 60.0        # s of driver/voice blocks averaged into voice_quality (NaN without speech)

    def validate(self) -> None:
        for name in ("perclos_window", "vehicle_window", "publish_period", "min_window", "voice_window"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"parameter '{name}' must be > 0, got {getattr(self, name)}")
        if self.min_window > self.perclos_window:
            raise ConfigError(
                f"parameter 'min_window' ({self.min_window}) must not exceed "
                f"'perclos_window' ({self.perclos_window})"
            )
