"""Prompt and answer format of the on-device intervention model.

The prompt is a chat: one fixed system message (instructions, levels, the action catalogue, how to
read the user message and the JSON answer format) that is byte-identical across requests so its KV
state is computed once, then one short user message with the variable part, which is evaluated on
every request and so kept within ``USER_BUDGET_TOKENS``::

    Now: PERCLOS .22, blinks 31/min, microsleeps 2, awake 17h, driving 90min
    Rule: WARNING audio_chime
    Cases:
    PERCLOS .20, blinks 30/min -> WARNING suggest_break, eff .8

The answer is one JSON object, checked by ``parse_answer``::

    {"level": "WARNING", "action": "audio_chime", "message": "..."}

The model states no confidence of its own: the engine derives it from the log-probabilities of the
tokens where the model chose its level and action (see ``triage``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fatigue_llm.features.types import FatigueFeatures
from fatigue_llm.intervention.types import (
    ACTIONS,
    LEVEL_ACTION_CHOICES,
    MAX_MESSAGE_CHARS,
    InterventionDecision,
    Level,
)

# The message comes last: an answer cut by the token budget loses only the end of its message,
# which ``complete_truncated`` closes at a word boundary.
ANSWER_FIELDS = ("level", "action", "message")

ACTION_HINTS: dict[str, str] = {
    "none": "no sign of fatigue, say nothing",
    "dashboard_notice": "a quiet notice on the dashboard",
    "suggest_break": "suggest a break soon",
    "ventilation": "fresh air as a short-term help",
    "audio_chime": "an audible chime and a spoken warning",
    "alert_audio_haptic": "loud alarm and seat vibration, for eyes closed while driving",
    "pull_over": "tell the driver to stop safely now",
}

# (field, label, format, unit) in the order the model reads them; short labels and units because
# the user message is evaluated on every request (its tokens are the latency), counts as integers.
FEATURE_FORMAT: tuple[tuple[str, str, str, str], ...] = (
    ("eye_closure_ratio", "PERCLOS", "{:.2f}", ""),
    ("blink_frequency", "blinks", "{:.0f}", "/min"),
    ("mean_blink_duration", "blink", "{:.2f}", "s"),
    ("longest_eye_closure", "longest closure", "{:.1f}", "s"),
    ("slow_blink_count", "slow blinks", "{:.0f}", ""),
    ("microsleep_count", "microsleeps", "{:.0f}", ""),
    ("yawn_count", "yawns", "{:.0f}", ""),
    ("head_nod", "nods", "{:.1f}", "/min"),
    ("voice_quality", "voice", "{:.2f}", ""),
    ("steering_reversal_rate", "steering reversals", "{:.1f}", "/min"),
    ("sdlp", "lane std", "{:.2f}", "m"),
    ("speed_variance", "speed var", "{:.1f}", "m2/s2"),
    ("yaw_rate", "yaw std", "{:.3f}", "rad/s"),
    ("time_awake", "awake", "{:.0f}", "h"),
    ("time_driving", "driving", "{:.0f}", "min"),
)
_SCALE = {"time_driving": 1 / 60.0}  # shown in minutes
# event counts and durations that are 0 unless something happened: shown only when non-zero
_OMIT_ZERO = {"slow_blink_count", "microsleep_count", "yawn_count", "time_driving"}
# shown only from this value on: a longest eye closure under half a second is an ordinary blink
_MIN_SHOWN = {"longest_eye_closure": 0.5}

USER_BUDGET_TOKENS = 96     # the whole user message, measured with the model's tokenizer: ~1 s to evaluate
DEFAULT_EXAMPLE_FEATURES = 2  # features shown per retrieved case


class AnswerError(ValueError):
    """The model's answer is not a valid intervention; the message says which field is wrong."""


@dataclass(frozen=True)
class ParsedAnswer:
    level: Level
    action: str
    message: str


def system_prompt(max_message_chars: int = MAX_MESSAGE_CHARS) -> str:
    """The fixed system message. Identical for every request of one engine (cacheable)."""
    actions = "\n".join(f'- {name}: {ACTION_HINTS[name]}, e.g. "{ACTIONS[name]}"' for name in ACTIONS)
    fitting = "; ".join(f"{level.name} {' or '.join(names)}" for level, names in LEVEL_ACTION_CHOICES.items())
    return (
        "You are the fatigue assistant of a driver-monitoring system in a car. From the driver's "
        "fatigue measurements choose one intervention and write one short message spoken to the driver.\n"
        "Levels: INFO (no fatigue), ADVISORY (early signs), WARNING (clear fatigue), CRITICAL (eyes "
        "closing or microsleep: immediate danger). Never answer a level below the rule level.\n"
        f"Actions:\n{actions}\n"
        f"Actions per level: {fitting}.\n"
        "The user message gives: 'Now:' the current measurements (only those available; PERCLOS is the "
        "fraction of time the eyes are closed, above 0.15 is fatigue, above 0.30 danger; MICROSLEEP "
        "means the eyes just closed for a second or more); 'Rule:' the level and action of the safety "
        "rules; 'Cases:', when given, similar past cases, most similar first, as "
        "'measurements -> level action, eff E', E being how well it worked (0 to 1).\n"
        "Answer with one JSON object only, the message being one or two calm sentences to the driver, "
        f"at most {max_message_chars} characters:\n"
        '{"level": "<LEVEL>", "action": "<action>", "message": "<text>"}'
    )


def _format_value(name: str, value: float, fmt: str, unit: str) -> str:
    """``fmt`` applied to the (scaled) value, without the leading zero of a fraction (".21":
    the tokenizer spends a token per digit and one on the space before "0")."""
    text = fmt.format(value * _SCALE.get(name, 1.0))
    if text.startswith(("0.", "-0.")):
        text = text.replace("0.", ".", 1)
    return text + unit


def render_features(values: FatigueFeatures | dict, limit: int | None = None) -> str:
    """Present features as ``label valueunit`` on one line; missing (NaN) ones and zero event counts
    are left out (the system prompt says only available measurements are listed).

    With ``limit``, only the first ``limit`` present features are shown (for case examples).
    """
    data = values.to_dict() if isinstance(values, FatigueFeatures) else dict(values)
    present = []
    for name, label, fmt, unit in FEATURE_FORMAT:
        value = data.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if (name in _OMIT_ZERO and value == 0) or value < _MIN_SHOWN.get(name, -math.inf):
            continue
        present.append(f"{label} {_format_value(name, float(value), fmt, unit)}")
    if limit is not None:
        return ", ".join(present[:limit])
    if data.get("microsleep"):
        present.insert(0, "MICROSLEEP")
    return ", ".join(present) or "none available"


def render_case(retrieved: object, n_features: int = DEFAULT_EXAMPLE_FEATURES) -> str:
    """One retrieved case (anything with ``.case``) as a one-line example:
    ``PERCLOS .21, blinks 31/min -> WARNING audio_chime, eff .8``."""
    case = retrieved.case
    effect = "?" if case.effectiveness is None or math.isnan(case.effectiveness) else (
        _format_value("", case.effectiveness, "{:.1f}", ""))
    return f"{render_features(case.features, n_features)} -> {Level(case.level).name} {case.action}, eff {effect}"


def feature_line(features: FatigueFeatures | dict) -> str:
    """The user message's measurements line ("Now: PERCLOS .28, ..."), the text a soft prompt replaces."""
    return f"Now: {render_features(features)}"


def user_prompt(features: FatigueFeatures, rule: InterventionDecision, examples: Sequence[str],
                soft_prompt: bool = False) -> str:
    """The variable user message: measurements, the rule's level and action, examples.

    The rule's reasons are not repeated: they restate measurements of the "Now" line against the
    thresholds the system prompt gives. With ``soft_prompt`` the "Now" line is left out: the
    feature projector's virtual tokens carry the measurements instead (see ``build_messages``).
    """
    lines = [] if soft_prompt else [feature_line(features)]
    lines.append(f"Rule: {rule.level.name} {rule.action}")
    if examples:
        lines.append("Cases:")
        lines.extend(examples)
    return "\n".join(lines)


def build_messages(
    features: FatigueFeatures,
    rule: InterventionDecision,
    retrieved: Sequence[object] = (),
    *,
    system: str | None = None,
    count_tokens: Callable[[str], int] | None = None,
    budget_tokens: int = USER_BUDGET_TOKENS,
    soft_prompt: bool = False,
) -> list[dict[str, str]]:
    """Chat messages for one request, the user part within ``budget_tokens``.

    Examples are dropped from the least similar first until the user message fits; the
    measurements and the rule line themselves are never cut.

    ``soft_prompt``: the feature text is left out of the user message; the backend puts the
    projector's virtual tokens at the *soft-prompt slot*, the end of the prompt, right before the
    answer (``soft_prompt_slot``). All text before them repeats while the rule decision holds, so its
    KV state is reused and a request evaluates only the virtual tokens. Training renders its examples
    the same way.
    """
    count = count_tokens or (lambda text: max(1, len(text) // 3))
    examples = [render_case(item) for item in retrieved]
    text = user_prompt(features, rule, examples, soft_prompt)
    while examples and count(text) > budget_tokens:
        examples.pop()
        text = user_prompt(features, rule, examples, soft_prompt)
    return [
        {"role": "system", "content": system if system is not None else system_prompt()},
        {"role": "user", "content": text},
    ]


def answer_schema(min_level: Level = Level.INFO, max_message_chars: int = MAX_MESSAGE_CHARS) -> dict:
    """JSON schema of the answer: one flat object schema per level from ``min_level`` (the rule
    level) up, each allowing that level's actions (``LEVEL_ACTION_CHOICES``), combined with anyOf."""
    branches = [
        {
            "type": "object",
            "properties": {
                "level": {"type": "string", "enum": [level.name]},
                "action": {"type": "string", "enum": list(LEVEL_ACTION_CHOICES[level])},
                "message": {"type": "string", "minLength": 1, "maxLength": int(max_message_chars)},
            },
            "required": list(ANSWER_FIELDS),
            "additionalProperties": False,
        }
        for level in Level if level >= min_level
    ]
    return {"anyOf": branches}


def parse_answer(
    text: str, min_level: Level = Level.INFO, max_message_chars: int = MAX_MESSAGE_CHARS
) -> ParsedAnswer:
    """Validate the model's JSON answer. Raises AnswerError naming the problem."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        where = f"{error.msg} at char {error.pos}"
        raise AnswerError(f"answer is not valid JSON ({where}): {text[:80]!r}") from None
    if not isinstance(data, dict):
        raise AnswerError(f"answer must be a JSON object, got {type(data).__name__}")
    missing = [name for name in ANSWER_FIELDS if name not in data]
    unknown = sorted(set(data) - set(ANSWER_FIELDS))
    if missing or unknown:
        raise AnswerError(f"answer fields: missing {missing}, unknown {unknown}")
    level_name, action, message = (data[name] for name in ANSWER_FIELDS)
    if level_name not in Level.__members__:
        raise AnswerError(f"field 'level' must be one of {list(Level.__members__)}, got {level_name!r}")
    level = Level[level_name]
    if level < min_level:
        raise AnswerError(f"field 'level' {level.name} is below the rule level {Level(min_level).name}")
    if action not in LEVEL_ACTION_CHOICES[level]:
        raise AnswerError(f"field 'action' at level {level.name} must be one of "
                          f"{list(LEVEL_ACTION_CHOICES[level])}, got {action!r}")
    if not isinstance(message, str) or not message.strip():
        raise AnswerError("field 'message' must be a non-empty string")
    message = " ".join(message.split())
    if len(message) > max_message_chars:
        raise AnswerError(f"field 'message' is {len(message)} chars, limit {max_message_chars}")
    return ParsedAnswer(level, action, message)


# A driver-facing sentence may name one or two figures ("awake for 17 hours"); a run of them, or the
# prompt's own jargon, is the model copying its input.
MAX_FIGURES = 2
PROMPT_JARGON = ("PERCLOS", "MICROSLEEP", "/min")


def speaks_to_driver(message: str) -> bool:
    """False for a message made of level/action codes or of the measurement line (small models
    sometimes copy the schema or the prompt instead of writing to the driver)."""
    codes = {name.lower() for name in Level.__members__} | set(ACTIONS)
    words = [word.strip(".,:;!").lower() for word in message.split()]
    echoes = any(word in codes and "_" in word for word in words) or all(word in codes for word in words)
    figures = len(re.findall(r"\d+(?:\.\d+)?|\.\d+", message))
    jargon = any(term in message for term in PROMPT_JARGON)
    return len(words) >= 3 and not echoes and figures <= MAX_FIGURES and not jargon


def value_spans(text: str, names: Sequence[str] = ("level", "action")) -> list[tuple[int, int]]:
    """Character spans of the string values of ``names`` in an answer text (for token confidence)."""
    spans = []
    for name in names:
        match = re.search('"' + re.escape(name) + r'"\s*:\s*"([^"]*)"', text)
        if match:
            spans.append(match.span(1))
    return spans


def trim_message(message: str, min_chars: int = 10) -> str:
    """End a message that was cut mid-sentence at its last sentence end, or else its last whole word."""
    message = message.rstrip()
    if message.endswith((".", "!", "?")):
        return message
    sentence_end = max(message.rfind(mark) for mark in (". ", "! ", "? "))
    if sentence_end + 1 >= min_chars:
        return message[: sentence_end + 1]
    space = message.rfind(" ")
    cut = message[:space] if space >= min_chars else message
    return cut.rstrip(" ,;:-") + "."


def complete_truncated(text: str) -> str:
    """Close an answer that the token budget cut inside or right after its message (the last field).

    Returns ``text`` unchanged when it was not cut there; a message cut mid-way is trimmed with
    ``trim_message``.
    """
    closed = re.match(r'(?s)(.*"message"\s*:\s*"[^"\\]*")\s*$', text)
    if closed is not None:
        return closed.group(1) + "}"
    match = re.match(r'(?s)(.*"message"\s*:\s*")([^"\\]*)$', text)
    if match is None or not match.group(2).strip():
        return text
    return match.group(1) + trim_message(match.group(2)) + '"}'


_PARTIAL_MESSAGE = re.compile(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)')


def partial_message(answer_so_far: str) -> str | None:
    """The driver message inside a JSON answer that is still being generated (None before it starts).

    What an HMI or text-to-speech can show early; the final text is the engine's checked message."""
    found = _PARTIAL_MESSAGE.search(answer_so_far)
    if found is None:
        return None
    raw = found.group(1)
    try:
        return json.loads(f'"{raw}"')
    except json.JSONDecodeError:  # cut inside an escape sequence
        return raw.replace('\\"', '"')
