"""Training data: intervention examples from a cases CSV, Alpaca JSON or messages JSON, rendered by the
same prompt code the engine uses, tokenized with the answer (and its end-of-turn token) as the only labels.

- cases CSV: our case format (``fatigue_llm/intervention/data/seed_cases.csv``): the eight features in our
  units (README "Topics and messages"), ``level``, ``action`` and optionally ``message`` (else the
  catalogue text of the action). Each row becomes the engine's own request for those features (system
  prompt, feature rendering, the rule decision) and the answer JSON the engine's decoder writes.
- Alpaca JSON: a list of ``{instruction, input, output}``; ``instruction`` is the system turn, ``input`` the
  user turn, ``output`` the assistant answer.
- messages JSON: a list of ``{"messages": [{"role", "content"}, ...]}`` (ShareGPT's ``conversations`` with
  ``from``/``value`` is read too); the last turn must be the assistant's.

Errors name the file, the row (1-based, header = row 1 in a CSV) and the column or key, and the value.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fatigue_llm.features.types import SEED_FEATURES, FatigueFeatures, renamed_column_hint
from fatigue_llm.intervention.types import ACTIONS, LEVEL_ACTION_CHOICES, Level

Message = dict[str, str]
IGNORE_INDEX = -100  # label of tokens the loss skips (the prompt)


class DataError(ValueError):
    """A training file or row is invalid; the message names the file, row, column and value."""


@dataclass(frozen=True)
class Conversation:
    """One training example: the prompt turns and the assistant's answer."""

    prompt: tuple[Message, ...]
    answer: str
    level: str = ""       # the label, when the example is an intervention case
    action: str = ""
    rule_level: str = ""  # the rule policy's level for its features (the answer may not be below it)
    features: FatigueFeatures | None = None  # the case's features (evaluation runs the engine on them)

    @property
    def answerable(self) -> bool:
        """False when the engine's answer schema cannot produce this label: a level below the rule's, or an
        action that does not fit its level (``LEVEL_ACTION_CHOICES``)."""
        if not self.level:
            return True
        if self.action not in LEVEL_ACTION_CHOICES[Level[self.level]]:
            return False
        return not self.rule_level or Level[self.level] >= Level[self.rule_level]


def answer_text(level: str, action: str, message: str) -> str:
    """The answer JSON exactly as the engine's template decoder writes it (see backends/structured.py)."""
    return "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in
                           (("level", level), ("action", action), ("message", message))) + "}"


def _number(text: str, where: str) -> float:
    if text.strip() == "":
        return math.nan  # an absent feature, as in the message
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{where}: expected a number, got {text!r}") from None


def read_cases_csv(path: Path) -> list[tuple[FatigueFeatures, str, str, str]]:
    """(features, level, action, message) per row. Raises DataError naming file, row, column and value."""
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [c for c in (*SEED_FEATURES, "level", "action") if c not in columns]
            if missing:
                raise DataError(f"{path}: missing column(s) {missing}; found {columns}.{renamed_column_hint(columns)}")
            rows = []
            for number, row in enumerate(reader, start=2):
                where = f"{path}: row {number}"
                values = {name: _number(row[name] or "", f"{where}, column '{name}'") for name in SEED_FEATURES}
                try:
                    features = FatigueFeatures.from_dict({**values, "window_duration": 60.0}, source=where)
                except ValueError as error:
                    raise DataError(str(error)) from None
                level, action = (row["level"] or "").strip(), (row["action"] or "").strip()
                if level not in Level.__members__:
                    raise DataError(f"{where}, column 'level': {level!r} is not one of {list(Level.__members__)}")
                if action not in ACTIONS:
                    raise DataError(f"{where}, column 'action': {action!r} is not in the catalogue {sorted(ACTIONS)}")
                message = (row.get("message") or "").strip() or ACTIONS[action]
                rows.append((features, level, action, message))
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})") from None
    except csv.Error as error:
        raise DataError(f"{path}: not a valid CSV ({error})") from None
    if not rows:
        raise DataError(f"{path}: no data rows")
    return rows


def _load_json_list(path: Path) -> list:
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error.msg}, line {error.lineno} column {error.colno})") from None
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty JSON list of examples")
    return data


def _text(item: dict, key: str, where: str, required: bool = True) -> str:
    value = item.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise DataError(f"{where}, key '{key}': expected a non-empty string, got {value!r}")
    return value


def read_alpaca(path: Path) -> list[Conversation]:
    conversations = []
    for number, item in enumerate(_load_json_list(path), start=1):
        where = f"{path}: example {number}"
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected an object with instruction, input, output")
        system, user = _text(item, "instruction", where), _text(item, "input", where, required=False)
        prompt = ({"role": "system", "content": system}, {"role": "user", "content": user or system})
        conversations.append(Conversation(prompt if user else prompt[1:], _text(item, "output", where)))
    return conversations


_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def read_messages(path: Path) -> list[Conversation]:
    conversations = []
    for number, item in enumerate(_load_json_list(path), start=1):
        where = f"{path}: example {number}"
        turns = item.get("messages", item.get("conversations")) if isinstance(item, dict) else None
        if not isinstance(turns, list) or len(turns) < 2:
            raise DataError(f"{where}: expected 'messages' (or ShareGPT 'conversations') with at least 2 turns")
        messages = []
        for index, turn in enumerate(turns, start=1):
            if not isinstance(turn, dict):
                raise DataError(f"{where}, turn {index}: expected an object")
            role = turn.get("role", _SHAREGPT_ROLES.get(turn.get("from", ""), ""))
            content = turn.get("content", turn.get("value"))
            if role not in ("system", "user", "assistant") or not isinstance(content, str):
                raise DataError(f"{where}, turn {index}: needs role system/user/assistant and string content, "
                                f"got {turn!r}")
            messages.append({"role": role, "content": content})
        if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
            raise DataError(f"{where}: the last turn must be a non-empty assistant answer")
        conversations.append(Conversation(tuple(messages[:-1]), messages[-1]["content"]))
    return conversations


def detect_format(path: Path) -> str:
    if path.suffix.lower() == ".csv":
        from fatigue_llm.training.seed_units import is_seed_csv  # here, not on top: seed_units imports this module

        return "seed_csv" if is_seed_csv(path) else "cases_csv"
    first = _load_json_list(path)[0]
    if isinstance(first, dict) and ("messages" in first or "conversations" in first):
        return "messages"
    if isinstance(first, dict) and "instruction" in first:
        return "alpaca"
    raise DataError(f"{path}: cannot tell the format of the first example (keys {sorted(first)[:6]}): "
                    "set data.format to alpaca or messages")


PromptBuilder = Callable[[FatigueFeatures], tuple[Sequence[Message], str]]  # -> (messages, rule level name)


def case_conversation(features: FatigueFeatures, level: str, action: str, message: str,
                      build_prompt: PromptBuilder) -> Conversation:
    """A case as the engine's request for ``features`` and the answer the decoder would write."""
    messages, rule_level = build_prompt(features)
    return Conversation(tuple(messages), answer_text(level, action, message), level, action, rule_level, features)


def load_conversations(path: Path, data_format: str, build_prompt: PromptBuilder) -> list[Conversation]:
    data_format = detect_format(path) if data_format == "auto" else data_format
    if data_format == "cases_csv":
        return [case_conversation(*row, build_prompt) for row in read_cases_csv(path)]
    if data_format == "seed_csv":
        from fatigue_llm.training.seed_units import read_seed_csv  # here, not on top: seed_units imports this module

        return [case_conversation(*row[:4], build_prompt) for row in read_seed_csv(path)]
    if data_format == "alpaca":
        return read_alpaca(path)
    if data_format == "messages":
        return read_messages(path)
    raise DataError(f"{path}: unknown data format {data_format!r}")


def tokenize_conversation(tokenizer, conversation: Conversation, max_length: int) -> dict[str, list[int]]:
    """input_ids and labels: the prompt (chat template with the generation prompt) masked, the answer and
    the template's end-of-turn token labelled — a model that never sees that token learned never to stop."""
    prompt_text = tokenizer.apply_chat_template(list(conversation.prompt), tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template([*conversation.prompt, {"role": "assistant",
                                                                     "content": conversation.answer}],
                                              tokenize=False)
    if not full_text.startswith(prompt_text):
        raise DataError("the chat template does not render the prompt as a prefix of the full conversation")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False).input_ids
    answer_ids = tokenizer(full_text[len(prompt_text):], add_special_tokens=False).input_ids
    end = end_of_turn_id(tokenizer)
    # keep the end-of-turn token, drop what the template adds after it (a newline)
    answer_ids = answer_ids[: answer_ids.index(end) + 1] if end in answer_ids else [*answer_ids, end]
    if len(prompt_ids) + len(answer_ids) > max_length:
        raise DataError(f"example of {len(prompt_ids) + len(answer_ids)} tokens exceeds training.max_length="
                        f"{max_length}")
    return {"input_ids": prompt_ids + answer_ids,
            "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids}


def end_of_turn_id(tokenizer) -> int:
    """The token that ends an assistant turn in this chat template (e.g. <|im_end|>), else EOS."""
    for name in ("<|im_end|>", "<|eot_id|>", "<|end|>", "</s>"):
        token = tokenizer.convert_tokens_to_ids(name)
        if isinstance(token, int) and token != tokenizer.unk_token_id and token is not None:
            return token
    return tokenizer.eos_token_id


def split(items: list, validation_fraction: float, seed: int) -> tuple[list, list]:
    """A reproducible train / validation split (at least one validation example when asked for any)."""
    import random

    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = 0 if validation_fraction <= 0 else max(1, round(len(items) * validation_fraction))
    n_val = min(n_val, len(items) - 1)
    val = [items[i] for i in order[:n_val]]
    train = [items[i] for i in order[n_val:]]
    return train, val
