"""On-device language-model backends behind one small interface (see ``base.Backend``)."""

from __future__ import annotations

from fatigue_llm.intervention.backends.base import Backend, BackendError, Generation, GenerationTimeout
from fatigue_llm.intervention.models import NO_ADAPTER, default_adapter, resolve_model
from fatigue_llm.llm.config import LlmConfig

__all__ = ["Backend", "BackendError", "Generation", "GenerationTimeout", "create_backend"]


def create_backend(config: LlmConfig) -> Backend:
    """The backend named by ``config.backend`` with ``config.model_path`` ("" = embedded SmolLM2).

    Raises ModelError (from fatigue_llm.intervention.models) when the model is missing or unusable,
    and BackendError for an unknown backend or an option the backend does not take (``quantization``
    with llamacpp; a ``lora_path`` that is not a .gguf file with llamacpp).
    """
    if config.backend == "onnxruntime":  # an ONNX folder (fatigue-llm export RUN --onnx DIR), not a GGUF/HF model
        from fatigue_llm.intervention.backends.onnxruntime_backend import OnnxRuntimeBackend

        if not config.model_path:
            raise BackendError("backend 'onnxruntime' needs 'model_path': an ONNX folder written by "
                               "'fatigue-llm export RUN --onnx DIR'")
        if config.quantization != "none" or config.lora_path not in ("", NO_ADAPTER):
            raise BackendError("backend 'onnxruntime' takes neither 'quantization' nor 'lora_path' (the adapter "
                               "is merged at export: 'fatigue-llm export RUN --onnx DIR')")
        return OnnxRuntimeBackend(config.model_path, n_threads=config.n_threads, n_ctx=config.n_ctx,
                                  temperature=config.temperature)
    source = resolve_model(config.model_path)
    if config.backend == "llamacpp":
        from fatigue_llm.intervention.backends.llamacpp import LlamaCppBackend

        if source.kind != "gguf":
            raise BackendError(
                f"backend 'llamacpp' needs a GGUF file, {source.path} is a Hugging Face folder: "
                "convert it with 'fatigue-llm model convert' or use backend 'transformers'"
            )
        if config.quantization != "none":
            raise BackendError("'quantization' applies to backend 'transformers' only (a GGUF is quantized "
                               "when written: 'fatigue-llm model convert --quant')")
        if config.lora_path not in ("", NO_ADAPTER) and not config.lora_path.endswith(".gguf"):
            raise BackendError(
                f"backend 'llamacpp' takes a GGUF LoRA as 'lora_path' (a .gguf file), not {config.lora_path}: "
                "write one with 'fatigue-llm export RUN --lora-gguf X.gguf', or use backend 'transformers' "
                "for a peft adapter folder")
        return LlamaCppBackend(source.path, n_threads=config.n_threads, n_ctx=config.n_ctx,
                               temperature=config.temperature, lora_path=default_adapter(config.lora_path, source))
    if config.backend == "transformers":
        from fatigue_llm.intervention.backends.transformers_backend import TransformersBackend

        return TransformersBackend(source, n_threads=config.n_threads, quantization=config.quantization,
                                   lora_path="" if config.lora_path == NO_ADAPTER else config.lora_path,
                                   temperature=config.temperature)
    raise BackendError(f"unknown backend {config.backend!r}: llamacpp, transformers or onnxruntime")
