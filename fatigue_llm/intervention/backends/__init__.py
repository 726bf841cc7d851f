"""On-device language-model backends behind one small interface (see ``base.Backend``)."""

from __future__ import annotations

from fatigue_llm.intervention.backends.base import Backend, BackendError, Generation, GenerationTimeout
from fatigue_llm.intervention.models import resolve_model
from fatigue_llm.llm.config import LlmConfig

__all__ = ["Backend", "BackendError", "Generation", "GenerationTimeout", "create_backend"]


def create_backend(config: LlmConfig) -> Backend:
    """The backend named by ``config.backend`` with ``config.model_path`` ("" = embedded SmolLM2).

    Raises ModelError (from fatigue_llm.intervention.models) when the model is missing or unusable,
    and BackendError for an unknown backend or a GGUF-only option combination.
    """
    source = resolve_model(config.model_path)
    if config.backend == "llamacpp":
        from fatigue_llm.intervention.backends.llamacpp import LlamaCppBackend

        if source.kind != "gguf":
            raise BackendError(
                f"backend 'llamacpp' needs a GGUF file, {source.path} is a Hugging Face folder: "
                "convert it with 'fatigue-llm model convert' or use backend 'transformers'"
            )
        if config.lora_path or config.quantization != "none":
            raise BackendError("'lora_path' and 'quantization' apply to backend 'transformers' only")
        return LlamaCppBackend(source.path, n_threads=config.n_threads, n_ctx=config.n_ctx,
                               temperature=config.temperature)
    if config.backend == "transformers":
        from fatigue_llm.intervention.backends.transformers_backend import TransformersBackend

        return TransformersBackend(source, n_threads=config.n_threads, quantization=config.quantization,
                                   lora_path=config.lora_path, temperature=config.temperature)
    raise BackendError(f"unknown backend {config.backend!r}: llamacpp or transformers")
