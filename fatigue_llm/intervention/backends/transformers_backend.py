"""Transformers backend (PyTorch, CPU): Hugging Face Llama folders or GGUF files.

- loads safetensors only (``use_safetensors=True``; a GGUF is read through ``gguf_file=``), SDPA
  attention, never anything from a hub (``HF_HUB_OFFLINE=1``, ``local_files_only``);
- quantization: none | int8_dynamic (``torch.ao.quantization.quantize_dynamic`` of every Linear) |
  bnb_8bit | bnb_nf4 (bitsandbytes through ``BitsAndBytesConfig``);
- optional LoRA adapter (peft, ``adapter_model.safetensors``), merged unless bitsandbytes is used;
- soft prompt: ``prefix_embeds`` (n_virtual_tokens x hidden, from the FeatureProjector) are inserted
  as ``inputs_embeds`` at the soft-prompt slot (``base.soft_prompt_slot``: the end of the prompt, right
  before the answer), after the fixed prefix, whose ``past_key_values`` stay valid;
- JSON-schema constrained decoding: each step takes the most likely token whose text keeps the
  answer a prefix of a schema-conforming JSON text (``schema_regex`` with partial matching).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from fatigue_llm.intervention.backends.base import (
    Backend,
    BackendError,
    Deadline,
    Generation,
    GenerationTimeout,
    Message,
    fixed_prefix_tokens,
    schema_regex,
    soft_prompt_slot,
)
from fatigue_llm.intervention.backends.structured import allowed_tokens
from fatigue_llm.intervention.models import ModelError, ModelSource, is_nf4_checkpoint, match_gguf_pre_tokenizer

QUANTIZATIONS = ("none", "int8_dynamic", "bnb_8bit", "bnb_nf4")
DTYPES = ("float32", "bfloat16")


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _bnb_config(quantization: str, dtype):
    from transformers import BitsAndBytesConfig

    if quantization == "bnb_8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    # double quantization (QLoRA's): the per-block scales in 8 bits, 0.5 instead of 4 bytes per 64 weights
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                              bnb_4bit_use_double_quant=True)


def load_model(source: ModelSource, quantization: str = "none", dtype: str = "float32", lora_path: str = ""):
    """(model, tokenizer) for ``source``. Raises ModelError when loading fails or options are invalid."""
    _offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if quantization not in QUANTIZATIONS:
        raise ModelError(f"quantization {quantization!r} is not one of {QUANTIZATIONS}")
    if dtype not in DTYPES:
        raise ModelError(f"dtype {dtype!r} is not one of {DTYPES}")
    torch_dtype = getattr(torch, dtype)
    kwargs: dict = {"attn_implementation": "sdpa", "dtype": torch_dtype, "local_files_only": True}
    if quantization.startswith("bnb_"):
        if not (quantization == "bnb_nf4" and source.kind == "hf" and is_nf4_checkpoint(source.path)):
            kwargs["quantization_config"] = _bnb_config(quantization, torch_dtype)  # else: saved quantized
        kwargs["device_map"] = "cpu"
    if source.kind == "gguf":
        folder, where = source.path.parent, {"gguf_file": source.path.name}
    else:
        folder, where = source.path, {"use_safetensors": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **where)
        if source.kind == "gguf":
            match_gguf_pre_tokenizer(tokenizer, source.path)
        model = AutoModelForCausalLM.from_pretrained(str(folder), **where, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, ImportError) as error:
        raise ModelError(f"transformers could not load {source.path}: {error}") from None
    if lora_path:
        model = _apply_lora(model, Path(lora_path), merge=not quantization.startswith("bnb_"))
    model.eval()
    if quantization == "int8_dynamic":
        import warnings

        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # torch.ao eager quantization is deprecated in favour of torchao
            warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
            model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model, tokenizer


def _apply_lora(model, path: Path, merge: bool):
    """Wrap ``model`` with the peft adapter in ``path`` (safetensors only); merged when ``merge``."""
    from peft import PeftModel

    if not (path / "adapter_config.json").is_file() or not (path / "adapter_model.safetensors").is_file():
        raise ModelError(f"LoRA folder {path} needs adapter_config.json and adapter_model.safetensors")
    try:
        model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise ModelError(f"could not apply LoRA adapter {path}: {error}") from None
    return model.merge_and_unload() if merge else model


def _truncate(cache, length: int) -> None:
    """Drop the cached positions past ``length`` (``crop`` takes a negative count in transformers 5)."""
    extra = int(cache.get_seq_length()) - length
    if extra > 0:
        cache.crop(-extra)


class TransformersBackend(Backend):
    """A causal LM run with PyTorch on the CPU."""

    name = "transformers"
    supports_soft_prompt = True

    def __init__(self, source: ModelSource, n_threads: int = 2, quantization: str = "none",
                 lora_path: str = "", temperature: float = 0.0, seed: int = 0,
                 dtype: str = "float32") -> None:
        """Load the model. Raises ModelError when it cannot be loaded."""
        import torch

        torch.set_num_threads(max(1, n_threads))
        self.model, self.tokenizer = load_model(source, quantization, dtype, lora_path)
        self.source = source
        self.lora_path = lora_path
        self.quantization = quantization
        self.temperature = temperature
        self._generator = torch.Generator().manual_seed(seed)
        self._lock = threading.Lock()
        self._prefix_ids: list[int] = []
        self._prefix_cache = None
        self._pieces: dict[int, str] = {}
        self._special = set(self.tokenizer.all_special_ids) | set(self.tokenizer.added_tokens_decoder)
        self._eos = self._eos_ids()
        self._patterns: dict[str, object] = {}

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def label(self) -> str:
        return f"{self.source.path.name} (transformers)" + (f" + LoRA {Path(self.lora_path).name}"
                                                              if self.lora_path else "")

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return {int(i) for i in ids if i is not None}

    # --- prompt ------------------------------------------------------------------------------------
    def render_tokens(self, messages: Sequence[Message]) -> list[int]:
        """Prompt tokens of ``messages`` with the tokenizer's chat template and generation prompt."""
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def _piece(self, token: int) -> str:
        if token not in self._pieces:
            self._pieces[token] = self.tokenizer.decode([token], skip_special_tokens=False)
        return self._pieces[token]

    # --- prefix cache ------------------------------------------------------------------------------
    def cache_prefix(self, messages: Sequence[Message]) -> int:
        import torch

        with self._lock, torch.inference_mode():
            ids = fixed_prefix_tokens(self.render_tokens, messages)
            out = self.model(input_ids=torch.tensor([ids]), use_cache=True)
            self._prefix_ids, self._prefix_cache = ids, out.past_key_values
            return len(ids)

    def _start(self, ids: list[int]):
        """(cache, cached token count): the prefix cache when ``ids`` start with the fixed prefix."""
        from transformers import DynamicCache

        n = len(self._prefix_ids)
        if self._prefix_cache is not None and len(ids) > n and ids[:n] == self._prefix_ids:
            return self._prefix_cache, n
        return DynamicCache(config=self.model.config), 0

    # --- generation --------------------------------------------------------------------------------
    def _pattern(self, json_schema: dict):
        import json

        import regex

        key = json.dumps(json_schema, sort_keys=True)
        if key not in self._patterns:
            self._patterns[key] = regex.compile(schema_regex(json_schema))
        return self._patterns[key]

    def _choose(self, logits, text: str, pattern) -> int:
        """Next token: greedy (or sampled at temperature > 0) among tokens the schema allows."""
        import torch

        order = torch.argsort(logits, descending=True).tolist()
        try:
            allowed = allowed_tokens(order, text, pattern, self._piece, self._eos, self._special,
                                     first_only=self.temperature <= 0)
        except ValueError as error:
            raise BackendError(str(error)) from None
        if self.temperature <= 0:
            return allowed[0]
        probs = torch.softmax(logits[allowed] / self.temperature, dim=-1)
        return allowed[int(torch.multinomial(probs, 1, generator=self._generator))]

    def _embeds(self, ids: list[int], prefix_embeds, at: int = 0):
        """Input embeddings of ``ids`` with the soft prompt ``prefix_embeds`` inserted before ``ids[at]``."""
        import torch

        embeds = self.model.get_input_embeddings()(torch.tensor([ids]))
        if prefix_embeds is None:
            return embeds
        soft = torch.as_tensor(prefix_embeds, dtype=embeds.dtype)
        if soft.ndim != 2 or soft.shape[1] != embeds.shape[-1]:
            raise BackendError(
                f"soft prompt shape {tuple(soft.shape)} does not fit hidden size {embeds.shape[-1]}")
        return torch.cat([embeds[:, :at], soft[None], embeds[:, at:]], dim=1)

    def _slot(self, messages: Sequence[Message], ids: list[int]) -> int:
        return soft_prompt_slot(ids)

    def generate(self, messages: Sequence[Message], max_new_tokens: int, deadline_s: float,
                 json_schema: dict | None = None, prefix_embeds: object | None = None,
                 on_text=None) -> Generation:
        """See Backend.generate. Raises GenerationTimeout past the deadline, BackendError otherwise."""
        import torch

        with self._lock, torch.inference_mode():
            deadline = Deadline(deadline_s)
            ids = self.render_tokens(messages)
            pattern = self._pattern(json_schema) if json_schema is not None else None
            cache, cached = self._start(ids)
            slot = cached if prefix_embeds is None else max(self._slot(messages, ids), cached)
            n_soft = 0 if prefix_embeds is None else len(prefix_embeds)
            out: list[int] = []
            logprobs: list[float] = []
            text, ttft, finish = "", 0.0, "length"
            try:
                result = self.model(inputs_embeds=self._embeds(ids[cached:], prefix_embeds, slot - cached),
                                    past_key_values=cache, use_cache=True)
                for _ in range(max_new_tokens):
                    logits = result.logits[0, -1].float()
                    token = self._choose(logits, text, pattern)
                    if not out:
                        ttft = deadline.elapsed()
                    if token in self._eos:
                        finish = "stop"
                        break
                    out.append(token)
                    logprobs.append(float(torch.log_softmax(logits, dim=-1)[token]))
                    text += self._piece(token)
                    if on_text is not None:
                        on_text(text)
                    if pattern is not None and pattern.fullmatch(text):
                        finish = "stop"
                        break
                    if deadline.expired():
                        raise GenerationTimeout(
                            f"generation passed the {deadline_s:.1f} s deadline after {len(out)} tokens")
                    result = self.model(input_ids=torch.tensor([[token]]), past_key_values=cache,
                                        use_cache=True)
            finally:
                if cached:
                    _truncate(cache, cached)  # back to the fixed prefix for the next request
            return Generation(
                text=self.tokenizer.decode(out, skip_special_tokens=False,
                                           clean_up_tokenization_spaces=False),
                tokens=tuple(out), token_logprobs=tuple(logprobs), ttft_s=ttft,
                total_s=deadline.elapsed(), token_pieces=tuple(self._piece(t) for t in out),
                prompt_tokens=len(ids) + n_soft, cached_tokens=cached, finish_reason=finish,
            )

    def logits(self, token_ids: Sequence[int]):
        """Teacher-forced logits (len x vocab, float32 numpy) for ``token_ids``."""
        import torch

        with self._lock, torch.inference_mode():
            return self.model(input_ids=torch.tensor([list(token_ids)])).logits[0].float().numpy()

    def close(self) -> None:
        with self._lock:
            self.model = None
            self._prefix_cache = None
