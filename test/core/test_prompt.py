"""Prompt building, the answer schema and answer parsing (no model)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import regex

from fatigue_llm.features.types import FatigueFeatures
from fatigue_llm.intervention.backends.base import schema_regex
from fatigue_llm.intervention.prompt import (
    AnswerError,
    answer_schema,
    build_messages,
    complete_truncated,
    parse_answer,
    render_features,
    system_prompt,
    trim_message,
    value_spans,
)
from fatigue_llm.intervention.types import ACTIONS, LEVEL_ACTION_CHOICES, InterventionDecision, Level, Source

FEATURES = FatigueFeatures(timestamp_s=10.0, eye_closure_ratio=0.22, blink_frequency=31.0, time_awake=17.0,
                           time_driving=5400.0, yawn_count=0, microsleep_count=2)
RULE = InterventionDecision(level=Level.WARNING, action="audio_chime", message=ACTIONS["audio_chime"],
                            source=Source.RULE, confidence=1.0, explanation="rule: PERCLOS 0.22 >= 0.15")
GOOD = {"level": "WARNING", "action": "audio_chime", "message": "Please take a break soon."}


def _case(case_id: int, similarity: float) -> SimpleNamespace:
    case = SimpleNamespace(case_id=case_id, features={"eye_closure_ratio": 0.2, "blink_frequency": 30.0},
                           level=2, action="suggest_break", effectiveness=0.8,
                           intervention="Take a break at the next rest area, you look tired.")
    return SimpleNamespace(case=case, similarity=similarity)


def test_features_are_one_compact_line_of_present_values_with_units():
    text = render_features(FEATURES)
    assert text == "PERCLOS .22, blinks 31/min, microsleeps 2, awake 17h, driving 90min"
    assert "yawns" not in text and "nods" not in text and "nan" not in text.lower()  # zero / missing: left out
    assert "longest closure" not in render_features({"longest_eye_closure": 0.3})  # an ordinary blink
    assert render_features({"longest_eye_closure": 1.4}) == "longest closure 1.4s"
    assert render_features(FatigueFeatures(microsleep=True, eye_closure_ratio=0.4)).startswith("MICROSLEEP, ")
    assert render_features({}) == "none available"


def test_system_prompt_is_fixed_and_lists_every_action():
    assert system_prompt(100) == system_prompt(100)
    assert all(f"- {name}:" in system_prompt() for name in ACTIONS)
    messages_a = build_messages(FEATURES, RULE, [])
    messages_b = build_messages(FatigueFeatures(eye_closure_ratio=0.5), RULE, [_case(1, 0.9)])
    assert messages_a[0] == messages_b[0] and messages_a[0]["role"] == "system"
    assert messages_a[1]["role"] == "user" and "\nRule: WARNING audio_chime" in messages_a[1]["content"]
    assert "'Now:'" in messages_a[0]["content"] and "'Cases:'" in messages_a[0]["content"]  # how to read it


def test_case_examples_are_one_short_line():
    text = build_messages(FEATURES, RULE, [_case(7, 0.9)])[1]["content"]
    assert text.endswith("\nCases:\nPERCLOS .20, blinks 30/min -> WARNING suggest_break, eff .8")


def test_examples_are_dropped_first_to_fit_the_token_budget():
    retrieved = [_case(i, 0.9 - i / 10) for i in range(3)]
    full = build_messages(FEATURES, RULE, retrieved, budget_tokens=10_000)[1]["content"]
    assert full.count(" -> ") == 3
    no_cases = build_messages(FEATURES, RULE, [], budget_tokens=10_000)[1]["content"]
    one_example = len(build_messages(FEATURES, RULE, retrieved[:1], budget_tokens=10_000)[1]["content"])
    budget = one_example // 3 + 5  # room for one example, not two
    cut = build_messages(FEATURES, RULE, retrieved, budget_tokens=budget)[1]["content"]
    assert cut.count(" -> ") == 1 and cut.startswith(no_cases)
    tiny = build_messages(FEATURES, RULE, retrieved, budget_tokens=1)[1]["content"]
    assert tiny == no_cases  # the measurements themselves are never cut


def test_schema_never_allows_a_level_below_the_rule_nor_an_action_unfit_for_the_level():
    branches = answer_schema(Level.WARNING, 120)["anyOf"]
    assert [branch["properties"]["level"]["enum"] for branch in branches] == [["WARNING"], ["CRITICAL"]]
    for branch in branches:
        level = Level[branch["properties"]["level"]["enum"][0]]
        assert branch["properties"]["action"]["enum"] == list(LEVEL_ACTION_CHOICES[level])
        assert branch["properties"]["message"]["maxLength"] == 120
        assert list(branch["properties"]) == ["level", "action", "message"]
    assert "none" in answer_schema(Level.INFO)["anyOf"][0]["properties"]["action"]["enum"]
    assert not any("none" in choices for level, choices in LEVEL_ACTION_CHOICES.items() if level >= Level.ADVISORY)


def test_parse_valid_answer():
    answer = parse_answer(json.dumps(GOOD), min_level=Level.ADVISORY)
    assert (answer.level, answer.action) == (Level.WARNING, "audio_chime")
    assert answer.message == "Please take a break soon."


@pytest.mark.parametrize("change, expected", [
    ({"level": "SEVERE"}, "field 'level'"),
    ({"level": "INFO"}, "below the rule level"),
    ({"action": "honk"}, "field 'action'"),
    ({"action": "pull_over"}, "field 'action' at level WARNING"),
    ({"message": "  "}, "field 'message'"),
    ({"message": "x" * 200}, "200 chars"),
    ({"confidence": 0.9}, "unknown ['confidence']"),
    ({"extra": 1}, "unknown ['extra']"),
])
def test_parse_rejects_invalid_fields(change, expected):
    with pytest.raises(AnswerError, match=regex.escape(expected)):
        parse_answer(json.dumps({**GOOD, **change}), min_level=Level.ADVISORY)


def test_parse_rejects_non_json_and_missing_fields():
    with pytest.raises(AnswerError, match="not valid JSON"):
        parse_answer('{"level": "WARNING"')
    with pytest.raises(AnswerError, match="missing \\['message'\\]"):
        parse_answer(json.dumps({k: v for k, v in GOOD.items() if k != "message"}))
    with pytest.raises(AnswerError, match="JSON object"):
        parse_answer("[1, 2]")


def test_truncated_answers_are_closed_at_a_word_boundary():
    cut = '{"level": "WARNING", "action": "audio_chime", "message": "Your eyes close. Plea'
    assert parse_answer(complete_truncated(cut)).message == "Your eyes close."
    missing_brace = json.dumps(GOOD)[:-1] + "\n"
    assert parse_answer(complete_truncated(missing_brace)).message == GOOD["message"]
    assert complete_truncated('{"level": "WAR') == '{"level": "WAR'  # not inside the message: unchanged
    assert trim_message("You look tired, please take a break soon and drink some") == (
        "You look tired, please take a break soon and drink.")


def test_schema_regex_matches_answers_and_their_prefixes():
    pattern = regex.compile(schema_regex(answer_schema(Level.ADVISORY, 60)))
    assert pattern.fullmatch(json.dumps(GOOD))
    assert pattern.fullmatch('{"level": "WAR', partial=True)
    assert not pattern.fullmatch('{"level": "INFO"', partial=True)  # below the rule level
    assert not pattern.fullmatch(json.dumps({**GOOD, "action": "pull_over"}))  # not at WARNING
    assert pattern.fullmatch(json.dumps({**GOOD, "level": "CRITICAL", "action": "pull_over"}))
    assert not pattern.fullmatch(json.dumps({**GOOD, "message": "x" * 61}))


def test_value_spans_locate_level_and_action():
    text = json.dumps(GOOD)
    spans = value_spans(text)
    assert [text[a:b] for a, b in spans] == ["WARNING", "audio_chime"]
    assert not math.isnan(len(spans))


def test_messages_that_echo_codes_or_measurements_do_not_speak_to_the_driver():
    from fatigue_llm.intervention.prompt import speaks_to_driver

    echoes = ("CRITICAL alert_audio_haptic", "WARNING", "audio_chime now please", "warning critical info",
              "MICROSLEEP, PERCLOS.27, blinks 29/min, blink .38s, longest closure 1.0s, slow.",
              "Your PERCLOS is high, take a break.", "Blinks 31, blink .4s, awake 17h: stop.")
    for message in echoes:
        assert not speaks_to_driver(message), message
    assert speaks_to_driver("Your eyes keep closing. Take a break at the next exit.")
    assert speaks_to_driver("You have been awake for 17 hours. Rest within 15 minutes.")  # two figures


def test_partial_message_reads_the_message_of_an_unfinished_answer():
    from fatigue_llm.intervention.prompt import partial_message

    assert partial_message('{"level": "WARNING", "action": "audio_chime"') is None
    assert partial_message('{"level": "WARNING", "message": "') == ""
    assert partial_message('{"level": "WARNING", "message": "Take a br') == "Take a br"
    assert partial_message('{"message": "Say \\"stop\\" now", "x": 1}') == 'Say "stop" now'
    assert partial_message('{"message": "cut inside an escape \\') == "cut inside an escape "  # not half of it
