"""Which schemas template decoding takes (the decoding itself runs on the real model in
test_llm_backend.py)."""

from __future__ import annotations

from fatigue_llm.intervention.backends.structured import template_fields
from fatigue_llm.intervention.prompt import answer_schema
from fatigue_llm.intervention.types import LEVEL_ACTION_CHOICES, Level


def test_the_answer_schema_decodes_as_one_branch_per_level():
    branches = template_fields(answer_schema(Level.ADVISORY, 80))
    assert [branch[0].choices for branch in branches] == [("ADVISORY",), ("WARNING",), ("CRITICAL",)]
    for level, branch in zip((Level.ADVISORY, Level.WARNING, Level.CRITICAL), branches, strict=True):
        assert [spec.name for spec in branch] == ["level", "action", "message"]
        assert branch[1].choices == LEVEL_ACTION_CHOICES[level]
        assert branch[2].choices == () and branch[2].max_chars == 80


def test_schemas_it_cannot_decode_go_to_the_grammar():
    flat = {"type": "object", "properties": {"mode": {"type": "string", "enum": ["a", "b"]}}}
    assert template_fields(flat) is not None
    number = {"type": "object", "properties": {"score": {"type": "number"}}}
    quoted = {"type": "object", "properties": {"mode": {"type": "string", "enum": ['say "hi"']}}}
    reordered = {"anyOf": [flat, {"type": "object", "properties": {"other": {"type": "string"}}}]}
    nested = {"type": "object", "properties": {"inner": {"type": "object", "properties": {}}}}
    for schema in (None, {}, number, quoted, reordered, nested, {"type": "array"}):
        assert template_fields(schema) is None, schema


def test_a_phrase_repeated_from_earlier_in_the_string_is_detected():
    from fatigue_llm.intervention.backends.structured import REPEAT_NGRAM, repeats_itself

    phrase = list(range(10, 10 + REPEAT_NGRAM))
    assert repeats_itself([1, *phrase, 2, 3, *phrase])
    assert not repeats_itself([1, *phrase, 2, 3, *phrase[:-1]])
    assert not repeats_itself(list(range(40)))
    assert not repeats_itself(phrase)
