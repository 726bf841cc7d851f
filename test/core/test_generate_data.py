"""The synthetic intervention dataset: reproducible, loadable by the trainer, answerable, realistic."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from statistics import mean

import pytest

from fatigue_llm.cli import main as cli_main
from fatigue_llm.features.types import FEATURE_RANGES, SEED_FEATURES
from fatigue_llm.intervention.config import InterventionConfig
from fatigue_llm.intervention.engine import rule_decision_for
from fatigue_llm.intervention.prompt import build_messages, speaks_to_driver
from fatigue_llm.intervention.types import LEVEL_ACTION_CHOICES, Level
from fatigue_llm.training.data import case_conversation, detect_format, read_cases_csv
from fatigue_llm.training.generate import TEMPLATES, generate_cases, main

N = 2000


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("gen") / "cases.csv"
    assert main([str(out), "--rows", str(N), "--seed", "7"]) == 0
    return out, generate_cases(N, 7)


def build_prompt(features):
    """The engine's request as train.engine_prompt_builder makes it, with a trivial token count."""
    rule = rule_decision_for(features, InterventionConfig())
    return build_messages(features, rule, (), count_tokens=lambda text: len(text) // 4), rule.level.name


def test_same_seed_same_bytes_other_seed_differs(tmp_path, dataset, monkeypatch):
    out, _ = dataset
    monkeypatch.setattr("fatigue_llm.cli.apply_local_dds_defaults", lambda: None)  # leave os.environ alone
    again, other = tmp_path / "again.csv", tmp_path / "other.csv"
    assert cli_main(["generate-data", str(again), "--rows", str(N), "--seed", "7"]) == 0
    assert main([str(other), "--rows", str(N), "--seed", "8"]) == 0
    assert again.read_bytes() == out.read_bytes()
    assert other.read_bytes() != out.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed away


def test_every_row_loads_and_is_answerable(dataset):
    out, _ = dataset
    assert detect_format(out) == "cases_csv"
    rows = read_cases_csv(out)
    assert len(rows) == N
    for features, level, action, message in rows:
        conversation = case_conversation(features, level, action, message, build_prompt)
        assert conversation.answerable, (features, level, action)
        assert action in LEVEL_ACTION_CHOICES[Level[level]]


def test_levels_cover_all_four_each_at_least_ten_percent(dataset):
    _, cases = dataset
    counts = Counter(case.level for case in cases)
    assert all(counts[level] >= 0.10 * N for level in Level), counts
    assert all(case.level >= case.rule_level for case in cases)


def test_messages_speak_to_the_driver_within_80_chars(dataset):
    _, cases = dataset
    messages = {case.message for case in cases}
    assert len(messages) >= 30  # varied, not only the catalogue
    for text in messages | {text for options in TEMPLATES.values() for text, _ in options}:
        assert len(text) <= 80 and speaks_to_driver(text), text


def test_features_within_ranges_with_absent_sources(dataset):
    out, cases = dataset
    for case in cases:
        for name in SEED_FEATURES:
            value = getattr(case.features, name)
            assert math.isnan(value) or FEATURE_RANGES[name].contains(value), (name, value)
        assert math.isnan(case.effectiveness) or 0.0 <= case.effectiveness <= 1.0
    absent = Counter(name for case in cases for name in SEED_FEATURES if case.cells[name] == "")
    assert absent["voice_quality"] > 0.3 * N and 0 < absent["steering_reversal_rate"] < 0.2 * N
    assert 0 < absent["eye_closure_ratio"] < 0.1 * N


def test_signs_rise_alert_to_drowsy_to_sleepy(dataset):
    _, cases = dataset

    def average(state: str, name: str) -> float:
        values = [getattr(c.features, name) for c in cases if c.state == state]
        return mean(v for v in values if math.isfinite(v))

    for name in ("eye_closure_ratio", "blink_frequency", "head_nod"):
        alert, drowsy, sleepy = (average(state, name) for state in ("alert", "drowsy", "sleepy"))
        assert alert < drowsy < sleepy, (name, alert, drowsy, sleepy)


def test_effectiveness_follows_the_action(dataset):
    _, cases = dataset

    def average(action: str) -> float:
        return mean(c.effectiveness for c in cases if c.action == action and not math.isnan(c.effectiveness))

    assert average("pull_over") > average("ventilation") and average("suggest_break") > average("ventilation")
    assert abs(average("none") - 0.5) < 0.05  # the tracker's "no change"


def test_bad_rows_count_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "x.csv"), "--rows", "0"]) == 2
    assert "rows must be in" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
