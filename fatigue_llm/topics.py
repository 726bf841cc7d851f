"""Topic names (relative, so a namespace applies) and their QoS, shared by all nodes."""

from __future__ import annotations

DRIVER_OBSERVATION = "driver/observation"
VEHICLE_SIGNALS = "vehicle/signals"
FATIGUE_FEATURES = "fatigue/features"
INTERVENTION = "intervention"
INTERVENTION_PARTIAL = "intervention/partial"  # follow-up text while the LLM writes it
ADVISE_ACTION = "llm/advise"  # fatigue_msgs/action/Advise, served by the llm node
