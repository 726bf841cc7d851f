"""Template decoding of a flat JSON answer: the model only decodes what it actually decides.

A grammar-constrained sampler spends one full decode step on every token of the answer, including
the ones the grammar forces (``{"level": "``, ``", "action": "``, the rest of ``WARNING`` once
``WAR`` is chosen). On a 2-core CPU a decode step of TinyLlama Q4_0 costs ~45 ms, while a batch of
8 forced tokens costs ~110 ms in one forward pass. So this decoder

- evaluates the fixed JSON text between values in one batch with the next pending tokens;
- chooses an enum value by greedy (or sampled) choice among the allowed next tokens of the
  candidates' tokenizations, one step per token where the candidates still differ, and evaluates
  the rest of the chosen value as forced tokens in the next batch;
- decodes a free string token by token with a vocabulary mask (no control characters, no
  backslash); a token holding ``"`` ends the string there, and so does a phrase the model starts
  to repeat (greedy decoding of a small model can loop).

The context is kept equal to the *canonical* tokenization of prompt + answer so far: before every
step the text is re-tokenized and the context rolled back to the first differing token (a merge
at a value boundary, e.g. ``"`` + ``,``), so the model always sees text tokenized as in training.

Supported schemas: an object whose properties are string enums or strings (``maxLength``), or
``anyOf`` of such objects; ``template_fields`` returns None for anything else and the caller uses
its grammar path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fatigue_llm.intervention.backends.base import Deadline, GenerationTimeout, log_softmax_at

QUOTE = ord('"')
REPEAT_NGRAM = 4  # a free string ends when its last 4 tokens repeat an earlier 4-token run
BACKSLASH = ord("\\")


@dataclass(frozen=True)
class TemplateField:
    """One answer property: ``choices`` for an enum, else a free string of at most ``max_chars``."""

    name: str
    choices: tuple[str, ...] = ()
    max_chars: int = 1000


Branch = list[TemplateField]


def template_fields(schema: dict | None) -> list[Branch] | None:
    """The branches of a schema that template decoding supports: a flat object of string enums and
    strings, or ``anyOf`` of such objects with the same properties in the same order (a choice in
    one field then narrows the choices of the next: the actions allowed at the chosen level).
    None for anything else (numbers, nesting, non-string enums)."""
    if not schema:
        return None
    branches = [_flat_fields(branch) for branch in schema.get("anyOf", [schema])]
    if not branches or any(branch is None for branch in branches):
        return None
    names = [spec.name for spec in branches[0]]
    if any([spec.name for spec in branch] != names for branch in branches):
        return None
    kinds = [bool(spec.choices) for spec in branches[0]]
    if any([bool(spec.choices) for spec in branch] != kinds for branch in branches):
        return None
    return branches


def _flat_fields(schema: dict) -> Branch | None:
    if schema.get("type") != "object" or not schema.get("properties"):
        return None
    fields = []
    for name, spec in schema["properties"].items():
        if "enum" in spec:
            values = spec["enum"]
            if not values or not all(isinstance(v, str) and '"' not in v and "\\" not in v for v in values):
                return None
            fields.append(TemplateField(name, tuple(values)))
        elif spec.get("type") == "string" and spec.get("minLength", 1) <= 1:
            fields.append(TemplateField(name, max_chars=int(spec.get("maxLength", 1000))))
        else:
            return None
    return fields


class Context(Protocol):
    """The model context the decoder drives (implemented by the llama.cpp backend)."""

    def tokens(self) -> list[int]:
        """Tokens currently in the context (prompt + answer so far)."""

    def truncate(self, n: int) -> None:
        """Drop every token after the first ``n``."""

    def extend(self, tokens: Sequence[int]) -> np.ndarray:
        """Evaluate ``tokens`` after the context in one batch; the logits after the last one."""

    def tokenize(self, text: str) -> list[int]:
        """Tokens of prompt text + ``text`` (the whole context text)."""


class Picker(Protocol):
    def __call__(self, logits: np.ndarray, allowed: np.ndarray) -> int:
        """One token id out of ``allowed`` (ids) given the raw ``logits``."""


def greedy_picker(logits: np.ndarray, allowed: np.ndarray) -> int:
    return int(allowed[int(np.argmax(logits[allowed]))])


def sampling_picker(temperature: float, seed: int, top_k: int = 40, top_p: float = 0.95) -> Picker:
    """Temperature sampling with top-k and nucleus (top-p) cut-offs over the allowed tokens."""
    rng = np.random.default_rng(seed)

    def pick(logits: np.ndarray, allowed: np.ndarray) -> int:
        values = logits[allowed].astype(np.float64) / max(temperature, 1e-6)
        order = np.argsort(values)[::-1][:top_k]
        probs = np.exp(values[order] - values[order[0]])
        probs /= probs.sum()
        keep = int(np.searchsorted(np.cumsum(probs), top_p)) + 1
        probs = probs[:keep] / probs[:keep].sum()
        return int(allowed[order[rng.choice(keep, p=probs)]])

    return pick


@dataclass
class DecodeResult:
    """The answer text and the tokens the model chose (forced tokens are not listed).

    ``logprobs`` are full-vocabulary log-probabilities of the chosen tokens; ``choice_logprobs`` the
    log-probability of each enum choice among the values still allowed at that token (empty when
    the schema left no choice)."""

    text: str
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    pieces: list[bytes] = field(default_factory=list)
    choice_logprobs: list[float] = field(default_factory=list)
    answer_tokens: int = 0          # tokens of the answer in the context, forced ones included
    steps: int = 0                  # forward passes (batches) run
    first_pick_s: float = 0.0       # perf_counter() when the model made its first choice
    string_s: float = 0.0           # seconds spent decoding free strings, one pass per token
    string_passes: int = 0
    finish_reason: str = "stop"     # stop | length | repeat (ended before a repeated phrase)


class StructuredDecoder:
    """Decodes answers of one vocabulary. ``pieces[i]`` is the byte text of token i; ``is_end(i)``
    says whether token i ends generation (end of turn)."""

    def __init__(self, pieces: Sequence[bytes], is_end: Callable[[int], bool]) -> None:
        self.pieces = list(pieces)
        self.is_end = is_end
        vocab = len(self.pieces)
        ends = np.array([is_end(i) for i in range(vocab)], dtype=bool)
        clean = np.array([bool(p) and not any(b < 0x20 or b in (0x7F, BACKSLASH) for b in p)
                          for p in self.pieces], dtype=bool)
        starts_quote = np.array([p[:1] == b'"' for p in self.pieces], dtype=bool)
        # a string's first token must start its text; later ones may also end it (quote, end of turn)
        self.first_string_ids = np.flatnonzero(clean & ~starts_quote)
        self.string_ids = np.flatnonzero(clean | ends)

    def decode(self, context: Context, branches: Sequence[Branch], prompt_len: int, max_tokens: int,
               pick: Picker = greedy_picker, expired: Callable[[], bool] = lambda: False,
               on_text: Callable[[str], None] | None = None) -> DecodeResult:
        """Decode one answer after the ``prompt_len`` prompt tokens of ``context.tokenize("")`` (the
        context may hold fewer of them yet: they are evaluated with the first batch).

        Raises TimeoutError (with the partial result as ``args[1]``) once ``expired()`` is true.
        ``on_text`` receives the answer text so far whenever a free string grows by a token.
        """
        run = _Run(self, context, pick, expired, prompt_len, max_tokens)
        run.on_text = on_text
        alive = list(branches)
        for index, spec in enumerate(alive[0]):
            opening = ("{" if index == 0 else ", ") + json.dumps(spec.name) + ': "'
            if spec.choices:
                choices = list(dict.fromkeys(value for branch in alive for value in branch[index].choices))
                value = run.choose(opening, choices)
                alive = [branch for branch in alive if value in branch[index].choices]
            elif not run.free_string(opening, max(branch[index].max_chars for branch in alive)):
                break
        run.result.text = run.answer + "}"
        return run.result


class _Run:
    """The state of one decode: answer text so far, the prompt length, the pending logits."""

    def __init__(self, decoder: StructuredDecoder, context: Context, pick: Picker,
                 expired: Callable[[], bool], prompt_len: int, max_tokens: int) -> None:
        self.decoder, self.context, self.pick, self.expired = decoder, context, pick, expired
        self.prompt_len = prompt_len
        self.max_tokens = max_tokens
        self.answer = ""
        self.logits: np.ndarray | None = None  # logits after the context's last token, when fresh
        self.result = DecodeResult(text="")
        self.on_text: Callable[[str], None] | None = None

    def _check_time(self) -> None:
        if self.expired():
            self.result.text = self.answer
            raise TimeoutError("structured decoding passed its deadline", self.result)

    def sync(self, target: Sequence[int]) -> np.ndarray:
        """Make the context hold exactly ``target`` and return the logits after it."""
        held = self.context.tokens()
        same = 0
        for a, b in zip(held, target, strict=False):
            if a != b:
                break
            same += 1
        if same == len(target) == len(held) and self.logits is not None:
            return self.logits
        keep = max(min(same, len(target) - 1), 0)
        self._check_time()
        self.context.truncate(keep)
        self.logits = self.context.extend(target[keep:])
        self.result.steps += 1
        self.result.answer_tokens = len(target) - self.prompt_len
        return self.logits

    def choose(self, opening: str, choices: Sequence[str]) -> str:
        """Append ``opening`` + the model's choice among ``choices`` + the closing quote."""
        candidates = {value: self.context.tokenize(self.answer + opening + value + '"') for value in choices}
        alive = list(choices)
        position = _shared_prefix(list(candidates.values()))
        while len(alive) > 1:
            logits = self.sync(candidates[alive[0]][:position])
            options = np.array(sorted({candidates[v][position] for v in alive if len(candidates[v]) > position}))
            token = self.pick(logits, options)
            # the decision's confidence: the choice among the allowed values only (the model may put
            # probability on other spellings or formats, which says nothing about the decision)
            among = int(np.flatnonzero(options == token)[0])
            self.result.choice_logprobs.append(log_softmax_at(logits[options], among))
            self._record(token, log_softmax_at(logits, token))
            alive = [v for v in alive if len(candidates[v]) > position and candidates[v][position] == token]
            position += 1
        self.answer += opening + alive[0] + '"'
        self.logits = None  # the chosen value's remaining tokens are evaluated with the next batch
        return alive[0]

    def free_string(self, opening: str, max_chars: int) -> bool:
        """Append ``opening`` + a decoded string + the closing quote; False when the token budget ran
        out (the answer is then closed after the string as it stands)."""
        self.answer += opening
        logits = self.sync(self.context.tokenize(self.answer))
        text = b""
        chosen: list[int] = []
        ended = False
        while not ended:
            if self.result.answer_tokens >= self.max_tokens:
                self.result.finish_reason = "length"
                break
            if repeats_itself(chosen):  # a small model looping on a phrase: end before the repeat
                text = b"".join(self.decoder.pieces[t] for t in chosen[:-REPEAT_NGRAM])
                self.result.finish_reason = "repeat"
                break
            allowed = self.decoder.string_ids if text else self.decoder.first_string_ids
            token = self.pick(logits, allowed)
            piece = self.decoder.pieces[token]
            if self.decoder.is_end(token) or QUOTE in piece:
                ended = True
                piece = piece.split(b'"', 1)[0] if QUOTE in piece else b""
                if not piece:
                    break
            self._record(token, log_softmax_at(logits, token))
            chosen.append(token)
            text += piece
            if self.on_text is not None:
                self.on_text(self.answer + text.decode("utf-8", errors="ignore"))
            if len(text.decode("utf-8", errors="replace")) >= max_chars:
                text = text.decode("utf-8", errors="ignore")[:max_chars].encode()
                self.result.finish_reason = "length"
                break
            if not ended:
                self._check_time()
                started = time.perf_counter()
                logits = self.context.extend([token])
                self.result.string_s += time.perf_counter() - started
                self.result.string_passes += 1
                self.result.steps += 1
                self.result.answer_tokens += 1
        self.answer += text.decode("utf-8", errors="replace") + '"'
        self.logits = None
        return self.result.finish_reason != "length"

    def _record(self, token: int, logprob: float) -> None:
        if not self.result.tokens:
            self.result.first_pick_s = time.perf_counter()
        self.result.tokens.append(token)
        self.result.logprobs.append(logprob)
        self.result.pieces.append(self.decoder.pieces[token])


def repeats_itself(tokens: list[int]) -> bool:
    """Whether the last REPEAT_NGRAM tokens already occurred earlier in ``tokens``."""
    n = REPEAT_NGRAM
    if len(tokens) < 2 * n:
        return False
    tail = tokens[-n:]
    return any(tokens[i:i + n] == tail for i in range(len(tokens) - 2 * n + 1))


def _shared_prefix(sequences: list[list[int]]) -> int:
    n = 0
    shortest = min(len(s) for s in sequences)
    while n < shortest and all(s[n] == sequences[0][n] for s in sequences):
        n += 1
    return n


def decode_within(decoder: StructuredDecoder, context: Context, branches: Sequence[Branch], prompt_len: int,
                  max_tokens: int, pick: Picker, deadline: Deadline, on_text, to_generation):
    """``decoder.decode`` under ``deadline``: ``to_generation(result, finish_reason)`` of what it wrote, or
    GenerationTimeout carrying the answer so far when the deadline passes."""
    try:
        result = decoder.decode(context, branches, prompt_len, max_tokens, pick, expired=deadline.expired,
                                on_text=on_text)
    except TimeoutError as error:
        partial = error.args[1] if len(error.args) > 1 else None
        generation = None if partial is None else to_generation(partial, "timeout")
        raise GenerationTimeout(f"generation passed the {deadline.budget_s:.1f} s deadline", generation) from None
    return to_generation(result, result.finish_reason)


CANDIDATES = 64  # most likely tokens checked against the answer pattern before scanning the whole vocabulary


def allowed_tokens(order: Iterable[int], text: str, pattern, piece: Callable[[int], str], eos: Collection[int],
                   special: Collection[int], first_only: bool) -> list[int]:
    """The tokens, most likely first (``order``), that keep ``text`` a prefix of the answer ``pattern`` (a
    ``regex`` pattern matched with ``partial=True``; an end-of-turn token only once the answer is complete):
    the first one when ``first_only`` (greedy), else up to CANDIDATES to sample from. Without a pattern, the
    first CANDIDATES. Raises ValueError when no token continues the answer (the caller's BackendError)."""
    if pattern is None:
        return [int(t) for _, t in zip(range(CANDIDATES), order, strict=False)]
    complete = pattern.fullmatch(text) is not None
    allowed: list[int] = []
    for token in (int(t) for t in order):
        if token in eos:
            ok = complete
        else:
            ok = token not in special and bool(pattern.fullmatch(text + piece(token), partial=True))
        if ok:
            allowed.append(token)
            if first_only or len(allowed) >= CANDIDATES:
                break
    if not allowed:
        raise ValueError(f"no token continues the answer as valid JSON after {text[-40:]!r}")
    return allowed
