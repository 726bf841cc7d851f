"""Replay-evaluation metrics and pass criteria on hand-built traces; every expected value is worked out
here independently (by hand, brute force or the textbook formula), not by calling the code under test."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace

import pytest

from fatigue_llm.evaluation.criteria import METRIC_NAMES, check_criteria, verdict
from fatigue_llm.evaluation.levels import TruthClass, max_appropriate_level, predicted_class, required_level
from fatigue_llm.evaluation.metrics import (
    compute_metrics,
    interval_iou,
    match_intervals,
    merge_metrics,
    roc_auc,
)
from fatigue_llm.evaluation.types import FrameRecord, Interval, InterventionRecord, Trace, WindowRecord

ADVISORY, WARNING, CRITICAL, INFO = 1, 2, 3, 0


def blink(start: float, end: float) -> Interval:
    return Interval(start, end, "blink")


def trace(**fields) -> Trace:
    fields.setdefault("name", "t")
    fields.setdefault("duration_s", 3600.0)
    return Trace(**fields)


def intervention(t: float, level: int) -> InterventionRecord:
    return InterventionRecord(t=t, level=level, action="suggest_break", source="rule")


# ---------------------------------------------------------------------------------------------- levels


def test_level_mapping_follows_the_documented_table():
    assert [predicted_class(lv) for lv in (INFO, ADVISORY, WARNING, CRITICAL)] == [0, 1, 2, 2]
    assert [required_level(c) for c in TruthClass] == [INFO, ADVISORY, WARNING]
    assert [max_appropriate_level(c) for c in TruthClass] == [INFO, ADVISORY, CRITICAL]
    with pytest.raises(ValueError):
        predicted_class(4)


# ---------------------------------------------------------------------------------------------- frames


def test_closed_frame_precision_recall_f1_ignore_unknown_truth():
    pairs = [(True, True), (True, False), (False, True), (False, False), (True, True), (None, True), (None, False)]
    frames = [FrameRecord(t=i / 30, closed_true=tr, closed_pred=pr) for i, (tr, pr) in enumerate(pairs)]
    m = compute_metrics(trace(frames=frames))
    tp, fp, fn = 2, 1, 1  # counted by hand from `pairs`, the None rows left out
    assert m["closed_frame_counts"] == {"tp": tp, "fp": fp, "fn": fn, "tn": 1}
    assert m["closed_frame_precision"] == pytest.approx(2 / 3)
    assert m["closed_frame_recall"] == pytest.approx(2 / 3)
    assert m["closed_frame_f1"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------- events


@pytest.mark.parametrize(("det_end", "matched"), [(0.19, False), (0.21, True)])
def test_blink_match_needs_iou_above_0_2(det_end, matched):
    # A detection inside a 1 s blink: IoU = its length / 1 s.
    m = compute_metrics(trace(truth_events=[blink(10.0, 11.0)], detected_events=[blink(10.0, 10.0 + det_end)]))
    assert m["blink_counts"]["tp"] == int(matched)
    assert m["blink_f1"] == (1.0 if matched else 0.0)


def test_two_detections_on_one_blink_are_one_tp_and_one_fp():
    m = compute_metrics(trace(truth_events=[blink(0.0, 1.0)], detected_events=[blink(0.0, 0.6), blink(0.4, 1.0)]))
    assert (m["blink_counts"]["tp"], m["blink_counts"]["fp"], m["blink_counts"]["fn"]) == (1, 1, 0)
    assert m["blink_precision"] == 0.5
    assert m["blink_recall"] == 1.0
    assert m["blink_f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)


def brute_force_max_matches(truth, detected, threshold=0.2) -> int:
    """Most one-to-one pairs with IoU > threshold, by trying every assignment."""
    best = 0
    for perm in itertools.permutations(range(len(detected)), len(truth)):
        best = max(best, sum(interval_iou(t, detected[j]) > threshold for t, j in zip(truth, perm, strict=True)))
    return best


def test_matching_is_optimal_where_greedy_by_iou_is_not():
    # Greedy takes (A, d1) at IoU 0.67 first and leaves d2 (which only fits A) and B unmatched;
    # the optimum pairs A-d2 (0.5) and B-d1 (0.33).
    a, b = blink(0.0, 1.0), blink(0.7, 1.7)
    d1, d2 = blink(0.2, 1.2), blink(0.0, 0.5)
    assert brute_force_max_matches([a, b], [d1, d2]) == 2
    assert sorted((i, j) for i, j, _ in match_intervals([a, b], [d1, d2])) == [(0, 1), (1, 0)]
    assert compute_metrics(trace(truth_events=[a, b], detected_events=[d1, d2]))["blink_f1"] == 1.0


def test_event_kinds_are_matched_separately():
    m = compute_metrics(trace(truth_events=[blink(0, 1)], detected_events=[Interval(0, 1, "microsleep")]))
    assert m["blink_recall"] == 0.0
    assert m["microsleep_precision"] == 0.0
    assert m["microsleep_detected"] is None  # no true microsleep


def test_microsleep_detected_is_share_of_true_microsleeps_overlapped():
    truth = [Interval(10, 12, "microsleep"), Interval(20, 22, "microsleep"), Interval(30, 31, "microsleep")]
    detected = [Interval(11.5, 13, "microsleep"), Interval(20, 22, "microsleep")]  # IoU 0.5/3 and 1
    m = compute_metrics(trace(truth_events=truth, detected_events=detected))
    assert m["microsleep_detected"] == pytest.approx(2 / 3)
    assert m["microsleep_recall"] == pytest.approx(1 / 3)  # only the exact one passes IoU > 0.2
    assert m["microsleep_precision"] == pytest.approx(1 / 2)


# ---------------------------------------------------------------------------------------------- windows


# (truth class, policy level) per window
WINDOW_CASES = [(0, 0), (0, 0), (0, 1), (1, 1), (1, 0), (1, 2), (2, 3), (2, 2), (2, 1), (None, 3)]


def windows_from(cases, scores=None) -> list[WindowRecord]:
    scores = scores or [float(lv) for _, lv in cases]
    return [WindowRecord(t=10.0 * i, truth_level=tr, predicted_level=lv, score=s, features={})
            for i, ((tr, lv), s) in enumerate(zip(cases, scores, strict=True))]


def test_confusion_matrix_accuracy_and_per_class_recall():
    m = compute_metrics(trace(windows=windows_from(WINDOW_CASES)))
    # Rows truth, columns predicted class (levels 2 and 3 both mean sleepy); the None window left out.
    assert m["confusion_matrix"] == [[2, 1, 0], [1, 1, 1], [0, 1, 2]]
    assert m["windows_evaluated"] == 9
    assert m["level_accuracy"] == pytest.approx(5 / 9)
    assert (m["recall_alert"], m["recall_drowsy"], m["recall_sleepy"]) == pytest.approx((2 / 3, 1 / 3, 2 / 3))
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 3 + 2 / 3) / 3)


def test_balanced_accuracy_leaves_out_absent_classes():
    m = compute_metrics(trace(windows=windows_from([(0, 0), (0, 1), (2, 2)])))
    assert m["recall_drowsy"] is None
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)


def mann_whitney_auc(positive, scores) -> float:
    """P(score of a positive > score of a negative), ties counted half, over all pairs."""
    pos = [s for p, s in zip(positive, scores, strict=True) if p]
    neg = [s for p, s in zip(positive, scores, strict=True) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def test_roc_auc_equals_mann_whitney_on_a_known_ranking():
    scores = [0.1, 0.4, 0.35, 0.8, 0.5, 0.5, 0.9, 0.2, 0.7]
    truth = [0, 0, 1, 1, 0, 1, 2, 0, 2]
    cases = [(t, 0) for t in truth]
    m = compute_metrics(trace(windows=windows_from(cases, scores)))
    assert m["roc_auc"] == pytest.approx(mann_whitney_auc([t >= 1 for t in truth], scores))
    assert m["roc_auc_sleepy"] == pytest.approx(mann_whitney_auc([t == 2 for t in truth], scores))
    assert roc_auc([False, True, True], [0.1, 0.2, 0.3]) == 1.0
    assert roc_auc([True, False], [0.1, 0.2]) == 0.0


def test_roc_auc_is_none_with_one_class_and_skips_nan_scores():
    assert compute_metrics(trace(windows=windows_from([(0, 0), (0, 1)])))["roc_auc"] is None
    assert roc_auc([True, False, True], [0.9, 0.1, math.nan]) == 1.0


# ---------------------------------------------------------------------------------------------- interventions


LABELS = [Interval(0, 100, "ALERT"), Interval(100, 200, "DROWSY"), Interval(200, 300, "SLEEPY"),
          Interval(300, 400, "ALERT"), Interval(400, 450, "drowsy"), Interval(450, 3600, "ALERT")]
INTERVENTIONS = [intervention(50, CRITICAL),   # alert: too high (and false, outside any tolerance below)
                 intervention(130, ADVISORY),  # drowsy onset 100 -> latency 30, right
                 intervention(210, ADVISORY),  # sleepy needs WARNING: too low, does not detect it
                 intervention(260, WARNING),   # sleepy onset 200 -> latency 60, right
                 intervention(420, INFO)]      # drowsy 400-450 never detected; too low


def test_detection_latency_from_onset_to_first_sufficient_intervention():
    m = compute_metrics(trace(truth_levels=LABELS, interventions=INTERVENTIONS), tolerance_s=10.0)
    assert m["detection_latencies_s"] == [30.0, 60.0]
    assert m["detection_latency_s"] == 45.0
    assert m["detection_latency_max_s"] == 60.0
    assert (m["detected_periods"], m["undetected_periods"]) == (2, 1)


def test_adjacent_periods_of_one_class_are_one_period():
    labels = [Interval(0, 100, "DROWSY"), Interval(100, 200, "DROWSY")]
    m = compute_metrics(trace(truth_levels=labels, interventions=[intervention(150, ADVISORY)]))
    assert m["detection_latencies_s"] == [150.0]


def test_appropriateness_shares():
    m = compute_metrics(trace(truth_levels=LABELS, interventions=INTERVENTIONS))
    assert m["appropriateness_counts"] == {"too_low": 2, "right": 2, "too_high": 1}
    assert (m["too_low_share"], m["appropriate_share"], m["too_high_share"]) == pytest.approx((0.4, 0.4, 0.2))


def test_false_interventions_outside_the_tolerance_window_per_alert_hour():
    labels = [Interval(0, 1000, "ALERT"), Interval(1000, 1100, "DROWSY"), Interval(1100, 3600, "ALERT")]
    ivs = [intervention(949, ADVISORY),   # 51 s before the drowsy onset: false
           intervention(951, ADVISORY),   # 49 s before: inside the tolerance
           intervention(1149, WARNING),   # 49 s after the end: inside
           intervention(1151, ADVISORY),  # 51 s after: false
           intervention(500, INFO),       # INFO is no intervention
           intervention(3000, CRITICAL)]  # false
    m = compute_metrics(trace(truth_levels=labels, interventions=ivs), tolerance_s=50.0)
    alert_hours = (1000 + 2500) / 3600
    assert m["false_interventions"] == 3
    assert m["alert_hours"] == pytest.approx(alert_hours)
    assert m["false_interventions_per_hour"] == pytest.approx(3 / alert_hours)
    # With the default +-300 s (DDAW) the two near misses are forgiven.
    assert compute_metrics(trace(truth_levels=labels, interventions=ivs))["false_interventions"] == 1


def test_unlabelled_drive_has_no_false_intervention_rate():
    m = compute_metrics(trace(interventions=[intervention(10, WARNING)]))
    assert m["false_interventions_per_hour"] is None
    assert m["appropriate_share"] is None
    assert m["detection_latency_s"] is None and m["undetected_periods"] == 0


def test_periods_are_clipped_to_a_drive_that_stopped_early():
    labels = [Interval(0, 100, "ALERT"), Interval(100, 500, "SLEEPY")]
    m = compute_metrics(trace(duration_s=150.0, truth_levels=labels, interventions=[intervention(400, CRITICAL)],
                              stopped_at="chunk 3"))
    assert m["undetected_periods"] == 1  # the sleepy period ends at 150 s, before the intervention
    assert m["stopped_at"] == "chunk 3"


# ---------------------------------------------------------------------------------------------- stages


def test_stage_latency_percentiles_and_tokens_per_s():
    values = [float(v) for v in range(1, 101)]  # 1..100 ms
    m = compute_metrics(trace(stage_latency_ms={"perception": values, "policy": [1.0, 2.0, math.nan]},
                              llm_tokens_per_s=[10.0, 20.0, 30.0]))
    # Linear interpolation: p = v[0] + q * (n - 1) for v = 1..n.
    assert m["stage_latency_ms"]["perception"] == pytest.approx({"p50": 50.5, "p95": 95.05, "p99": 99.01, "n": 100})
    assert m["stage_latency_ms"]["policy"]["p50"] == 1.5
    assert m["stage_p95_ms"] == pytest.approx(95.05)  # the worst stage
    assert m["llm_tokens_per_s"] == 20.0


# ---------------------------------------------------------------------------------------------- None / NaN


def test_empty_trace_measures_nothing_and_is_strict_json():
    m = compute_metrics(trace(windows=windows_from([(0, 0)], [math.nan])))
    for name in ("closed_frame_f1", "blink_f1", "microsleep_detected", "roc_auc", "detection_latency_s",
                 "false_interventions_per_hour", "appropriate_share", "stage_p95_ms", "llm_tokens_per_s"):
        assert m[name] is None, name
    assert set(METRIC_NAMES) <= set(m)
    json.dumps(m, allow_nan=False)


# ---------------------------------------------------------------------------------------------- fleet


def bag_a() -> Trace:
    return Trace(
        name="a", duration_s=1000.0,
        frames=[FrameRecord(t=i, closed_true=i % 3 == 0, closed_pred=i % 2 == 0) for i in range(30)],
        windows=windows_from([(0, 0), (1, 1), (1, 0), (2, 3)], [0.1, 1.2, 0.6, 3.3]),
        interventions=[intervention(150, ADVISORY), intervention(480, WARNING)],
        truth_events=[blink(1, 1.2), blink(5, 5.3), Interval(460, 462, "microsleep")],
        detected_events=[blink(1.02, 1.2), blink(7, 7.1), Interval(461, 462, "microsleep")],
        truth_levels=[Interval(0, 100, "ALERT"), Interval(100, 300, "DROWSY"), Interval(300, 450, "ALERT"),
                      Interval(450, 500, "SLEEPY"), Interval(500, 1000, "ALERT")],
        stage_latency_ms={"perception": [5.0, 6.0, 9.0]}, llm_tokens_per_s=[12.0])


def bag_b() -> Trace:
    return Trace(
        name="b", duration_s=2000.0,
        frames=[FrameRecord(t=i, closed_true=i % 4 == 0, closed_pred=i % 4 == 0) for i in range(20)],
        windows=windows_from([(0, 1), (2, 2), (0, 0)], [0.9, 2.5, 0.2]),
        interventions=[intervention(1500, CRITICAL), intervention(1700, ADVISORY), intervention(1950, ADVISORY)],
        truth_events=[blink(10, 10.2)], detected_events=[blink(10, 10.25), blink(30, 30.2)],
        truth_levels=[Interval(0, 1400, "ALERT"), Interval(1400, 1600, "SLEEPY"), Interval(1600, 2000, "ALERT")],
        stage_latency_ms={"perception": [4.0, 30.0], "policy": [0.5]}, llm_tokens_per_s=[18.0, 21.0])


def shifted(tr: Trace, dt: float) -> Trace:
    """The trace with every time moved by dt (to lay bags end to end)."""
    return replace(
        tr,
        frames=[replace(f, t=f.t + dt) for f in tr.frames],
        windows=[replace(w, t=w.t + dt) for w in tr.windows],
        interventions=[replace(iv, t=iv.t + dt) for iv in tr.interventions],
        truth_events=[replace(e, start=e.start + dt, end=e.end + dt) for e in tr.truth_events],
        detected_events=[replace(e, start=e.start + dt, end=e.end + dt) for e in tr.detected_events],
        truth_levels=[replace(e, start=e.start + dt, end=e.end + dt) for e in tr.truth_levels])


def concatenated(first: Trace, second: Trace) -> Trace:
    s = shifted(second, first.duration_s)
    return Trace(
        name="ab", duration_s=first.duration_s + second.duration_s, frames=first.frames + s.frames,
        windows=first.windows + s.windows, interventions=first.interventions + s.interventions,
        truth_events=first.truth_events + s.truth_events, detected_events=first.detected_events + s.detected_events,
        truth_levels=first.truth_levels + s.truth_levels,
        stage_latency_ms={k: first.stage_latency_ms.get(k, []) + s.stage_latency_ms.get(k, [])
                          for k in sorted(set(first.stage_latency_ms) | set(s.stage_latency_ms))},
        llm_tokens_per_s=first.llm_tokens_per_s + s.llm_tokens_per_s)


FLEET_ONLY = {"name", "n_traces", "per_bag", "stopped", "stopped_at"}


def assert_close(got, want, where: str) -> None:
    """Nested equality with float tolerance (pooling sums floats in another order than one trace does)."""
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for k in want:
            assert_close(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{where}[{i}]")
    else:
        assert got == pytest.approx(want), where


def test_merge_equals_metrics_of_the_concatenated_trace():
    # The bags' fatigue periods lie > 300 s from the seam, so tolerance windows do not cross it.
    merged = merge_metrics([bag_a(), bag_b()])
    whole = compute_metrics(concatenated(bag_a(), bag_b()))
    assert merged["n_traces"] == 2
    assert merged["blink_counts"]["tp"] == 2 and merged["microsleep_detected"] == 1.0
    for key in set(whole) - FLEET_ONLY:
        assert_close(merged[key], whole[key], key)


def test_merge_pools_records_instead_of_averaging_ratios():
    merged = merge_metrics([bag_a(), bag_b()])
    per_bag = {row["name"]: row for row in merged["per_bag"]}
    a, b = compute_metrics(bag_a()), compute_metrics(bag_b())
    tp = a["blink_counts"]["tp"] + b["blink_counts"]["tp"]
    detected = a["blink_counts"]["n_detected"] + b["blink_counts"]["n_detected"]
    assert merged["blink_precision"] == pytest.approx(tp / detected)
    assert per_bag["a"]["blink_precision"] == a["blink_precision"]
    assert per_bag["b"]["level_accuracy"] == b["level_accuracy"]


def test_merge_is_independent_of_the_order_runs_finish_in():
    forward = merge_metrics([bag_a(), bag_b(), replace(bag_b(), name="c", stopped_at="chunk 9")])
    backward = merge_metrics([replace(bag_b(), name="c", stopped_at="chunk 9"), bag_b(), bag_a()])
    assert json.dumps(forward, sort_keys=True, allow_nan=False) == json.dumps(backward, sort_keys=True)
    assert [row["name"] for row in forward["per_bag"]] == ["a", "b", "c"]
    assert forward["stopped"] == [{"name": "c", "stopped_at": "chunk 9"}]


# ---------------------------------------------------------------------------------------------- criteria


METRICS = {"level_accuracy": 0.8, "blink_f1": 0.5, "detection_latency_s": 40.0, "closed_frame_f1": None,
           "roc_auc": float("nan")}


def test_criteria_pass_and_fail_per_bound():
    results = check_criteria(METRICS, {"level_accuracy": {"min": 0.7, "max": 0.9}, "blink_f1": {"min": 0.6},
                                       "detection_latency_s": {"max": 30}})
    assert [(r.metric, r.op, r.passed) for r in results] == [
        ("level_accuracy", ">=", True), ("level_accuracy", "<=", True), ("blink_f1", ">=", False),
        ("detection_latency_s", "<=", False)]
    assert results[2].value == 0.5 and "0.6" in results[2].reason
    assert not verdict(results)
    assert verdict(results[:2])


def test_criteria_unknown_metric_names_it_and_lists_valid_names():
    with pytest.raises(ValueError, match="blink_fscore") as err:
        check_criteria(METRICS, {"blink_fscore": {"min": 0.5}})
    assert "blink_f1" in str(err.value) and "false_interventions_per_hour" in str(err.value)
    with pytest.raises(ValueError, match="minimum"):
        check_criteria(METRICS, {"blink_f1": {"minimum": 0.5}})
    with pytest.raises(ValueError, match="finite number"):
        check_criteria(METRICS, {"blink_f1": {"min": "high"}})


def test_unmeasurable_metric_fails_unless_optional():
    failed, = check_criteria(METRICS, {"closed_frame_f1": {"min": 0.9}})
    assert not failed.passed and failed.value is None and "not measurable" in failed.reason
    nan, = check_criteria(METRICS, {"roc_auc": {"min": 0.5}})
    assert not nan.passed and nan.value is None
    optional, = check_criteria(METRICS, {"closed_frame_f1": {"min": 0.9, "optional": True}})
    assert optional.passed and "optional" in optional.reason


def test_required_metric_names_are_known():
    required = {"level_accuracy", "balanced_accuracy", "blink_f1", "blink_precision", "blink_recall",
                "closed_frame_f1", "microsleep_detected", "detection_latency_s", "detection_latency_max_s",
                "undetected_periods", "false_interventions_per_hour", "roc_auc", "appropriate_share", "stage_p95_ms"}
    assert required <= set(METRIC_NAMES)
