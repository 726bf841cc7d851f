"""The small interface every on-device language-model backend implements.

A backend turns chat messages into one generated answer, optionally constrained to a flat JSON
schema, within a time budget, and reports the per-token log-probabilities the engine turns into a
confidence. Backends keep the KV state of a fixed prompt prefix (the system prompt) between
requests, so only the variable part of each prompt is evaluated.
"""

from __future__ import annotations

import abc
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}
TextListener = Callable[[str], None]  # called with the answer text generated so far, as it grows

# Two user turns that differ from their first character: the token prefix shared by their renders
# is the part of a prompt that depends on the system message alone, i.e. what can be cached.
_PLACEHOLDERS = ("A", "Z")


class BackendError(RuntimeError):
    """A backend could not load its model or could not produce an answer."""


class GenerationTimeout(BackendError):
    """Generation ran past its time budget; ``partial`` holds what was generated so far."""

    def __init__(self, message: str, partial: Generation | None = None) -> None:
        super().__init__(message)
        self.partial = partial


@dataclass(frozen=True)
class Generation:
    """One generated answer and how it was produced.

    ``token_logprobs`` are the model's own log-probabilities of the chosen tokens (before any
    grammar constraint), ``token_pieces`` the text of each token; ``cached_tokens`` prompt tokens
    were reused from the KV cache and ``prompt_tokens - cached_tokens`` were evaluated.
    """

    text: str
    tokens: tuple[int, ...]
    token_logprobs: tuple[float, ...]
    ttft_s: float
    total_s: float
    token_pieces: tuple[str, ...] = ()
    prompt_tokens: int = 0
    cached_tokens: int = 0
    finish_reason: str = "stop"  # stop | length | repeat (a looping message was cut) | timeout
    # Template decoding (see structured.py): log-probabilities of the model's choices among the
    # allowed enum values (None: not known, () : the schema left no choice); the answer's tokens in
    # the context, forced ones included; the forward passes run, and the passes and seconds spent
    # on free text (one token per pass). 0 for token-by-token generation.
    choice_logprobs: tuple[float, ...] | None = None
    answer_tokens: int = 0
    forward_passes: int = 0
    text_passes: int = 0
    text_s: float = 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Generated tokens per second after the first token (0 when fewer than two tokens)."""
        decode_s = self.total_s - self.ttft_s
        return (len(self.tokens) - 1) / decode_s if len(self.tokens) > 1 and decode_s > 0 else 0.0


class Backend(abc.ABC):
    """A loaded language model. Instances are not shared between threads without the caller's lock."""

    name: str = "backend"
    supports_soft_prompt: bool = False

    @property
    def label(self) -> str:
        """What answers: the model file and adapter, for explanations and logs."""
        return self.name

    @abc.abstractmethod
    def generate(
        self,
        messages: Sequence[Message],
        max_new_tokens: int,
        deadline_s: float,
        json_schema: dict | None = None,
        prefix_embeds: object | None = None,
        on_text: TextListener | None = None,
    ) -> Generation:
        """Generate the assistant's answer to ``messages`` with the model's own chat template.

        ``deadline_s`` is the time budget in seconds from the call; ``json_schema`` (a flat object
        schema, see ``schema_regex``) constrains the output; ``prefix_embeds`` is a soft prompt
        (n_virtual_tokens x hidden) for backends with ``supports_soft_prompt``; ``on_text`` receives
        the answer text so far after each generated token (streaming to an HMI).
        Raises GenerationTimeout past the deadline and BackendError when generation fails.
        """

    def cache_prefix(self, messages: Sequence[Message]) -> int:
        """Evaluate the fixed leading ``messages`` (the system prompt) once and keep their KV state.

        Returns the number of prompt tokens that later requests starting with these messages reuse.
        """
        return 0

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` (an estimate of 4 characters per token unless the backend knows)."""
        return max(1, len(text) // 4)

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to free by default
        """Free the model; the backend cannot be used afterwards."""


class Deadline:
    """A time budget started at construction."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def expired(self) -> bool:
        return self.elapsed() > self.budget_s


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def fixed_prefix_tokens(render_tokens, messages: Sequence[Message]) -> list[int]:
    """Tokens of a prompt that depend only on ``messages`` (the fixed part) and not on what follows.

    ``render_tokens(messages)`` renders a conversation with the chat template (generation prompt
    added) and tokenizes it. Two conversations with different user turns after ``messages`` share
    exactly the cacheable prefix.
    """
    renders = [render_tokens([*messages, {"role": "user", "content": p}]) for p in _PLACEHOLDERS]
    return list(renders[0][: common_prefix_len(*renders)])


def soft_prompt_slot(tokens: Sequence[int]) -> int:
    """Where a soft prompt goes in the prompt ``tokens`` of a request: at the very end, after the generation
    prompt, right before the answer. The features are all that changes from one request to the next while a
    rule decision holds, so they come last: everything before them (system turn, rule line, any cases, the
    template's turn marks) repeats, a backend keeps its KV state, and a request evaluates only the virtual
    tokens. Training splices the projector's output in at the same place (``training/softprompt.py``)."""
    return len(tokens)


def log_softmax_at(logits, token: int) -> float:
    """log p(token) under softmax(logits) for a 1-D numpy array of logits."""
    import numpy as np

    top = float(np.max(logits))
    return float(logits[token]) - top - float(np.log(np.sum(np.exp(logits - top))))


# --- JSON schema subset shared by the backends -----------------------------------------------------

def _value_regex(spec: dict, name: str) -> str:
    kind = spec.get("type")
    if "enum" in spec:
        return "(?:" + "|".join(re.escape(json.dumps(v)) for v in spec["enum"]) + ")"
    if kind == "string":
        low, high = spec.get("minLength", 0), spec.get("maxLength", 1000)
        return '"[^"\\\\\\x00-\\x1f]{' + f"{low},{high}" + '}"'
    if kind == "number" and spec.get("minimum") == 0 and spec.get("maximum") == 1:
        return r"(?:0(?:\.[0-9]{1,3})?|1(?:\.0{1,3})?)"
    if kind == "number":
        return r"-?(?:0|[1-9][0-9]{0,8})(?:\.[0-9]{1,6})?"
    if kind == "integer":
        return r"-?(?:0|[1-9][0-9]{0,8})"
    raise ValueError(f"property '{name}': unsupported schema {spec!r}")


def schema_regex(schema: dict) -> str:
    """A regular expression matching the JSON texts of a flat object schema, properties in order.

    Supported: string enums, strings with min/maxLength (no escapes), numbers (``minimum: 0,
    maximum: 1`` gives 0..1 with up to 3 decimals) and integers; ``anyOf`` of such object schemas.
    Raises ValueError otherwise.
    """
    if "anyOf" in schema:
        return "(?:" + "|".join(schema_regex(branch) for branch in schema["anyOf"]) + ")"
    if schema.get("type") != "object":
        raise ValueError("only object schemas are supported")
    ws = r"[ \n]?"
    parts = [
        ws + re.escape(json.dumps(name)) + ws + ":" + ws + _value_regex(spec, name)
        for name, spec in schema["properties"].items()
    ]
    return r"\{" + ("," ).join(parts) + ws + r"\}"
