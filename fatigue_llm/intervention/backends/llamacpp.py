"""llama.cpp backend (llama-cpp-python): GGUF models on the CPU.

- the model's own chat template (``tokenizer.chat_template`` in the GGUF), rendered with Jinja2;
- answers to flat JSON schemas (string enums and strings, the intervention answer) by template
  decoding (``structured.py``): the JSON text between values is evaluated in batches and only the
  model's choices and free text are decoded, token by token; any other schema goes through a
  llama.cpp JSON-schema grammar (``LlamaGrammar.from_json_schema``). Either way the answer is
  well-formed;
- the model's log-probability of every chosen token, from the raw logits (before any constraint);
- KV reuse of the fixed prompt prefix: ``cache_prefix`` evaluates the system prompt once and saves
  the context state. A request first reuses whatever leading tokens the context already holds
  (llama.cpp keeps the previous prompt), and when that is less than the fixed prefix (another
  prompt ran in between) it restores the saved state instead of re-evaluating the prefix;
- soft prompts (``prefix_embeds``, the feature projector's virtual tokens): they go at the soft-prompt slot,
  the end of the prompt (``base.soft_prompt_slot``), as one ``llama_batch`` of embeddings (``batch.embd``:
  they enter the model where token embeddings would, after the ``token_embd`` lookup; llama-architecture
  models scale nothing there, as llama.cpp's multimodal path relies on). The prompt's tokens before them
  (system turn, rule line, any retrieved cases) repeat while a rule decision holds: they are reused from the
  context or restored from the saved states of the last ``SLOT_STATES`` such prompts, and evaluated only
  when new, so a request evaluates its virtual tokens alone. The context marks the virtual positions with
  ``SOFT_TOKEN`` (no token id), so a later request reuses the context only up to the slot.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fatigue_llm.intervention.backends.base import (
    Backend,
    BackendError,
    Deadline,
    Generation,
    GenerationTimeout,
    Message,
    common_prefix_len,
    fixed_prefix_tokens,
    log_softmax_at,
    soft_prompt_slot,
)
from fatigue_llm.intervention.backends.structured import (
    StructuredDecoder,
    decode_within,
    greedy_picker,
    sampling_picker,
    template_fields,
)
from fatigue_llm.intervention.models import ModelError, is_gguf

EVAL_CHUNK = 64  # prompt tokens evaluated between deadline checks
SOFT_TOKEN = -1  # what the context's token list holds at a virtual (embedding) position: equal to no token
# Saved context states of prompts before a soft prompt: one per rule decision the policy makes (4 without
# retrieved cases). Each holds the KV of the whole prompt: 12.7 MB for SmolLM2's 553 tokens (measured).
SLOT_STATES = 4
# A JSON string character: the generic rule also allows raw control characters (newlines, tabs),
# which are invalid JSON and would let a small model spend its token budget on whitespace.
_ANY_CHAR = 'char ::= [^"\\\\] |'
_PRINTABLE_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def _chat_renderer(template: str, bos: str, eos: str):
    """A function rendering messages with a Jinja2 chat template (sandboxed, as llama.cpp does)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise BackendError(f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    compiled = env.from_string(template)

    def render(messages: Sequence[Message]) -> str:
        return compiled.render(messages=list(messages), add_generation_prompt=True, bos_token=bos,
                               eos_token=eos, raise_exception=raise_exception)

    return render


def _lora_refusal(model, lora: Path) -> str:
    """llama.cpp's reason for refusing the LoRA ``lora`` on ``model`` (a ``LlamaModel``): the adapter is
    loaded once more with llama.cpp's log caught. llama-cpp-python 0.3.36 maps ggml's log levels to the
    wrong names (errors come out as debug), so when not verbose the reason is never printed."""
    import llama_cpp
    from llama_cpp._logger import set_verbose

    lines = io.StringIO()
    stderr, sys.stderr = sys.stderr, lines  # where llama-cpp-python's log callback prints
    set_verbose(True)
    try:
        adapter = llama_cpp.llama_adapter_lora_init(model.model, str(lora).encode("utf-8"))
    finally:
        set_verbose(False)
        sys.stderr = stderr
    if adapter:
        llama_cpp.llama_adapter_lora_free(adapter)
    found = [line.strip() for line in lines.getvalue().splitlines() if "fail" in line or "error" in line]
    return found[-1] if found else "llama.cpp gave no reason"


class LlamaCppBackend(Backend):
    """A GGUF model loaded with llama-cpp-python."""

    name = "llamacpp"
    supports_soft_prompt = True

    def __init__(self, model_path: str | Path, n_threads: int = 2, n_ctx: int = 1024,
                 temperature: float = 0.0, seed: int = 0, logits_all: bool = False,
                 template_decoding: bool = True, lora_path: str | Path | None = None) -> None:
        """Load ``model_path``, with the GGUF LoRA adapter ``lora_path`` applied at load time (scale 1;
        ``fatigue-llm export RUN --lora-gguf X.gguf`` writes one). Raises ModelError when a file is missing,
        not a GGUF or unloadable (an adapter for another base: llama.cpp checks tensor names and shapes).

        ``template_decoding=False`` sends every schema through the grammar sampler (benchmarks)."""
        import llama_cpp

        path = Path(model_path)
        if not path.is_file() or not is_gguf(path):
            raise ModelError(f"GGUF model {path} does not exist or is not a GGUF file")
        lora = Path(lora_path) if lora_path else None
        if lora is not None and (not lora.is_file() or not is_gguf(lora)):
            raise ModelError(f"GGUF LoRA {lora} does not exist or is not a GGUF file "
                             f"(write one with `fatigue-llm export RUN --lora-gguf {lora.name}`)")
        try:
            # use_mmap=False: llama.cpp repacks Q4_0/Q8_0 weights for the CPU's SIMD into its own
            # buffer, so a memory-mapped file only kept a second copy resident. Measured on the
            # TinyLlama Q4_0: peak RSS 1270 -> 758 MiB, prompt and decode speed unchanged.
            # The LoRA is not merged: llama.cpp adds scale * B(A x) next to each (quantized) matmul.
            self.llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                n_batch=min(512, n_ctx), seed=seed, logits_all=logits_all, verbose=False, use_mmap=False,
                lora_path=None if lora is None else str(lora),
            )
        except (ValueError, RuntimeError, OSError) as error:
            with_lora = "" if lora is None else f" with the LoRA {lora}"
            raise ModelError(f"llama.cpp could not load {path}{with_lora}: {error}") from None
        if lora is not None and not self.llm._lora_adapter:
            # llama-cpp-python 0.3.36 tests the adapter pointer with `is None`, so an adapter llama.cpp
            # refused (a NULL pointer) went unnoticed and the model ran without it
            reason = _lora_refusal(self.llm._model, lora)
            self.llm._lora_adapter = None
            self.llm.close()
            raise ModelError(f"llama.cpp refused the LoRA {lora} for {path} (an adapter for another base?): "
                             f"{reason}")
        self.path = path
        self.lora_path = lora
        self.temperature = temperature
        self.seed = seed
        self._lock = threading.Lock()
        self._vocab = self.llm._model.vocab
        self._render = self._make_renderer()
        self._prefix_tokens: list[int] = []
        self._prefix_state = None
        self._slot_states: OrderedDict[tuple[int, ...], bytes] = OrderedDict()  # text before a soft prompt -> state
        self.slot_restores = 0
        self._grammars: dict[str, object] = {}
        self._decoder: StructuredDecoder | None = None
        self.template_decoding = template_decoding
        self.state_restores = 0

    @property
    def hidden_size(self) -> int:
        """Width of the model's token embeddings (what a soft prompt's rows must have)."""
        return int(self.llm.n_embd())

    @property
    def label(self) -> str:
        return self.path.name + (f" + LoRA {self.lora_path.name}" if self.lora_path is not None else "")

    # --- prompt ------------------------------------------------------------------------------------
    def _make_renderer(self):
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelError(f"{self.path} has no tokenizer.chat_template in its metadata")

        def token_text(key: str) -> str:
            index = self.llm.metadata.get(key)
            return "" if index is None else self.llm.detokenize([int(index)], special=True).decode(
                "utf-8", errors="replace")

        return _chat_renderer(template, token_text("tokenizer.ggml.bos_token_id"),
                              token_text("tokenizer.ggml.eos_token_id"))

    def render_tokens(self, messages: Sequence[Message]) -> list[int]:
        """Prompt tokens of ``messages`` with the chat template and the generation prompt."""
        return self._tokenize_prompt(self._render(messages))

    def _tokenize_prompt(self, text: str) -> list[int]:
        add_bos = bool(self.llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true")
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    # --- prefix cache ------------------------------------------------------------------------------
    def cache_prefix(self, messages: Sequence[Message]) -> int:
        with self._lock:
            tokens = fixed_prefix_tokens(self.render_tokens, messages)
            self.llm.n_tokens = 0
            self._eval(tokens, Deadline(float("inf")))
            self._prefix_tokens = tokens
            self._prefix_state = self._save_state()
            self._slot_states.clear()  # they begin with the old prefix
            if self.template_decoding:
                self._structured_decoder()  # at load time rather than on the first request
            return len(tokens)

    def _save_state(self) -> bytes:
        """The context's KV state (llama.cpp serialises only the used cells). Not ``Llama.save_state``:
        that also copies Python-side logits whose buffer holds only ``n_batch`` rows."""
        import ctypes

        import llama_cpp

        size = llama_cpp.llama_state_get_size(self.llm._ctx.ctx)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_get_data(self.llm._ctx.ctx, buffer, size)
        return bytes(buffer)[:written]

    def _load_prefix_state(self) -> None:
        self._load_state(self._prefix_state, self._prefix_tokens)

    def _load_state(self, state: bytes, tokens: Sequence[int]) -> None:
        """Restore a saved context ``state`` that holds ``tokens``."""
        import ctypes

        import llama_cpp

        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if llama_cpp.llama_state_set_data(self.llm._ctx.ctx, buffer, len(state)) != len(state):
            raise BackendError("llama.cpp could not restore a cached prompt state")
        n = len(tokens)
        self.llm.input_ids[:n] = tokens
        self.llm.n_tokens = n

    def _reuse(self, tokens: list[int], need_logits: bool = True) -> int:
        """Position up to which the context already holds ``tokens``; restores the saved prefix
        state when that beats what the context holds. Never past a virtual position (``SOFT_TOKEN``).
        With ``need_logits`` (the next step decodes from the prompt's last position) it stops one token
        short, so that token is evaluated again for fresh logits."""
        held = common_prefix_len(self.llm.input_ids[: self.llm.n_tokens].tolist(), tokens)
        prefix = self._prefix_tokens
        if self._prefix_state is not None and held < len(prefix) and tokens[: len(prefix)] == prefix:
            self._load_prefix_state()
            self.state_restores += 1
            held = len(prefix)
        return min(held, len(tokens) - 1) if need_logits else held

    def _eval(self, tokens: Sequence[int], deadline: Deadline) -> None:
        for start in range(0, len(tokens), EVAL_CHUNK):
            if deadline.expired():
                raise GenerationTimeout(f"prompt evaluation passed the {deadline.budget_s:.1f} s deadline")
            self.llm.eval(tokens[start:start + EVAL_CHUNK])

    def _eval_embeds(self, embeds: np.ndarray, deadline: Deadline, all_logits: bool = False) -> np.ndarray | None:
        """Evaluate ``embeds`` (n x hidden float32) after the context's tokens as one embedding batch;
        with ``all_logits`` returns their logits (n x vocab). Raises BackendError when llama.cpp fails."""
        import ctypes

        import llama_cpp

        if deadline.expired():
            raise GenerationTimeout(f"prompt evaluation passed the {deadline.budget_s:.1f} s deadline")
        n, width = embeds.shape
        start = self.llm.n_tokens
        if start + n > self.llm.n_ctx():
            raise BackendError(f"soft prompt of {n} tokens after {start} does not fit n_ctx={self.llm.n_ctx()}")
        self.llm._ctx.kv_cache_seq_rm(-1, start, -1)
        data = np.ascontiguousarray(embeds, dtype=np.float32)
        batch = llama_cpp.llama_batch_init(n, width, 1)
        try:
            ctypes.memmove(batch.embd, data.ctypes.data, data.nbytes)
            for i in range(n):
                batch.pos[i] = start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1 if all_logits or i == n - 1 else 0
            batch.n_tokens = n
            code = llama_cpp.llama_decode(self.llm._ctx.ctx, batch)
            if code != 0:
                raise BackendError(f"llama.cpp could not evaluate the soft prompt (llama_decode returned {code})")
            logits = None
            if all_logits:
                pointer = llama_cpp.llama_get_logits(self.llm._ctx.ctx)
                logits = np.ctypeslib.as_array(pointer, shape=(n, self.llm.n_vocab())).copy()
        finally:
            llama_cpp.llama_batch_free(batch)
        self.llm.input_ids[start:start + n] = SOFT_TOKEN
        self.llm.n_tokens = start + n
        return logits

    def _soft(self, prefix_embeds) -> np.ndarray:
        """A soft prompt (torch tensor or array, n x hidden) as float32 numpy; BackendError when it does not fit."""
        data = prefix_embeds.detach().cpu().numpy() if hasattr(prefix_embeds, "detach") else prefix_embeds
        data = np.asarray(data, dtype=np.float32)
        if data.ndim != 2 or data.shape[1] != self.hidden_size or len(data) == 0:
            raise BackendError(f"soft prompt shape {tuple(data.shape)} does not fit hidden size {self.hidden_size}")
        return data

    def _slot(self, messages: Sequence[Message], tokens: list[int]) -> int:
        """Index of the soft-prompt slot in ``tokens`` (``soft_prompt_slot``: the end of the prompt)."""
        return soft_prompt_slot(tokens)

    def _prime(self, tokens: list[int], soft: np.ndarray | None, slot: int, deadline: Deadline
               ) -> tuple[int, list[int]]:
        """Bring the context up to the prompt: (cached tokens reused, the prompt as the context holds it).

        Without a soft prompt only the reusable part is set (the caller evaluates the rest); with one,
        the tokens up to ``slot`` are brought in (``_bring_in``) and the virtual tokens evaluated; the
        returned prompt has ``SOFT_TOKEN`` at the virtual positions."""
        if soft is None:
            cached = self._reuse(tokens)
            self.llm.n_tokens = cached
            return cached, tokens
        cached = self._bring_in(tokens[:slot], deadline)
        self._eval_embeds(soft, deadline)
        return cached, [*tokens[:slot], *([SOFT_TOKEN] * len(soft)), *tokens[slot:]]

    def _bring_in(self, text_tokens: list[int], deadline: Deadline) -> int:
        """Make the context hold exactly ``text_tokens`` (the prompt before a soft prompt): as it already does,
        from its saved state (``_slot_states``), or by reusing what it can, evaluating the rest and saving the
        state. Returns the tokens not evaluated. The virtual tokens that follow give the logits, so nothing
        is evaluated again for them."""
        key = tuple(text_tokens)
        state = self._slot_states.get(key)
        if state is not None:
            self._slot_states.move_to_end(key)  # in use: the last to be dropped
        held = common_prefix_len(self.llm.input_ids[: self.llm.n_tokens].tolist(), text_tokens)
        if held < len(text_tokens) and state is not None:
            self._load_state(state, text_tokens)
            self.slot_restores += 1
            return len(text_tokens)
        held = self._reuse(text_tokens, need_logits=False)
        self.llm.n_tokens = held
        if held < len(text_tokens):
            self._eval(text_tokens[held:], deadline)
            self._slot_states[key] = self._save_state()
            while len(self._slot_states) > SLOT_STATES:
                self._slot_states.popitem(last=False)
        return held

    # --- generation --------------------------------------------------------------------------------
    def _grammar(self, json_schema: dict):
        from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

        key = json.dumps(json_schema, sort_keys=True)
        if key not in self._grammars:
            gbnf = json_schema_to_gbnf(json.dumps(json_schema))
            gbnf = gbnf.replace(_ANY_CHAR, _PRINTABLE_CHAR)
            self._grammars[key] = LlamaGrammar.from_string(gbnf, verbose=False)
        return self._grammars[key]

    def _sampler(self, json_schema: dict | None):
        from llama_cpp import _internals

        sampler = _internals.LlamaSampler()
        if json_schema is not None:
            sampler.add_grammar(self.llm._model, self._grammar(json_schema))
        if self.temperature <= 0:
            sampler.add_greedy()
        else:
            sampler.add_top_k(40)
            sampler.add_top_p(0.95, 1)
            sampler.add_temp(self.temperature)
            sampler.add_dist(self.seed)
        return sampler

    def _last_logits(self) -> np.ndarray:
        import llama_cpp

        pointer = llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.llm.n_vocab(),))

    def generate(self, messages: Sequence[Message], max_new_tokens: int, deadline_s: float,
                 json_schema: dict | None = None, prefix_embeds: object | None = None,
                 on_text=None) -> Generation:
        """See Backend.generate; ``prefix_embeds`` (n x hidden) go in at the soft-prompt slot, the start of
        the last (user) turn's content. Raises BackendError when the prompt does not fit the context or a
        soft prompt does not fit the model, GenerationTimeout past the deadline."""
        import llama_cpp

        with self._lock:
            deadline = Deadline(deadline_s)
            prompt_text = self._render(messages)
            tokens = self._tokenize_prompt(prompt_text)
            soft = None if prefix_embeds is None else self._soft(prefix_embeds)
            n_soft = 0 if soft is None else len(soft)
            if len(tokens) + n_soft + max_new_tokens > self.llm.n_ctx():
                raise BackendError(f"prompt of {len(tokens)} tokens (+ {n_soft} virtual) + {max_new_tokens} new "
                                   f"does not fit n_ctx={self.llm.n_ctx()}")
            slot = self._slot(messages, tokens)
            branches = template_fields(json_schema) if self.template_decoding else None
            if branches is not None:
                return self._generate_template(prompt_text, tokens, branches, max_new_tokens, deadline, on_text,
                                               soft, slot)
            sampler = self._sampler(json_schema)
            cached, tokens = self._prime(tokens, soft, slot, deadline)
            self._eval(tokens[self.llm.n_tokens:], deadline)
            out: list[int] = []
            logprobs: list[float] = []
            pieces: list[bytes] = []
            ttft = 0.0
            finish = "length"
            for _ in range(max_new_tokens):
                logits = self._last_logits()
                token = sampler.sample(self.llm._ctx, -1)
                if not out:
                    ttft = deadline.elapsed()
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    finish = "stop"
                    break
                out.append(token)
                logprobs.append(log_softmax_at(logits, token))
                pieces.append(self.llm.detokenize([token]))
                if on_text is not None:
                    on_text(b"".join(pieces).decode("utf-8", errors="ignore"))
                if deadline.expired():
                    partial = self._generation(out, logprobs, pieces, ttft, deadline, tokens, cached,
                                               "timeout")
                    raise GenerationTimeout(
                        f"generation passed the {deadline_s:.1f} s deadline after {len(out)} tokens", partial)
                self.llm.eval([token])
            return self._generation(out, logprobs, pieces, ttft, deadline, tokens, cached, finish)

    def _generate_template(self, prompt_text: str, tokens: list[int], branches, max_new_tokens: int,
                           deadline: Deadline, on_text=None, soft: np.ndarray | None = None,
                           slot: int = 0) -> Generation:
        cached, tokens = self._prime(tokens, soft, slot, deadline)
        context = _LlamaContext(self, prompt_text, deadline, (slot, len(soft)) if soft is not None else None)
        pick = greedy_picker if self.temperature <= 0 else sampling_picker(self.temperature, self.seed)
        return decode_within(self._structured_decoder(), context, branches, len(tokens), max_new_tokens, pick,
                             deadline, on_text,
                             lambda result, finish: self._template_generation(result, deadline, tokens, cached, finish))

    def _template_generation(self, result, deadline: Deadline, prompt, cached, finish) -> Generation:
        ttft = result.first_pick_s - deadline.start if result.tokens else 0.0
        generation = self._generation(result.tokens, result.logprobs, result.pieces, ttft, deadline,
                                      prompt, cached, finish)
        return dataclasses.replace(generation, text=result.text, choice_logprobs=tuple(result.choice_logprobs),
                                   answer_tokens=result.answer_tokens, forward_passes=result.steps,
                                   text_passes=result.string_passes, text_s=result.string_s)

    def _structured_decoder(self) -> StructuredDecoder:
        """The template decoder of this vocabulary (token texts read once, ~0.1 s)."""
        import llama_cpp

        if self._decoder is None:
            pieces = [self.llm.detokenize([token]) for token in range(self.llm.n_vocab())]
            self._decoder = StructuredDecoder(
                pieces, lambda token: bool(llama_cpp.llama_vocab_is_eog(self._vocab, token)))
        return self._decoder

    @staticmethod
    def _generation(out, logprobs, pieces, ttft, deadline, prompt, cached, finish) -> Generation:
        return Generation(
            text=b"".join(pieces).decode("utf-8", errors="replace"),
            tokens=tuple(out),
            token_logprobs=tuple(logprobs),
            ttft_s=ttft,
            total_s=deadline.elapsed(),
            token_pieces=tuple(piece.decode("utf-8", errors="replace") for piece in pieces),
            prompt_tokens=len(prompt),
            cached_tokens=cached,
            finish_reason=finish,
        )

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits (len(tokens) x vocab) for teacher-forced ``tokens``; needs ``logits_all=True``."""
        with self._lock:
            if not self.llm._logits_all:
                raise BackendError("logits() needs the backend created with logits_all=True")
            self.llm.reset()
            self.llm.eval(list(tokens))
            return np.array(self.llm.scores[: len(tokens)], dtype=np.float32)

    def logits_with_soft(self, tokens: Sequence[int], prefix_embeds, slot: int) -> np.ndarray:
        """Teacher-forced logits ((len(tokens) + n) x vocab) of ``tokens`` with the soft prompt
        ``prefix_embeds`` (n x hidden) inserted before ``tokens[slot]``; needs ``logits_all=True``."""
        with self._lock:
            if not self.llm._logits_all:
                raise BackendError("logits_with_soft() needs the backend created with logits_all=True")
            soft = self._soft(prefix_embeds)
            tokens = list(tokens)
            deadline = Deadline(float("inf"))
            self.llm.reset()
            self._eval(tokens[:slot], deadline)
            rows = self._eval_embeds(soft, deadline, all_logits=True)
            self.llm.scores[slot:slot + len(soft)] = rows
            self._eval(tokens[slot:], deadline)
            return np.array(self.llm.scores[: len(tokens) + len(soft)], dtype=np.float32)

    def close(self) -> None:
        with self._lock:
            if getattr(self, "llm", None) is not None:
                self.llm.close()
                self.llm = None
            self._prefix_state = None
            self._slot_states.clear()


class _LlamaContext:
    """The llama.cpp context as the template decoder sees it (``structured.Context``)."""

    def __init__(self, backend: LlamaCppBackend, prompt_text: str, deadline: Deadline,
                 soft: tuple[int, int] | None = None) -> None:
        """``soft``: (slot, n) when the context holds n virtual tokens before prompt token ``slot``."""
        self.backend, self.prompt_text, self.deadline = backend, prompt_text, deadline
        self.llm = backend.llm
        self.soft = soft

    def tokens(self) -> list[int]:
        return self.llm.input_ids[: self.llm.n_tokens].tolist()

    def truncate(self, n: int) -> None:
        self.llm.n_tokens = n  # Llama.eval drops the KV cells past n_tokens before evaluating

    def extend(self, tokens) -> np.ndarray:
        tokens = list(tokens)
        if SOFT_TOKEN in tokens:  # the decoder only rolls back within the answer, never into the prompt
            raise BackendError("the soft prompt cannot be re-evaluated from token ids")
        self.backend._eval(tokens, self.deadline)
        return self.backend._last_logits().copy()

    def tokenize(self, text: str) -> list[int]:
        tokens = self.backend._tokenize_prompt(self.prompt_text + text)
        if self.soft is None:
            return tokens
        slot, n = self.soft
        return [*tokens[:slot], *([SOFT_TOKEN] * n), *tokens[slot:]]


def timed_plain_completion(backend: LlamaCppBackend, prompt_tokens: Sequence[int],
                           max_new_tokens: int) -> tuple[float, float, int]:
    """Reference timing through llama-cpp-python's own ``generate`` loop (no grammar, no logprobs):
    (ttft_s, total_s, generated tokens). Used by the benchmark as the plain llama.cpp baseline."""
    llm = backend.llm
    start = time.perf_counter()
    ttft, count = 0.0, 0
    for token in llm.generate(list(prompt_tokens), temp=0.0, top_k=1, reset=True):
        if count == 0:
            ttft = time.perf_counter() - start
        if llm.token_eos() == token or count >= max_new_tokens:
            break
        count += 1
    return ttft, time.perf_counter() - start, count
