"""onnxruntime backend (CPU): an ONNX folder written by ``fatigue-llm export RUN --onnx DIR``.

- the folder holds ``model.onnx`` (+ ``model.onnx.data``): one decoding step with an explicit KV cache (inputs
  ``input_ids``, ``attention_mask``, ``position_ids``, ``past_key_values.{i}.key/value``; outputs ``logits``,
  ``present.{i}.key/value``), the tokenizer files with the chat template, and ``onnx_manifest.json``;
- the KV cache lives here as numpy arrays between steps: a request reuses the cached fixed prompt prefix
  (``cache_prefix``, the system prompt) and evaluates only the rest; rolling back is slicing the arrays;
- answers to flat JSON schemas (string enums and strings) by template decoding (``structured.py``, the same
  decoder as the llama.cpp backend), any other schema token by token with a regex (``schema_regex``) mask;
- the model's log-probability of every chosen token from the raw logits (the engine's confidence);
- ``n_threads`` is onnxruntime's intra-op thread count; no soft prompt.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
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
    fixed_prefix_tokens,
    log_softmax_at,
    schema_regex,
)
from fatigue_llm.intervention.backends.structured import (
    StructuredDecoder,
    allowed_tokens,
    decode_within,
    greedy_picker,
    sampling_picker,
    template_fields,
)
from fatigue_llm.intervention.models import ModelError

MODEL_FILE = "model.onnx"
MANIFEST = "onnx_manifest.json"
REPORT = "verify.json"  # written by fatigue-llm export --onnx
EVAL_CHUNK = 64  # prompt tokens evaluated per forward pass (between deadline checks)
EXPORT_HINT = "write one with `fatigue-llm export RUN --onnx DIR`"


def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte-to-unicode map (byte-level BPE token strings -> bytes)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes, strict=True)}


def read_manifest(folder: Path) -> dict:
    """The export manifest of an ONNX folder. Raises ModelError naming the file when it is missing or wrong."""
    model = folder / MODEL_FILE
    if not folder.is_dir():
        raise ModelError(f"ONNX model folder {folder} does not exist ({EXPORT_HINT})")
    if not model.is_file():
        raise ModelError(f"ONNX model folder {folder} has no {MODEL_FILE} ({EXPORT_HINT})")
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        for key in ("layers", "kv_heads", "head_dim", "vocab_size"):
            int(manifest[key])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelError(f"{path}: missing or unreadable export manifest ({error}); {EXPORT_HINT}") from None
    return manifest


def _refuse_failed_report(folder: Path) -> None:
    path = folder / REPORT
    if not path.is_file():
        return
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: unreadable export report ({error})") from None
    if report.get("passed") is False:
        raise ModelError(f"{path}: the last export into this folder failed verification (greedy agreement / "
                         f"logit difference in the report); export again")


class OnnxRuntimeBackend(Backend):
    """A causal LM exported to ONNX with a KV cache, run with onnxruntime on the CPU."""

    name = "onnxruntime"
    supports_soft_prompt = False

    def __init__(self, folder: str | Path, n_threads: int = 2, n_ctx: int = 1024, temperature: float = 0.0,
                 seed: int = 0, template_decoding: bool = True, check_report: bool = True) -> None:
        """Load ``folder`` (model.onnx, tokenizer, manifest). Raises ModelError when it cannot be loaded, or (with
        ``check_report``) when its ``verify.json`` says the export failed verification."""
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.folder = Path(folder).expanduser()
        self.manifest = read_manifest(self.folder)
        if check_report:
            _refuse_failed_report(self.folder)
        self.n_layers = int(self.manifest["layers"])
        self.kv_shape = (1, int(self.manifest["kv_heads"]), 0, int(self.manifest["head_dim"]))
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, n_threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.folder / MODEL_FILE), options,
                                                providers=["CPUExecutionProvider"])
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelError(f"onnxruntime could not load {self.folder}: {error}") from None
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(f"{self.folder}: the tokenizer has no chat template (chat_template.jinja or "
                             f"tokenizer_config.json)")
        expected = ["input_ids", "attention_mask", "position_ids"]
        names = [i.name for i in self.session.get_inputs()]
        if names[:3] != expected or len(names) != 3 + 2 * self.n_layers:
            raise ModelError(f"{self.folder / MODEL_FILE}: inputs {names[:4]}... are not a KV-cache step graph of "
                             f"{self.n_layers} layers ({EXPORT_HINT})")
        self.n_ctx = n_ctx
        self.temperature = temperature
        self.seed = seed
        self.template_decoding = template_decoding
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._past_names = names[3:]
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._tokens: list[int] = []  # what the KV state below holds
        self._past: list[np.ndarray] = self._empty_past()
        self._prefix_tokens: list[int] = []
        self._prefix_past: list[np.ndarray] | None = None
        self._eos = self._eos_ids()
        self._special = set(self.tokenizer.all_special_ids) | set(self.tokenizer.added_tokens_decoder)
        self._pieces: list[bytes] | None = None
        self._decoder: StructuredDecoder | None = None
        self._patterns: dict[str, object] = {}
        self.forward_passes = 0

    @property
    def hidden_size(self) -> int:
        return int(self.manifest.get("hidden_size", 0))

    @property
    def label(self) -> str:
        return f"{self.folder.name} (onnxruntime)"

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        path = self.folder / "generation_config.json"
        if path.is_file():
            try:
                configured = json.loads(path.read_text()).get("eos_token_id")
            except ValueError:
                configured = None
            ids.update(configured if isinstance(configured, list) else [configured])
        return {int(i) for i in ids if i is not None}

    def _empty_past(self) -> list[np.ndarray]:
        return [np.zeros(self.kv_shape, dtype=np.float32) for _ in range(2 * self.n_layers)]

    # --- prompt ------------------------------------------------------------------------------------
    def render_text(self, messages: Sequence[Message]) -> str:
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def render_tokens(self, messages: Sequence[Message]) -> list[int]:
        """Prompt tokens of ``messages`` with the tokenizer's chat template and generation prompt."""
        return self._tokenize(self.render_text(messages))

    def _tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenize(text))

    def pieces(self) -> list[bytes]:
        """The byte text of every token id (byte-level BPE or sentencepiece vocabularies; b"" for special tokens)."""
        if self._pieces is None:
            vocab = int(self.manifest["vocab_size"])
            strings = self.tokenizer.convert_ids_to_tokens(list(range(min(vocab, len(self.tokenizer)))))
            byte_level = self._byte_level()
            table = _byte_decoder()
            pieces = []
            for token, text in enumerate(strings):
                if text is None or token in self._special:  # control tokens: no text (as llama.cpp gives them)
                    pieces.append(b"")
                elif byte_level and all(ch in table for ch in text):
                    pieces.append(bytes(table[ch] for ch in text))
                elif len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
                    pieces.append(bytes([int(text[3:5], 16)]))
                else:
                    pieces.append(text.replace("\u2581", " ").encode("utf-8"))
            pieces += [b""] * (vocab - len(pieces))
            self._pieces = pieces
        return self._pieces

    def _byte_level(self) -> bool:
        try:
            decoder = json.loads((self.folder / "tokenizer.json").read_text()).get("decoder") or {}
        except (OSError, ValueError):
            return False
        kinds = [decoder.get("type")] + [d.get("type") for d in decoder.get("decoders", []) or []]
        return "ByteLevel" in kinds

    def _piece_text(self, token: int) -> str:
        return self.pieces()[token].decode("utf-8", errors="replace")

    # --- the KV state ------------------------------------------------------------------------------
    def _run(self, tokens: Sequence[int]) -> np.ndarray:
        """Evaluate ``tokens`` after the held state in one pass; the logits of every new position."""
        n, k = len(self._tokens), len(tokens)
        feed = {"input_ids": np.asarray([list(tokens)], dtype=np.int64),
                "attention_mask": np.ones((1, n + k), dtype=np.int64),
                "position_ids": np.arange(n, n + k, dtype=np.int64)[None]}
        feed.update(zip(self._past_names, self._past, strict=True))
        try:
            outputs = self.session.run(self._output_names, feed)
        except Exception as error:  # noqa: BLE001 - onnxruntime's exception types are not exported
            raise BackendError(f"onnxruntime failed on {k} tokens after {n}: {error}") from None
        self._past = outputs[1:]
        self._tokens = [*self._tokens, *tokens]
        self.forward_passes += 1
        return outputs[0][0]

    def _truncate(self, n: int) -> None:
        if n < len(self._tokens):
            self._past = [np.ascontiguousarray(kv[:, :, :n]) for kv in self._past]
            self._tokens = self._tokens[:n]

    def _extend(self, tokens: Sequence[int], deadline: Deadline) -> np.ndarray:
        """Evaluate ``tokens`` in chunks, checking the deadline between them; the logits after the last."""
        logits = None
        for start in range(0, len(tokens), EVAL_CHUNK):
            if deadline.expired():
                raise GenerationTimeout(f"prompt evaluation passed the {deadline.budget_s:.1f} s deadline")
            logits = self._run(tokens[start:start + EVAL_CHUNK])[-1]
        if logits is None:
            raise BackendError("nothing to evaluate")
        return logits

    def _reuse(self, tokens: list[int]) -> int:
        """Set the state to the longest cached prefix of ``tokens`` (held tokens or the fixed prefix) and
        return its length; at least one token is left to evaluate."""
        held = 0
        for a, b in zip(self._tokens, tokens, strict=False):
            if a != b:
                break
            held += 1
        prefix = self._prefix_tokens
        if self._prefix_past is not None and held < len(prefix) and tokens[: len(prefix)] == prefix:
            self._tokens, self._past, held = list(prefix), list(self._prefix_past), len(prefix)
        held = min(held, len(tokens) - 1)
        self._truncate(held)
        if held == 0:
            self._tokens, self._past = [], self._empty_past()
        return held

    # --- prefix cache ------------------------------------------------------------------------------
    def cache_prefix(self, messages: Sequence[Message]) -> int:
        with self._lock:
            tokens = fixed_prefix_tokens(self.render_tokens, messages)
            self._tokens, self._past = [], self._empty_past()
            self._extend(tokens, Deadline(float("inf")))
            self._prefix_tokens, self._prefix_past = list(tokens), list(self._past)
            if self.template_decoding:
                self._structured_decoder()  # at load time rather than on the first request
            return len(tokens)

    # --- generation --------------------------------------------------------------------------------
    def _structured_decoder(self) -> StructuredDecoder:
        if self._decoder is None:
            self._decoder = StructuredDecoder(self.pieces(), lambda token: token in self._eos)
        return self._decoder

    def _pattern(self, json_schema: dict):
        import regex

        key = json.dumps(json_schema, sort_keys=True)
        if key not in self._patterns:
            self._patterns[key] = regex.compile(schema_regex(json_schema))
        return self._patterns[key]

    def _choose(self, logits: np.ndarray, text: str, pattern) -> int:
        """Next token: greedy (or sampled at temperature > 0) among the tokens the pattern allows."""
        order = np.argsort(-logits)
        try:
            allowed = allowed_tokens(order, text, pattern, self._piece_text, self._eos, self._special,
                                     first_only=self.temperature <= 0)
        except ValueError as error:
            raise BackendError(str(error)) from None
        if self.temperature <= 0:
            return allowed[0]
        values = logits[allowed].astype(np.float64) / self.temperature
        probs = np.exp(values - values.max())
        return allowed[int(self._rng.choice(len(allowed), p=probs / probs.sum()))]

    def generate(self, messages: Sequence[Message], max_new_tokens: int, deadline_s: float,
                 json_schema: dict | None = None, prefix_embeds: object | None = None,
                 on_text=None) -> Generation:
        """See Backend.generate. Raises BackendError for a soft prompt (not supported) or a prompt that does not
        fit ``n_ctx``, GenerationTimeout past the deadline."""
        if prefix_embeds is not None:
            raise BackendError("the onnxruntime backend does not take a soft prompt")
        with self._lock:
            deadline = Deadline(deadline_s)
            prompt_text = self.render_text(messages)
            tokens = self._tokenize(prompt_text)
            if len(tokens) + max_new_tokens > self.n_ctx:
                raise BackendError(f"prompt of {len(tokens)} tokens + {max_new_tokens} new does not fit "
                                   f"n_ctx={self.n_ctx}")
            branches = template_fields(json_schema) if self.template_decoding else None
            cached = self._reuse(tokens)
            if branches is not None:
                return self._generate_template(prompt_text, tokens, cached, branches, max_new_tokens, deadline,
                                               on_text)
            pattern = self._pattern(json_schema) if json_schema is not None else None
            logits = self._extend(tokens[cached:], deadline)
            out: list[int] = []
            logprobs: list[float] = []
            text, ttft, finish = "", 0.0, "length"
            for _ in range(max_new_tokens):
                token = self._choose(logits, text, pattern)
                if not out:
                    ttft = deadline.elapsed()
                if token in self._eos:
                    finish = "stop"
                    break
                out.append(token)
                logprobs.append(log_softmax_at(logits, token))
                text = self._decode(out)
                if on_text is not None:
                    on_text(text)
                if pattern is not None and pattern.fullmatch(text):
                    finish = "stop"
                    break
                if deadline.expired():
                    partial = self._generation(out, logprobs, ttft, deadline, tokens, cached, "timeout")
                    raise GenerationTimeout(
                        f"generation passed the {deadline_s:.1f} s deadline after {len(out)} tokens", partial)
                logits = self._run([token])[-1]
            return self._generation(out, logprobs, ttft, deadline, tokens, cached, finish)

    def _decode(self, tokens: Sequence[int]) -> str:
        return b"".join(self.pieces()[t] for t in tokens).decode("utf-8", errors="replace")

    def _generate_template(self, prompt_text: str, tokens: list[int], cached: int, branches, max_new_tokens: int,
                           deadline: Deadline, on_text=None) -> Generation:
        context = _OrtContext(self, prompt_text, deadline)
        pick = greedy_picker if self.temperature <= 0 else sampling_picker(self.temperature, self.seed)
        return decode_within(self._structured_decoder(), context, branches, len(tokens), max_new_tokens, pick,
                             deadline, on_text,
                             lambda result, finish: self._template_generation(result, deadline, tokens, cached, finish))

    def _template_generation(self, result, deadline: Deadline, prompt, cached, finish) -> Generation:
        ttft = result.first_pick_s - deadline.start if result.tokens else 0.0
        generation = self._generation(result.tokens, result.logprobs, ttft, deadline, prompt, cached, finish)
        return dataclasses.replace(generation, text=result.text, choice_logprobs=tuple(result.choice_logprobs),
                                   answer_tokens=result.answer_tokens, forward_passes=result.steps,
                                   text_passes=result.string_passes, text_s=result.string_s)

    def _generation(self, out, logprobs, ttft, deadline, prompt, cached, finish) -> Generation:
        return Generation(text=self._decode(out), tokens=tuple(out), token_logprobs=tuple(logprobs), ttft_s=ttft,
                          total_s=deadline.elapsed(), token_pieces=tuple(self._piece_text(t) for t in out),
                          prompt_tokens=len(prompt), cached_tokens=cached, finish_reason=finish)

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Teacher-forced logits (len x vocab, float32) for ``token_ids``, from an empty cache."""
        with self._lock:
            self._tokens, self._past = [], self._empty_past()
            rows = [self._run(list(token_ids)[start:start + EVAL_CHUNK])
                    for start in range(0, len(token_ids), EVAL_CHUNK)]
            return np.concatenate(rows, axis=0).astype(np.float32)

    def greedy(self, token_ids: Sequence[int], new_tokens: int) -> tuple[list[int], list[np.ndarray], float]:
        """(greedy tokens, logits before each, seconds of the cached single-token steps): one prefill of
        ``token_ids`` from an empty cache, then ``new_tokens - 1`` steps of one token (no end-of-turn stop)."""
        import time

        with self._lock:
            self._tokens, self._past = [], self._empty_past()
            logits = self._extend(list(token_ids), Deadline(float("inf")))
            tokens, steps, started = [], [], time.perf_counter()
            for step in range(new_tokens):
                tokens.append(int(np.argmax(logits)))
                steps.append(logits)
                if step == 0:
                    started = time.perf_counter()
                if step < new_tokens - 1:
                    logits = self._run([tokens[-1]])[-1]
            return tokens, steps, time.perf_counter() - started

    def close(self) -> None:
        with self._lock:
            self.session = None
            self._past, self._prefix_past = [], None


class _OrtContext:
    """The onnxruntime KV state as the template decoder sees it (``structured.Context``)."""

    def __init__(self, backend: OnnxRuntimeBackend, prompt_text: str, deadline: Deadline) -> None:
        self.backend, self.prompt_text, self.deadline = backend, prompt_text, deadline

    def tokens(self) -> list[int]:
        return list(self.backend._tokens)

    def truncate(self, n: int) -> None:
        self.backend._truncate(n)

    def extend(self, tokens) -> np.ndarray:
        return self.backend._extend(list(tokens), self.deadline).copy()

    def tokenize(self, text: str) -> list[int]:
        return self.backend._tokenize(self.prompt_text + text)
