"""One self-contained ``report.html`` of a replay evaluation: figures are matplotlib PNGs embedded as
base64 data URIs (no external URL, no JavaScript), all text escaped.

Sections: verdict and pass/fail conditions, "stopped at" warnings for traces that ended early, metrics,
per-stage latency, a per-bag table (fleet runs), the confusion matrix and detection-latency histogram,
and per trace a timeline of EAR / PERCLOS / SDLP with truth level bands shaded and interventions marked
by vertical lines coloured by level. Long series are decimated (min/max per bucket, so blinks stay
visible) to keep a long drive's report fast.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from fatigue_llm.evaluation.criteria import ConditionResult, verdict
from fatigue_llm.evaluation.levels import LEVEL_NAMES, TRUTH_NAMES
from fatigue_llm.evaluation.metrics import SCALAR_METRICS, truth_periods
from fatigue_llm.evaluation.results import write_text_atomic
from fatigue_llm.evaluation.types import Trace

PREFERRED_SERIES = ("ear", "perclos", "sdlp")
MAX_SERIES_PANELS = 4
MAX_TIMELINES = 6  # fleet runs: timelines of the first traces only (by name), the tables cover all
MAX_POINTS = 2000  # per plotted series, after min/max decimation
DPI = 80
TRUTH_COLOURS = {"alert": "#d8f0d8", "drowsy": "#ffe9a8", "sleepy": "#f6b3b3"}
LEVEL_COLOURS = {"INFO": "#9e9e9e", "ADVISORY": "#1f77b4", "WARNING": "#ff7f0e", "CRITICAL": "#d62728"}
PER_BAG_COLUMNS = ("level_accuracy", "balanced_accuracy", "blink_f1", "closed_frame_f1", "detection_latency_s",
                   "undetected_periods", "false_interventions_per_hour", "appropriate_share")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#11691b;font-weight:bold}.fail{color:#b00020;font-weight:bold}
.verdict{display:inline-block;padding:6px 14px;border-radius:4px;font-weight:bold;color:#fff}
.verdict.pass{background:#2e7d32;color:#fff}.verdict.fail{background:#c62828;color:#fff}
.warning{border:2px solid #e0a800;background:#fff8e1;padding:8px 12px;margin:8px 0;border-radius:4px}
img{max-width:100%;height:auto;display:block;margin:8px 0}
.scroll{overflow-x:auto}.row{display:flex;flex-wrap:wrap;gap:24px}
"""


# ---------------------------------------------------------------------------------------------- figures


def decimate_min_max(times: Sequence[float], values: Sequence[float], max_points: int = MAX_POINTS
                     ) -> tuple[np.ndarray, np.ndarray]:
    """At most ~max_points samples: per bucket its minimum and its maximum, in time order."""
    t = np.asarray(times, dtype=float)
    v = np.asarray(values, dtype=float)
    if t.size <= max_points:
        return t, v
    bucket = int(np.ceil(t.size / (max_points // 2)))
    n_full = t.size // bucket * bucket
    tb, vb = t[:n_full].reshape(-1, bucket), v[:n_full].reshape(-1, bucket)
    rows = np.arange(tb.shape[0])
    lo = np.argmin(np.where(np.isnan(vb), np.inf, vb), axis=1)  # NaN (no face) never wins
    hi = np.argmax(np.where(np.isnan(vb), -np.inf, vb), axis=1)
    first, second = np.minimum(lo, hi), np.maximum(lo, hi)
    idx = np.stack([first, second], axis=1)
    out_t = np.concatenate([tb[rows[:, None], idx].ravel(), t[n_full:]])
    out_v = np.concatenate([vb[rows[:, None], idx].ravel(), v[n_full:]])
    return out_t, out_v


def png_data_uri(fig: Figure) -> str:
    FigureCanvasAgg(fig)  # attach an Agg canvas: no pyplot, no global backend state
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def series_to_plot(trace: Trace) -> list[str]:
    names = [n for n in PREFERRED_SERIES if n in trace.series]
    names += sorted(n for n in trace.series if n not in PREFERRED_SERIES)
    return names[:MAX_SERIES_PANELS]


def timeline_figure(trace: Trace) -> Figure:
    """Series panels sharing the time axis, truth bands shaded, interventions as coloured lines."""
    names = series_to_plot(trace) or ["(no series)"]
    fig = Figure(figsize=(11, 1.9 * len(names) + 0.8), layout="constrained")
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    periods = truth_periods(trace)
    for ax, name in zip(axes, names, strict=True):
        if name in trace.series:
            t, v = decimate_min_max(*trace.series[name])
            ax.plot(t, v, lw=0.8, color="#333")
        ax.set_ylabel(name)
        for p in periods:
            ax.axvspan(p.start, p.end, color=TRUTH_COLOURS[TRUTH_NAMES[p.truth]], alpha=0.8, lw=0, zorder=0)
        for level, level_name in enumerate(LEVEL_NAMES):
            ts = [iv.t for iv in trace.interventions if iv.level == level]
            if ts:
                ax.vlines(ts, 0, 1, transform=ax.get_xaxis_transform(), colors=LEVEL_COLOURS[level_name], lw=1.2)
    axes[-1].set_xlabel("time since start of drive [s]")
    axes[-1].set_xlim(0, max(trace.duration_s, 1e-6))
    handles = [Patch(color=c, label=f"truth {n}") for n, c in TRUTH_COLOURS.items()]
    handles += [Patch(color=c, label=n) for n, c in LEVEL_COLOURS.items()]
    fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), fontsize=7, frameon=False)
    fig.suptitle(trace.name, fontsize=10)
    return fig


def confusion_figure(cm: Sequence[Sequence[int]]) -> Figure:
    counts = np.asarray(cm, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    fig = Figure(figsize=(4.2, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, f"{int(n)}", ha="center", va="center", color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(TRUTH_NAMES)), TRUTH_NAMES)
    ax.set_yticks(range(len(TRUTH_NAMES)), TRUTH_NAMES)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("truth class")
    ax.set_title("windows (colour: share of truth row)", fontsize=9)
    return fig


def latency_figure(latencies_s: Sequence[float]) -> Figure:
    fig = Figure(figsize=(4.8, 3.6), layout="constrained")
    ax = fig.subplots()
    if latencies_s:
        ax.hist(latencies_s, bins=min(20, max(1, len(latencies_s))), color="#1f77b4", edgecolor="white")
    else:
        ax.text(0.5, 0.5, "no detected fatigue period", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("detection latency [s]")
    ax.set_ylabel("periods")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


# ---------------------------------------------------------------------------------------------- html


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[object]], css_class: str = "") -> str:
    """An HTML table; numbers right-aligned; a cell given as ('class', text) gets that class."""
    def cell(v: object) -> str:
        if isinstance(v, tuple):
            return f'<td class="{esc(v[0])}">{esc(v[1])}</td>'
        num = isinstance(v, int | float) and not isinstance(v, bool)
        return f'<td class="num">{esc(fmt(v))}</td>' if num else f"<td>{esc(fmt(v))}</td>"

    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f'<table class="{esc(css_class)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{esc(alt)}">'


def conditions_section(conditions: Sequence[ConditionResult]) -> str:
    passed = verdict(list(conditions))
    banner = f'<p><span class="verdict {"pass" if passed else "fail"}">{"PASSED" if passed else "FAILED"}</span></p>'
    rows = [(c.metric, c.op, c.threshold, c.value, ("pass" if c.passed else "fail", "PASS" if c.passed else "FAIL"),
             c.reason) for c in conditions]
    body = table(("metric", "op", "threshold", "value", "result", "reason"), rows, "conditions") if rows else \
        "<p>No pass criteria given.</p>"
    return f"<h2>Pass criteria</h2>{banner}{body}"


def stopped_section(traces: Sequence[Trace]) -> str:
    return "".join(f'<div class="warning"><strong>Stopped early:</strong> {esc(t.name)} stopped at '
                   f"{esc(t.stopped_at)}; its metrics cover only the part that was read.</div>"
                   for t in traces if t.stopped_at is not None)


def metrics_section(metrics: Mapping[str, object]) -> str:
    rows = [(name, metrics.get(name)) for name in SCALAR_METRICS]
    out = "<h2>Metrics</h2>" + table(("metric", "value"), rows, "metrics")
    stages = metrics.get("stage_latency_ms") or {}
    if stages:
        stage_rows = [(s, v.get("p50"), v.get("p95"), v.get("p99"), v.get("n")) for s, v in stages.items()]
        out += "<h2>Stage latency [ms]</h2>" + table(("stage", "p50", "p95", "p99", "n"), stage_rows, "stages")
    return out


def per_bag_section(metrics: Mapping[str, object]) -> str:
    per_bag = metrics.get("per_bag") or []
    if not per_bag:
        return ""
    rows = [(r["name"], r["duration_s"], r.get("stopped_at"), *(r.get(k) for k in PER_BAG_COLUMNS)) for r in per_bag]
    per_bag_table = table(("bag", "duration_s", "stopped_at", *PER_BAG_COLUMNS), rows, "per-bag")
    return f'<h2>Per bag</h2><div class="scroll">{per_bag_table}</div>'


def figures_section(traces: Sequence[Trace], metrics: Mapping[str, object]) -> str:
    cm = metrics.get("confusion_matrix") or [[0] * len(TRUTH_NAMES) for _ in TRUTH_NAMES]
    confusion = img(png_data_uri(confusion_figure(cm)), "confusion matrix of truth vs predicted class")
    latency = img(png_data_uri(latency_figure(list(metrics.get("detection_latencies_s") or []))),
                  "histogram of detection latencies")
    out = f'<h2>Fatigue levels and detection latency</h2><div class="row">{confusion}{latency}</div>'
    shown = sorted(traces, key=lambda t: t.name)[:MAX_TIMELINES]
    out += "<h2>Timelines</h2>"
    if len(traces) > len(shown):
        out += f"<p>Showing {len(shown)} of {len(traces)} traces (first by name).</p>"
    out += "".join(img(png_data_uri(timeline_figure(t)), f"timeline of {t.name}") for t in shown)
    return out


def render_report(traces: Sequence[Trace], metrics: Mapping[str, object], conditions: Sequence[ConditionResult],
                  title: str) -> str:
    body = (f"<h1>{esc(title)}</h1>"
            f"<p>{len(traces)} trace(s), {fmt(metrics.get('duration_s'))} s of driving, "
            f"false-intervention tolerance ±{fmt(metrics.get('tolerance_s'))} s.</p>"
            + stopped_section(traces) + conditions_section(conditions) + metrics_section(metrics)
            + per_bag_section(metrics) + figures_section(traces, metrics))
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def write_report(path: str | os.PathLike, traces: Sequence[Trace], metrics: Mapping[str, object],
                 conditions: Sequence[ConditionResult], title: str) -> Path:
    """Write the report (atomically) and return its path."""
    return write_text_atomic(path, render_report(traces, metrics, conditions, title))
