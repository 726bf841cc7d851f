"""Pass criteria of a replay scenario, in the spirit of tier4/driving_log_replayer: each scenario names
metrics with bounds, ``{metric: {min: x, max: y, optional: bool}}``, and every bound is one condition.

A metric that is None (not measurable: no camera in the bag, no labelled fatigue period) fails its
conditions, with the reason, unless the scenario marks it ``optional: true``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from fatigue_llm.evaluation.metrics import SCALAR_METRICS

# The metric names a scenario may use (the scalar entries of compute_metrics' dict).
METRIC_NAMES: tuple[str, ...] = SCALAR_METRICS
CRITERION_KEYS = ("min", "max", "optional")
OPS = {"min": ">=", "max": "<="}


@dataclass(frozen=True)
class ConditionResult:
    metric: str
    op: str  # ">=" for a min bound, "<=" for a max bound
    threshold: float
    value: float | None
    passed: bool
    reason: str = ""

    def to_json_dict(self) -> dict:
        return asdict(self)


def validate_criteria(criteria: Mapping[str, Mapping[str, float]]) -> None:
    """ValueError for an unknown metric name or bound key, or a bound that is not a finite number."""
    for metric, bounds in criteria.items():
        if metric not in METRIC_NAMES:
            raise ValueError(f"unknown metric {metric!r} in pass criteria; valid names: {', '.join(METRIC_NAMES)}")
        if not isinstance(bounds, Mapping):
            raise ValueError(f"criteria for {metric!r} must be a mapping like {{min: x, max: y}}, got {bounds!r}")
        unknown = sorted(set(bounds) - set(CRITERION_KEYS))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} for {metric!r}; valid keys: {', '.join(CRITERION_KEYS)}")
        for key in OPS:
            if key in bounds and not is_finite_number(bounds[key]):
                raise ValueError(f"{metric}.{key} must be a finite number, got {bounds[key]!r}")


def is_finite_number(value: object) -> bool:
    if isinstance(value, bool):
        return False  # YAML `min: yes` is a typo, not 1.0
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def metric_value(metrics: Mapping[str, object], metric: str) -> float | None:
    value = metrics.get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)  # type: ignore[arg-type]


def check_condition(metric: str, key: str, threshold: float, value: float | None, optional: bool) -> ConditionResult:
    op = OPS[key]
    if value is None:
        reason = "not measurable (None); optional" if optional else "not measurable (None)"
        return ConditionResult(metric, op, threshold, None, optional, reason)
    passed = value >= threshold if key == "min" else value <= threshold
    reason = "" if passed else f"{value:g} is not {op} {threshold:g}"
    return ConditionResult(metric, op, threshold, value, passed, reason)


def check_criteria(metrics: Mapping[str, object], criteria: Mapping[str, Mapping[str, float]]) -> list[ConditionResult]:
    """One ConditionResult per bound, in the order the criteria list them (min before max)."""
    validate_criteria(criteria)
    results: list[ConditionResult] = []
    for metric, bounds in criteria.items():
        value = metric_value(metrics, metric)
        optional = bool(bounds.get("optional", False))
        results += [check_condition(metric, key, float(bounds[key]), value, optional) for key in OPS if key in bounds]
    return results


def verdict(conditions: list[ConditionResult]) -> bool:
    """The scenario passes when every condition does (no conditions: passes)."""
    return all(c.passed for c in conditions)
