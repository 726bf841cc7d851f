"""Parameters of the intervention node: the deterministic alert policy (the safety path) and how it
asks the ``llm`` node for follow-ups. The model's own parameters are the llm node's
(``fatigue_llm.llm.config.LlmConfig``)."""

from __future__ import annotations

from dataclasses import dataclass

from fatigue_llm.config import ConfigError


@dataclass(frozen=True)
class InterventionConfig:
    # --- deterministic alert ladder (PERCLOS thresholds; see README "Where the defaults come from")
    advisory_perclos: float = 0.08
    warning_perclos: float = 0.15
    critical_perclos: float = 0.30
    advisory_blink_rate: float = 25.0   # blinks/min
    slow_blink_per_min_warning: float = 6.0
    cooldown: float = 30.0              # s before the same or a lower level is repeated
    critical_cooldown: float = 5.0      # s between CRITICAL alerts

    # --- follow-ups from the llm node (Advise action); the alert never waits for them
    llm_enabled: bool = True
    llm_min_level: int = 1              # ask the LLM only at or above this level (Level value)
    advice_timeout: float = 12.0        # s; a goal without a result by then is abandoned (logged, counted)

    def validate(self) -> None:
        if not 0 < self.advisory_perclos < self.warning_perclos < self.critical_perclos <= 1:
            raise ConfigError(
                "PERCLOS thresholds must satisfy 0 < advisory_perclos < warning_perclos < "
                f"critical_perclos <= 1, got {self.advisory_perclos}, {self.warning_perclos}, "
                f"{self.critical_perclos}"
            )
        for name in ("cooldown", "critical_cooldown"):
            if getattr(self, name) < 0:
                raise ConfigError(f"parameter '{name}' must be >= 0, got {getattr(self, name)}")
        if self.advice_timeout <= 0:
            raise ConfigError(f"parameter 'advice_timeout' must be > 0, got {self.advice_timeout}")
