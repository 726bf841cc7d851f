"""Plain data of an intervention decision (mirrors fatigue_msgs/Intervention)."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from enum import IntEnum


class Level(IntEnum):
    INFO = 0
    ADVISORY = 1
    WARNING = 2
    CRITICAL = 3


class Source:
    RULE = "rule"
    LOCAL_LLM = "local_llm"
    CLOUD = "cloud"


# The fixed action catalogue (same strings as the Intervention.msg ACTION_* constants),
# each with a fallback message used when no model answer is available.
ACTIONS: dict[str, str] = {
    "none": "No action needed.",
    "dashboard_notice": "Signs of tiredness are building. Plan a break at the next rest area.",
    "suggest_break": "You are showing signs of fatigue. Please take a break within 15 minutes.",
    "ventilation": "Fresh air can help briefly: open a window, but plan a break soon.",
    "audio_chime": "Fatigue warning: your eyes are closing often. Take a break at the next exit.",
    "alert_audio_haptic": "WAKE UP! Your eyes closed while driving. Pull over safely now.",
    "pull_over": "Critical fatigue. Find a safe place to stop and rest now.",
}

MAX_MESSAGE_CHARS = 160

# The actions a model answer may pair with each level: what the level calls for, nothing milder
# than its alarm (a CRITICAL state gets the alarm or a stop, never a dashboard notice) and nothing
# louder than needed (no seat vibration for early signs).
LEVEL_ACTION_CHOICES: dict[Level, tuple[str, ...]] = {
    Level.INFO: ("none", "dashboard_notice"),
    Level.ADVISORY: ("dashboard_notice", "suggest_break", "ventilation"),
    Level.WARNING: ("suggest_break", "audio_chime"),
    Level.CRITICAL: ("alert_audio_haptic", "pull_over"),
}


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class InterventionDecision:
    level: Level
    action: str
    message: str
    source: str
    confidence: float
    escalated: bool = False
    explanation: str = ""
    latency_ms: float = 0.0
    id: str = field(default_factory=new_id)
    follows_id: str = ""
    timestamp_s: float = 0.0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action {self.action!r} is not in the catalogue {sorted(ACTIONS)}")
        if len(self.message) > MAX_MESSAGE_CHARS:
            raise ValueError(f"message is {len(self.message)} chars, limit {MAX_MESSAGE_CHARS}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")

    def to_json_dict(self) -> dict:
        data = asdict(self)
        data["level"] = self.level.name
        return data
