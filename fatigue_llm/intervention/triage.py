"""Triage: is the on-device answer good enough, or should the case go to the cloud model?

Three signals are combined:

1. Token confidence ``t`` — how sure the local model was of the words it wrote: the geometric mean of
   the generated tokens' probabilities, ``t = exp(mean(logprob_i))`` (``token_confidence``).
2. Retrieval agreement ``a`` — do the most similar past cases back the proposed decision? Each
   retrieved case ``i`` votes with weight ``w_i = max(sim_i, 0) * (0.25 + 0.75 * eff_i)`` (similar cases
   and cases that worked count more; a case that did not work still counts a quarter) and a match
   ``m_i`` = 1 for the same action, 0.5 for another action at the same level, 0 otherwise:
   ``a = sum(w_i * m_i) / sum(w_i)``.
3. Severity — a CRITICAL decision is always escalated, whatever the confidence.

The evidence weight of retrieval grows with how similar the retrieved cases are:
``beta = BETA_MAX * mean(clip(sim_i, 0, 1))`` with ``BETA_MAX = 0.4``, and

    confidence = (1 - beta) * t + beta * a

(without retrieved cases, or when none is similar, ``confidence = t``). The decision is escalated when
``confidence < threshold`` or the level is CRITICAL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fatigue_llm.intervention.types import Level

if TYPE_CHECKING:
    from fatigue_llm.intervention.casestore import RetrievedCase

BETA_MAX = 0.4
INEFFECTIVE_WEIGHT = 0.25   # the vote weight of a case with effectiveness 0 (1.0 at effectiveness 1)
LOW_AGREEMENT = 0.34        # below this, the reasons say the similar cases disagree
LOW_TOKEN_CONFIDENCE = 0.5  # below this, the reasons say the model was unsure


@dataclass(frozen=True)
class TriageResult:
    """The combined confidence in [0, 1], whether to escalate, and human-readable reasons."""

    confidence: float
    escalate: bool
    reasons: tuple[str, ...]


def token_confidence(token_logprobs: Sequence[float]) -> float:
    """Geometric-mean probability of the generated tokens, ``exp(mean(logprobs))``, in [0, 1].

    No tokens give 0.0 (nothing generated, nothing to trust). Log-probabilities a hair above 0 (float
    rounding) are read as 0.

    Raises:
        ValueError: a log-probability is NaN or clearly positive (> 1e-6).
    """
    if len(token_logprobs) == 0:
        return 0.0
    total = 0.0
    for value in token_logprobs:
        value = float(value)
        if math.isnan(value) or value > 1e-6:
            raise ValueError(f"token log-probabilities must be <= 0, got {value}")
        total += min(value, 0.0)
    return math.exp(total / len(token_logprobs))


def retrieval_agreement(retrieved: Sequence[RetrievedCase], level: Level, action: str) -> tuple[float, float]:
    """(agreement ``a``, evidence weight ``beta``) of retrieved cases with a decision (module docstring)."""
    weights, matches, sims = [], [], []
    for hit in retrieved:
        sim = min(max(float(hit.similarity), 0.0), 1.0)
        eff = min(max(float(hit.case.effectiveness), 0.0), 1.0)
        weights.append(sim * (INEFFECTIVE_WEIGHT + (1.0 - INEFFECTIVE_WEIGHT) * eff))
        same_level = int(hit.case.level) == int(level)
        matches.append(1.0 if hit.case.action == action else 0.5 if same_level else 0.0)
        sims.append(sim)
    total = sum(weights)
    if total <= 0.0:
        return 0.0, 0.0
    agreement = sum(w * m for w, m in zip(weights, matches, strict=True)) / total
    return agreement, BETA_MAX * sum(sims) / len(sims)


def triage(
    token_confidence: float,
    retrieved: Sequence[RetrievedCase],
    level: Level,
    action: str,
    threshold: float,
) -> TriageResult:
    """Combine token confidence, retrieval agreement and severity (formula in the module docstring).

    Raises:
        ValueError: ``token_confidence`` or ``threshold`` outside [0, 1].
    """
    if not 0.0 <= token_confidence <= 1.0:
        raise ValueError(f"token_confidence must be in [0, 1], got {token_confidence}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    agreement, beta = retrieval_agreement(retrieved, level, action)
    confidence = min(max((1.0 - beta) * token_confidence + beta * agreement, 0.0), 1.0)
    reasons = []
    if Level(level) == Level.CRITICAL:
        reasons.append("critical severity is always escalated")
    if confidence < threshold:
        reasons.append(f"confidence {confidence:.2f} < threshold {threshold:.2f}")
    if token_confidence < LOW_TOKEN_CONFIDENCE:
        reasons.append(f"low token confidence {token_confidence:.2f}")
    if beta == 0.0:
        reasons.append("no similar past cases")
    elif agreement < LOW_AGREEMENT:
        reasons.append(f"similar past cases disagree with '{action}' (agreement {agreement:.2f})")
    escalate = Level(level) == Level.CRITICAL or confidence < threshold
    return TriageResult(confidence=confidence, escalate=escalate, reasons=tuple(reasons))
