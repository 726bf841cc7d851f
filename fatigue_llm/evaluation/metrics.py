"""Replay-evaluation metrics: each one a small pure function, and `compute_metrics` / `merge_metrics`
that gather them into one JSON-serialisable dict (NaN -> None: "not measurable").

Definitions (times in seconds, rates per hour):
- closed-eye frames: precision/recall/F1 of ``closed_pred`` against ``closed_true`` over the frames
  whose truth is known.
- events (blinks, microsleeps): one-to-one matching of detected to true intervals; a pair may match
  only when its IoU > 0.2 (the Eyeblink8 / Fogelton & Benesova convention). The matching is optimal,
  not greedy: the Hungarian method (scipy's linear_sum_assignment) picks the most pairs, ties broken by
  the larger total IoU. ``microsleep_detected`` is the share of true microsleeps that any detected
  microsleep overlaps at all (no IoU threshold).
- levels: windows with known truth; a policy level maps to a predicted class (see levels.py); accuracy,
  balanced accuracy (mean recall over the classes present), the 3x3 confusion matrix (rows truth,
  columns predicted), per-class recall, ROC AUC of ``score`` for drowsy-or-worse vs alert
  (``roc_auc``) and sleepy vs the rest (``roc_auc_sleepy``), by the Mann-Whitney rank formula.
- detection latency: for each truth period of DROWSY or SLEEPY (adjacent periods of one class merged,
  clipped to the drive), the time from its onset to the first intervention inside the period whose
  level is at least the class's required level; a period with none is undetected.
- false interventions: interventions at ADVISORY or above, issued inside a labelled ALERT period and
  farther than ``tolerance_s`` from every DROWSY/SLEEPY period (the EU DDAW regulation's +-5 min
  tolerance around a KSS label); per hour of ALERT-labelled driving.
- appropriateness: each intervention issued at a time with known truth is too low, right or too high
  for that truth (levels.APPROPRIATE_LEVELS); shares of the three.
- stage latency: p50/p95/p99 (linear interpolation) per stage; ``stage_p95_ms`` is the worst stage's p95.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata

from fatigue_llm.evaluation.levels import (
    N_CLASSES,
    TRUTH_NAMES,
    TruthClass,
    max_appropriate_level,
    predicted_class,
    required_level,
    truth_from_name,
)
from fatigue_llm.evaluation.types import Interval, InterventionRecord, Trace
from fatigue_llm.intervention.types import Level

EVENT_IOU_THRESHOLD = 0.2
DEFAULT_TOLERANCE_S = 300.0
STAGE_PERCENTILES = (50, 95, 99)

# Every scalar the metrics dict carries at its top level (what pass criteria may name).
SCALAR_METRICS: tuple[str, ...] = (
    "closed_frame_precision",
    "closed_frame_recall",
    "closed_frame_f1",
    "blink_precision",
    "blink_recall",
    "blink_f1",
    "microsleep_precision",
    "microsleep_recall",
    "microsleep_f1",
    "microsleep_detected",
    "level_accuracy",
    "balanced_accuracy",
    *(f"recall_{name}" for name in TRUTH_NAMES),
    "roc_auc",
    "roc_auc_sleepy",
    "detection_latency_s",
    "detection_latency_max_s",
    "undetected_periods",
    "detected_periods",
    "false_interventions",
    "false_interventions_per_hour",
    "appropriate_share",
    "too_low_share",
    "too_high_share",
    "stage_p95_ms",
    "llm_tokens_per_s",
)


# ---------------------------------------------------------------------------------------------- ratios


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when the denominator is 0 (not measurable)."""
    return None if denominator == 0 else numerator / denominator


def precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float | None, float | None, float | None]:
    """Precision, recall and F1 (= 2tp / (2tp + fp + fn), 0 when there are positives but no hit)."""
    return ratio(tp, tp + fp), ratio(tp, tp + fn), ratio(2 * tp, 2 * tp + fp + fn)


# ---------------------------------------------------------------------------------------------- frames


@dataclass
class BinaryCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __iadd__(self, other: BinaryCounts) -> BinaryCounts:
        self.tp, self.fp, self.fn, self.tn = (
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)
        return self


def closed_frame_counts(trace: Trace) -> BinaryCounts:
    """Confusion counts of closed-eye frames over the frames whose truth is known."""
    known = [(f.closed_true, f.closed_pred) for f in trace.frames if f.closed_true is not None]
    truth = np.array([k[0] for k in known], dtype=bool)
    pred = np.array([bool(k[1]) for k in known], dtype=bool)
    return BinaryCounts(tp=int(np.sum(truth & pred)), fp=int(np.sum(~truth & pred)),
                        fn=int(np.sum(truth & ~pred)), tn=int(np.sum(~truth & ~pred)))


# ---------------------------------------------------------------------------------------------- events


def interval_overlap(a: Interval, b: Interval) -> float:
    return max(0.0, min(a.end, b.end) - max(a.start, b.start))


def interval_iou(a: Interval, b: Interval) -> float:
    """Temporal IoU. Two zero-length intervals at the same instant count as identical (IoU 1)."""
    inter = interval_overlap(a, b)
    union = a.duration + b.duration - inter
    if union <= 0.0:
        return 1.0 if a.start == b.start else 0.0
    return inter / union


def overlap_clusters(truth: Sequence[Interval], detected: Sequence[Interval]) -> list[tuple[list[int], list[int]]]:
    """Groups of (truth indices, detected indices) whose intervals chain-overlap in time. Pairs from
    different groups cannot overlap, so each group is matched alone (small matrices on long drives)."""
    items = sorted([(iv.start, iv.end, 0, i) for i, iv in enumerate(truth)]
                   + [(iv.start, iv.end, 1, j) for j, iv in enumerate(detected)])
    clusters: list[tuple[list[int], list[int]]] = []
    cluster_end = -math.inf
    for start, end, side, index in items:
        if not clusters or start > cluster_end:
            clusters.append(([], []))
            cluster_end = end
        cluster_end = max(cluster_end, end)
        clusters[-1][side].append(index)
    return [(t, d) for t, d in clusters if t and d]


def match_intervals(truth: Sequence[Interval], detected: Sequence[Interval],
                    iou_threshold: float = EVENT_IOU_THRESHOLD) -> list[tuple[int, int, float]]:
    """One-to-one matches (truth index, detected index, IoU) with IoU > iou_threshold: as many pairs as
    possible, ties broken by the larger total IoU (Hungarian method), so a second detection on an
    already matched blink is a false positive."""
    matches: list[tuple[int, int, float]] = []
    for t_idx, d_idx in overlap_clusters(truth, detected):
        iou = np.array([[interval_iou(truth[i], detected[j]) for j in d_idx] for i in t_idx])
        eligible = iou > iou_threshold
        if not eligible.any():
            continue
        # Weight = (count bonus + IoU) on eligible pairs: the bonus exceeds any IoU sum, so the
        # assignment maximises the number of pairs first and total IoU second.
        bonus = float(min(len(t_idx), len(d_idx)) + 1)
        rows, cols = linear_sum_assignment(np.where(eligible, bonus + iou, 0.0), maximize=True)
        matches += [(t_idx[r], d_idx[c], float(iou[r, c])) for r, c in zip(rows, cols, strict=True) if eligible[r, c]]
    return sorted(matches)


@dataclass
class EventCounts:
    tp: int = 0
    n_true: int = 0
    n_detected: int = 0
    overlapped: int = 0  # true events that some detection overlaps at all

    def __iadd__(self, other: EventCounts) -> EventCounts:
        self.tp += other.tp
        self.n_true += other.n_true
        self.n_detected += other.n_detected
        self.overlapped += other.overlapped
        return self

    @property
    def fp(self) -> int:
        return self.n_detected - self.tp

    @property
    def fn(self) -> int:
        return self.n_true - self.tp


def events_of_kind(events: Iterable[Interval], kind: str) -> list[Interval]:
    return sorted((e for e in events if e.kind == kind), key=lambda e: (e.start, e.end))


def count_overlapped(truth: Sequence[Interval], detected: Sequence[Interval]) -> int:
    """True intervals that at least one detected interval overlaps (IoU > 0)."""
    return sum(1 for t_idx, d_idx in overlap_clusters(truth, detected) for i in t_idx
               if any(interval_iou(truth[i], detected[j]) > 0 for j in d_idx))


def event_counts(trace: Trace, kind: str, iou_threshold: float = EVENT_IOU_THRESHOLD) -> EventCounts:
    truth = events_of_kind(trace.truth_events, kind)
    detected = events_of_kind(trace.detected_events, kind)
    return EventCounts(tp=len(match_intervals(truth, detected, iou_threshold)), n_true=len(truth),
                       n_detected=len(detected), overlapped=count_overlapped(truth, detected))


# ---------------------------------------------------------------------------------------------- windows


def confusion_matrix(truth: Sequence[int], predicted: Sequence[int], n_classes: int = N_CLASSES) -> np.ndarray:
    """Counts, rows = truth class, columns = predicted class."""
    t = np.asarray(truth, dtype=int)
    p = np.asarray(predicted, dtype=int)
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_recall(cm: np.ndarray) -> list[float | None]:
    return [ratio(float(cm[k, k]), float(cm[k].sum())) for k in range(cm.shape[0])]


def accuracy(cm: np.ndarray) -> float | None:
    return ratio(float(np.trace(cm)), float(cm.sum()))


def balanced_accuracy(cm: np.ndarray) -> float | None:
    """Mean recall over the truth classes that occur (classes absent from the truth are left out)."""
    recalls = [r for r in per_class_recall(cm) if r is not None]
    return float(np.mean(recalls)) if recalls else None


def roc_auc(positive: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve by the Mann-Whitney U formula (ties count half); None without both
    classes. Non-finite scores are left out."""
    pos = np.asarray(positive, dtype=bool)
    s = np.asarray(scores, dtype=float)
    finite = np.isfinite(s)
    pos, s = pos[finite], s[finite]
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(s)  # average ranks for ties
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# ---------------------------------------------------------------------------------------------- periods


@dataclass(frozen=True)
class Period:
    start: float
    end: float
    truth: int


def truth_periods(trace: Trace) -> list[Period]:
    """The truth level periods, sorted, clipped to the drive (when its duration is known) and with
    touching or overlapping periods of one class merged. Kinds that are no truth class are ignored."""
    periods: list[Period] = []
    limit = trace.duration_s if trace.duration_s > 0 else math.inf
    for iv in sorted(trace.truth_levels, key=lambda iv: (iv.start, iv.end)):
        truth = truth_from_name(iv.kind)
        start, end = float(max(0.0, iv.start)), float(min(iv.end, limit))
        if truth is None or end <= start:
            continue
        if periods and periods[-1].truth == truth and start <= periods[-1].end:
            periods[-1] = Period(periods[-1].start, max(end, periods[-1].end), truth)
        else:
            periods.append(Period(start, end, truth))
    return periods


def truth_at(periods: Sequence[Period], t: float) -> int | None:
    """Truth class at time t (at a boundary the later period wins); None where unlabelled."""
    found = None
    for p in periods:
        if p.start <= t <= p.end:
            found = p.truth
    return found


def sorted_interventions(trace: Trace) -> list[InterventionRecord]:
    return sorted(trace.interventions, key=lambda iv: (iv.t, iv.level, iv.action, iv.source))


def detection_latencies(periods: Sequence[Period],
                        interventions: Sequence[InterventionRecord]) -> tuple[list[float], int]:
    """Latency (s) of each detected DROWSY/SLEEPY period and the number of undetected ones: the first
    intervention inside the period with level >= the class's required level."""
    latencies: list[float] = []
    undetected = 0
    for p in periods:
        if p.truth < TruthClass.DROWSY:
            continue
        need = required_level(p.truth)
        hit = next((iv.t for iv in interventions if p.start <= iv.t <= p.end and iv.level >= need), None)
        if hit is None:
            undetected += 1
        else:
            latencies.append(float(hit - p.start))
    return latencies, undetected


def false_intervention_count(periods: Sequence[Period], interventions: Sequence[InterventionRecord],
                             tolerance_s: float) -> int:
    """Interventions >= ADVISORY inside labelled ALERT time and more than tolerance_s from any
    DROWSY/SLEEPY period."""
    fatigue = [(p.start - tolerance_s, p.end + tolerance_s) for p in periods if p.truth >= TruthClass.DROWSY]
    alert = [(p.start, p.end) for p in periods if p.truth == TruthClass.ALERT]

    def inside(spans: list[tuple[float, float]], t: float) -> bool:
        return any(s <= t <= e for s, e in spans)

    return sum(1 for iv in interventions
               if iv.level >= Level.ADVISORY and inside(alert, iv.t) and not inside(fatigue, iv.t))


def alert_seconds(periods: Sequence[Period]) -> float:
    return float(sum(p.end - p.start for p in periods if p.truth == TruthClass.ALERT))


def appropriateness(level: int, truth: int) -> str:
    """'too_low', 'right' or 'too_high' for an intervention level given the truth class."""
    if level < required_level(truth):
        return "too_low"
    if level > max_appropriate_level(truth):
        return "too_high"
    return "right"


# ---------------------------------------------------------------------------------------------- stages


def percentiles(values: Sequence[float], qs: Sequence[float] = STAGE_PERCENTILES) -> dict[str, float | None]:
    """p<q> of the finite values (linear interpolation); None when there are none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {f"p{q}": None for q in qs}
    return {f"p{q}": float(x) for q, x in zip(qs, np.percentile(v, qs), strict=True)}


def finite_mean(values: Sequence[float]) -> float | None:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


# ---------------------------------------------------------------------------------------------- pooling


@dataclass
class MetricPool:
    """The records of one or more traces, pooled so every metric is recomputed from them (a fleet's
    precision is pooled TP/FP, not the mean of per-bag precisions)."""

    tolerance_s: float = DEFAULT_TOLERANCE_S
    duration_s: float = 0.0
    frames: BinaryCounts = field(default_factory=BinaryCounts)
    blinks: EventCounts = field(default_factory=EventCounts)
    microsleeps: EventCounts = field(default_factory=EventCounts)
    window_truth: list[int] = field(default_factory=list)
    window_predicted: list[int] = field(default_factory=list)
    window_score: list[float] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    undetected: int = 0
    false_interventions: int = 0
    alert_s: float = 0.0
    judged: dict[str, int] = field(default_factory=lambda: {"too_low": 0, "right": 0, "too_high": 0})
    stage_ms: dict[str, list[float]] = field(default_factory=dict)
    tokens_per_s: list[float] = field(default_factory=list)

    def add(self, trace: Trace) -> None:
        self.duration_s += trace.duration_s
        self.frames += closed_frame_counts(trace)
        self.blinks += event_counts(trace, "blink")
        self.microsleeps += event_counts(trace, "microsleep")
        for w in trace.windows:
            if w.truth_level is not None:
                self.window_truth.append(int(TruthClass(w.truth_level)))
                self.window_predicted.append(predicted_class(w.predicted_level))
                self.window_score.append(float(w.score))
        periods = truth_periods(trace)
        interventions = sorted_interventions(trace)
        latencies, undetected = detection_latencies(periods, interventions)
        self.latencies_s += latencies
        self.undetected += undetected
        self.false_interventions += false_intervention_count(periods, interventions, self.tolerance_s)
        self.alert_s += alert_seconds(periods)
        for iv in interventions:
            truth = truth_at(periods, iv.t)
            if truth is not None:
                self.judged[appropriateness(iv.level, truth)] += 1
        for stage in sorted(trace.stage_latency_ms):
            self.stage_ms.setdefault(stage, []).extend(trace.stage_latency_ms[stage])
        self.tokens_per_s += trace.llm_tokens_per_s

    def metrics(self) -> dict:
        return {**self._frame_and_event_metrics(), **self._level_metrics(), **self._intervention_metrics(),
                **self._stage_metrics()}

    def _frame_and_event_metrics(self) -> dict:
        f = self.frames
        out: dict = dict(zip(("closed_frame_precision", "closed_frame_recall", "closed_frame_f1"),
                             precision_recall_f1(f.tp, f.fp, f.fn), strict=True))
        out["closed_frame_counts"] = {"tp": f.tp, "fp": f.fp, "fn": f.fn, "tn": f.tn}
        for name, ev in (("blink", self.blinks), ("microsleep", self.microsleeps)):
            p, r, f1 = precision_recall_f1(ev.tp, ev.fp, ev.fn)
            out |= {f"{name}_precision": p, f"{name}_recall": r, f"{name}_f1": f1}
            out[f"{name}_counts"] = {"tp": ev.tp, "fp": ev.fp, "fn": ev.fn, "n_true": ev.n_true,
                                     "n_detected": ev.n_detected, "overlapped": ev.overlapped}
        out["microsleep_detected"] = ratio(self.microsleeps.overlapped, self.microsleeps.n_true)
        return out

    def _level_metrics(self) -> dict:
        cm = confusion_matrix(self.window_truth, self.window_predicted)
        truth = np.asarray(self.window_truth, dtype=int)
        out: dict = {"windows_evaluated": len(self.window_truth), "level_accuracy": accuracy(cm),
                     "balanced_accuracy": balanced_accuracy(cm), "confusion_matrix": cm.tolist()}
        out |= {f"recall_{name}": r for name, r in zip(TRUTH_NAMES, per_class_recall(cm), strict=True)}
        out["roc_auc"] = roc_auc(truth >= TruthClass.DROWSY, self.window_score)
        out["roc_auc_sleepy"] = roc_auc(truth >= TruthClass.SLEEPY, self.window_score)
        return out

    def _intervention_metrics(self) -> dict:
        lat = self.latencies_s
        alert_h = self.alert_s / 3600.0
        n_judged = sum(self.judged.values())
        return {
            "detection_latency_s": float(np.mean(lat)) if lat else None,
            "detection_latency_max_s": float(np.max(lat)) if lat else None,
            "detection_latencies_s": list(lat),
            "detected_periods": len(lat),
            "undetected_periods": self.undetected,
            "false_interventions": self.false_interventions,
            "alert_hours": alert_h,
            "false_interventions_per_hour": ratio(self.false_interventions, alert_h),
            "tolerance_s": self.tolerance_s,
            "appropriateness_counts": dict(self.judged),
            "appropriate_share": ratio(self.judged["right"], n_judged),
            "too_low_share": ratio(self.judged["too_low"], n_judged),
            "too_high_share": ratio(self.judged["too_high"], n_judged),
        }

    def _stage_metrics(self) -> dict:
        stages = {s: {**percentiles(v), "n": len(v)} for s, v in sorted(self.stage_ms.items())}
        p95s = [s["p95"] for s in stages.values() if s["p95"] is not None]
        return {"stage_latency_ms": stages, "stage_p95_ms": max(p95s) if p95s else None,
                "llm_tokens_per_s": finite_mean(self.tokens_per_s)}


# ---------------------------------------------------------------------------------------------- public


def json_safe(obj: object) -> object:
    """A copy that json.dumps accepts strictly: NaN/inf -> None, numpy scalars/arrays -> Python, tuples
    -> lists, keys -> str."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def compute_metrics(trace: Trace, tolerance_s: float = DEFAULT_TOLERANCE_S) -> dict:
    """All metrics of one trace (see the module docstring); None marks what it cannot measure."""
    pool = MetricPool(tolerance_s=tolerance_s)
    pool.add(trace)
    return json_safe({"name": trace.name, "n_traces": 1, "duration_s": trace.duration_s,
                      "stopped_at": trace.stopped_at, **pool.metrics()})


def trace_order(trace: Trace) -> tuple:
    """Sort key that makes a fleet's pooling order independent of the order runs finished in."""
    return (trace.name, trace.duration_s, len(trace.frames), len(trace.windows), len(trace.interventions))


def per_bag_row(metrics: dict) -> dict:
    """The headline numbers of one trace's metrics, for the fleet table."""
    return {"name": metrics["name"], "duration_s": metrics["duration_s"], "stopped_at": metrics["stopped_at"],
            **{k: metrics[k] for k in SCALAR_METRICS}}


def merge_metrics(traces: Sequence[Trace], tolerance_s: float = DEFAULT_TOLERANCE_S) -> dict:
    """Fleet metrics recomputed from the pooled records of all traces (events are matched and periods
    judged within their own trace), plus ``per_bag`` rows. Traces are pooled in name order, so a parallel
    run and a serial run give equal results."""
    ordered = sorted(traces, key=trace_order)
    pool = MetricPool(tolerance_s=tolerance_s)
    for trace in ordered:
        pool.add(trace)
    per_bag = [per_bag_row(compute_metrics(t, tolerance_s)) for t in ordered]
    stopped = [{"name": t.name, "stopped_at": t.stopped_at} for t in ordered if t.stopped_at is not None]
    return json_safe({"name": "fleet", "n_traces": len(ordered), "duration_s": pool.duration_s,
                      "stopped_at": None, "stopped": stopped, **pool.metrics(), "per_bag": per_bag})
