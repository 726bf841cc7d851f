"""Replay evaluation of the fatigue pipeline (issue 10): records, metrics, pass criteria, result files.

Plain Python, no rclpy and no bag I/O: the replay turns a bag into a `Trace`, then

    metrics = compute_metrics(trace)                 # or merge_metrics(traces) for a fleet
    conditions = check_criteria(metrics, scenario["criteria"])
    write_results_jsonl(out / "result.jsonl", trace, conditions, verdict(conditions))
    fatigue_llm.evaluation.report.write_report(out / "report.html", [trace], metrics, conditions, title)

(`report` is imported on its own: it loads matplotlib.)
"""

from fatigue_llm.evaluation.criteria import METRIC_NAMES, ConditionResult, check_criteria, verdict
from fatigue_llm.evaluation.levels import TruthClass, predicted_class, required_level
from fatigue_llm.evaluation.metrics import compute_metrics, merge_metrics
from fatigue_llm.evaluation.results import read_verdict, write_json_atomic, write_results_jsonl
from fatigue_llm.evaluation.types import FrameRecord, Interval, InterventionRecord, Trace, WindowRecord

__all__ = [
    "METRIC_NAMES",
    "ConditionResult",
    "FrameRecord",
    "InterventionRecord",
    "Interval",
    "Trace",
    "TruthClass",
    "WindowRecord",
    "check_criteria",
    "compute_metrics",
    "merge_metrics",
    "predicted_class",
    "read_verdict",
    "required_level",
    "verdict",
    "write_json_atomic",
    "write_results_jsonl",
]
