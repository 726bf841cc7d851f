"""Result files of a replay, each written atomically (temp file in the same folder + os.replace), so a
crash never leaves half a file where a reader expects a whole one.

``result.jsonl`` follows driving_log_replayer's shape: a first "condition" line (the scenario's
criteria), one "window" line per feature window, and a last "verdict" line that a CLI reads.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from fatigue_llm.evaluation.criteria import ConditionResult
from fatigue_llm.evaluation.metrics import json_safe
from fatigue_llm.evaluation.types import InterventionRecord, Trace, WindowRecord


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; results are for everyone to read
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def dumps_line(obj: object) -> str:
    return json.dumps(json_safe(obj), allow_nan=False, ensure_ascii=False)


def write_json_atomic(path: str | os.PathLike, obj: object) -> Path:
    """Strict JSON (NaN -> null), indented, atomically."""
    return write_text_atomic(path, json.dumps(json_safe(obj), allow_nan=False, indent=2, ensure_ascii=False) + "\n")


def intervention_json(iv: InterventionRecord) -> dict:
    return {"t": iv.t, "level": iv.level, "action": iv.action, "source": iv.source}


def window_lines(windows: Sequence[WindowRecord], interventions: Sequence[InterventionRecord]
                 ) -> tuple[list[dict], list[dict]]:
    """One dict per window, each with the interventions issued since the previous window up to and
    including its own time; and the interventions after the last window."""
    ordered = sorted(interventions, key=lambda iv: iv.t)
    lines: list[dict] = []
    k = 0
    for w in sorted(windows, key=lambda w: w.t):
        issued = []
        while k < len(ordered) and ordered[k].t <= w.t:
            issued.append(intervention_json(ordered[k]))
            k += 1
        lines.append({"type": "window", "t": w.t, "features": dict(w.features), "predicted_level": w.predicted_level,
                      "truth_level": w.truth_level, "score": w.score, "interventions": issued})
    return lines, [intervention_json(iv) for iv in ordered[k:]]


def write_results_jsonl(path: str | os.PathLike, trace: Trace, conditions: Iterable[ConditionResult],
                        verdict: bool) -> Path:
    """result.jsonl: condition line, window lines, verdict line (see the module docstring)."""
    conditions = list(conditions)
    criteria = [{"metric": c.metric, "op": c.op, "threshold": c.threshold} for c in conditions]
    windows, trailing = window_lines(trace.windows, trace.interventions)
    lines = [{"type": "condition", "trace": trace.name, "criteria": criteria}, *windows,
             {"type": "verdict", "trace": trace.name, "passed": bool(verdict),
              "conditions": [c.to_json_dict() for c in conditions], "stopped_at": trace.stopped_at,
              "interventions_after_last_window": trailing}]
    return write_text_atomic(path, "".join(dumps_line(line) + "\n" for line in lines))


def read_verdict(path: str | os.PathLike) -> dict:
    """The verdict line of a result.jsonl; ValueError when the file has none (an unfinished run)."""
    verdict = None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
            if record.get("type") == "verdict":
                verdict = record
    if verdict is None:
        raise ValueError(f"{path}: no verdict line (the run did not finish)")
    return verdict
