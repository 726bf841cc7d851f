"""Triage: token confidence, retrieval agreement, severity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fatigue_llm.intervention.casestore import Case, RetrievedCase
from fatigue_llm.intervention.triage import BETA_MAX, token_confidence, triage
from fatigue_llm.intervention.types import Level


def hit(action: str, level: Level, similarity: float = 0.95, effectiveness: float = 0.8) -> RetrievedCase:
    case = Case(features={}, embedding=np.ones(2, dtype=np.float32), intervention=action, action=action,
                level=int(level), effectiveness=effectiveness, driver_id="seed", timestamp_s=0.0, case_id=0)
    return RetrievedCase(case=case, similarity=similarity, score=similarity)


def test_token_confidence_is_geometric_mean_probability():
    assert token_confidence([]) == 0.0
    assert token_confidence([0.0, 0.0]) == 1.0
    assert token_confidence([math.log(0.5), math.log(0.125)]) == pytest.approx(0.25)
    assert token_confidence([1e-9]) == 1.0  # rounding noise above zero
    with pytest.raises(ValueError, match="<= 0"):
        token_confidence([0.5])
    with pytest.raises(ValueError):
        token_confidence([math.nan])


def test_confident_model_with_agreeing_cases_stays_local():
    cases = [hit("suggest_break", Level.WARNING), hit("suggest_break", Level.WARNING, 0.9)]
    result = triage(0.8, cases, Level.WARNING, "suggest_break", threshold=0.5)
    assert not result.escalate
    # agreement 1: confidence moves towards 1 by beta
    beta = BETA_MAX * (0.95 + 0.9) / 2
    assert result.confidence == pytest.approx((1 - beta) * 0.8 + beta)


def test_disagreeing_similar_cases_trigger_escalation():
    cases = [hit("pull_over", Level.CRITICAL), hit("alert_audio_haptic", Level.CRITICAL)]
    agree = triage(0.6, [hit("ventilation", Level.ADVISORY)] * 2, Level.ADVISORY, "ventilation", 0.5)
    disagree = triage(0.6, cases, Level.ADVISORY, "ventilation", 0.5)
    assert not agree.escalate and disagree.escalate
    assert disagree.confidence < agree.confidence
    assert any("disagree" in reason for reason in disagree.reasons)


def test_same_level_other_action_counts_half_and_ineffective_cases_count_less():
    half = triage(0.5, [hit("audio_chime", Level.WARNING)], Level.WARNING, "suggest_break", 0.5)
    beta = BETA_MAX * 0.95
    assert half.confidence == pytest.approx((1 - beta) * 0.5 + beta * 0.5)
    good_yes = hit("suggest_break", Level.WARNING, effectiveness=1.0)
    bad_no = hit("ventilation", Level.ADVISORY, effectiveness=0.0)
    mixed = triage(0.5, [good_yes, bad_no], Level.WARNING, "suggest_break", 0.5)
    assert mixed.confidence > 0.5  # the case that worked outweighs the one that did not (4:1)


def test_critical_always_escalates_and_no_cases_use_token_confidence():
    result = triage(0.99, [hit("pull_over", Level.CRITICAL)], Level.CRITICAL, "pull_over", 0.5)
    assert result.escalate and "critical" in result.reasons[0]
    alone = triage(0.42, [], Level.WARNING, "audio_chime", 0.5)
    assert alone.confidence == pytest.approx(0.42) and alone.escalate
    assert "no similar past cases" in alone.reasons
    unrelated = triage(0.7, [hit("none", Level.INFO, similarity=-0.3)], Level.WARNING, "audio_chime", 0.5)
    assert unrelated.confidence == pytest.approx(0.7) and not unrelated.escalate


def test_arguments_are_validated():
    with pytest.raises(ValueError, match="token_confidence"):
        triage(1.5, [], Level.INFO, "none", 0.5)
    with pytest.raises(ValueError, match="threshold"):
        triage(0.5, [], Level.INFO, "none", -0.1)
