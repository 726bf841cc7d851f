"""The evaluation's output files: result.jsonl / JSON written atomically, and report.html rendered by
headless Chromium (tables in the DOM, every embedded PNG decodes, no console error, a real screenshot).

Chromium is a system package: scripts/install_system_deps.sh installs it. Without it these tests fail
(they do not skip), so a CI without the browser cannot pass the report unseen.
"""

from __future__ import annotations

import base64
import json
import math
import re
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from fatigue_llm.evaluation.criteria import check_criteria, verdict
from fatigue_llm.evaluation.metrics import compute_metrics, merge_metrics
from fatigue_llm.evaluation.report import decimate_min_max, write_report
from fatigue_llm.evaluation.results import read_verdict, write_json_atomic, write_results_jsonl
from fatigue_llm.evaluation.types import FrameRecord, Interval, InterventionRecord, Trace, WindowRecord

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_TIMEOUT_S = 120
WINDOW = (1280, 2400)
TITLE = 'Replay <b>fleet</b> & "night" drives'
CRITERIA = {"level_accuracy": {"min": 0.5}, "blink_f1": {"min": 0.99}, "closed_frame_f1": {"min": 0.5},
            "stage_p95_ms": {"max": 50.0}, "roc_auc": {"min": 0.5, "optional": True}}
# Appended to a copy of the report (the report itself has no script): records, once the page has
# loaded, whether each <img> decoded.
IMAGE_PROBE = ('<script>window.addEventListener("load", function () {'
               'var r = []; document.querySelectorAll("img").forEach(function (i) {'
               'r.push([i.complete, i.naturalWidth, i.naturalHeight]); });'
               'var p = document.createElement("pre"); p.id = "img-check"; p.textContent = JSON.stringify(r);'
               'document.body.appendChild(p); });</script>')


# ---------------------------------------------------------------------------------------------- fixtures


def synthetic_trace(name: str, duration_s: float = 600.0, fps: float = 30.0, seed: int = 0,
                    stopped_at: str | None = None) -> Trace:
    """A 10-minute drive: 30 fps EAR with a blink every 4 s, alert -> drowsy -> sleepy -> alert."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, duration_s, 1.0 / fps)
    ear = 0.3 + 0.01 * rng.standard_normal(t.size)
    blinks = [Interval(float(s), float(s) + 0.2, "blink") for s in np.arange(2.0, duration_s - 1.0, 4.0)]
    for b in blinks:
        ear[(t >= b.start) & (t < b.end)] = 0.1
    closed = ear < 0.2
    # perception misses every 9th frame's eye state
    frames = [FrameRecord(float(ti), bool(c), bool(c) if i % 9 else not c)
              for i, (ti, c) in enumerate(zip(t, closed, strict=True))]
    labels = [Interval(0, 200, "ALERT"), Interval(200, 400, "DROWSY"), Interval(400, 500, "SLEEPY"),
              Interval(500, duration_s, "ALERT")]
    windows = []
    for wt in np.arange(5.0, duration_s, 5.0):
        truth = 0 if wt < 200 or wt >= 500 else 1 if wt < 400 else 2
        level = int(np.clip(truth + rng.integers(-1, 2), 0, 3))
        windows.append(WindowRecord(float(wt), truth, level, level + float(rng.random()), {"perclos": 0.1 * truth}))
    slow = t[:: int(fps)]
    return Trace(
        name=name, duration_s=duration_s, frames=frames, windows=windows,
        interventions=[InterventionRecord(60.0, 1, "dashboard_notice", "local_llm"),
                       InterventionRecord(230.0, 1, "suggest_break", "rule"),
                       InterventionRecord(410.0, 2, "audio_chime", "rule"),
                       InterventionRecord(450.5, 3, "alert_audio_haptic", "rule")],
        truth_events=[*blinks, Interval(450.0, 452.0, "microsleep")],
        detected_events=[Interval(b.start + 0.02, b.end, "blink") for b in blinks[::2]]
        + [Interval(450.3, 452.0, "microsleep")],
        truth_levels=labels,
        stage_latency_ms={"perception": list(rng.gamma(2.0, 5.0, 2000)), "policy": list(rng.gamma(2.0, 0.5, 200))},
        llm_tokens_per_s=[18.0, 22.0], stopped_at=stopped_at,
        series={"ear": (t.tolist(), ear.tolist()), "perclos": (slow.tolist(), (slow / duration_s).tolist()),
                "sdlp": (slow.tolist(), (0.2 + 0.01 * np.sin(slow)).tolist())})


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install_system_deps.sh (as root) to install Chromium, "
                    "which renders the evaluation report in this test")
    return CHROMIUM


@pytest.fixture(scope="module")
def fleet() -> list[Trace]:
    return [synthetic_trace("drive_b", seed=1, stopped_at="message 5123: truncated chunk"), synthetic_trace("drive_a")]


@pytest.fixture(scope="module")
def report(tmp_path_factory, fleet) -> tuple[Path, float]:
    metrics = merge_metrics(fleet)
    conditions = check_criteria(metrics, CRITERIA)
    path = tmp_path_factory.mktemp("report") / "report.html"
    start = time.perf_counter()
    write_report(path, fleet, metrics, conditions, TITLE)
    return path, time.perf_counter() - start


def run_chromium(chromium: Path, profile: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(chromium), "--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args, page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"chromium exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def console_errors(stderr: str) -> list[str]:
    """Console output of the page: our report has no script, so any console line is a fault; uncaught
    errors appear as "...:CONSOLE..." lines that say "Uncaught" (or at ERROR level)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


class DomSummary(HTMLParser):
    """Tags with their attributes, text, and whether every non-void element was closed in order."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.open: list[str] = []
        self.mismatched: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open[-1] != tag:
            self.mismatched.append(tag)
        else:
            self.open.pop()

    def handle_data(self, data):
        self.text.append(data)

    def of(self, tag: str) -> list[dict[str, str]]:
        return [attrs for t, attrs in self.tags if t == tag]


def summarise(html_text: str) -> DomSummary:
    dom = DomSummary()
    dom.feed(html_text)
    dom.close()
    return dom


# ---------------------------------------------------------------------------------------------- report


def test_report_is_self_contained_escaped_html5_and_fast(report, fleet):
    path, seconds = report
    text = path.read_text(encoding="utf-8")
    dom = summarise(text)
    assert text.startswith("<!DOCTYPE html>")
    assert dom.mismatched == [] and dom.open == []
    assert not dom.of("script")  # no JavaScript needed
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # no external URL
    images = dom.of("img")
    assert images and all(img["src"].startswith("data:image/png;base64,") for img in images)
    for img in images:  # each embedded PNG is a real PNG
        png = base64.b64decode(img["src"].split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "&lt;b&gt;fleet&lt;/b&gt; &amp; &quot;night&quot;" in text  # the title, escaped
    assert "message 5123: truncated chunk" in text
    assert seconds < 15.0, f"report of two 10-minute drives took {seconds:.1f} s"


def test_report_renders_in_headless_chromium(chromium, report, fleet, tmp_path):
    path, _ = report
    done = run_chromium(chromium, tmp_path / "profile", path, "--dump-dom")
    dom = summarise(done.stdout)
    text = " ".join(dom.text)
    classes = {t.get("class") for t in dom.of("table")}
    assert {"conditions", "metrics", "stages", "per-bag"} <= classes
    assert len(dom.of("img")) == 2 + 2  # confusion matrix, latency histogram, one timeline per trace
    assert "Stopped early:" in text and "drive_b" in text
    assert "FAILED" in text  # blink_f1 >= 0.99 cannot pass
    conditions = check_criteria(merge_metrics(fleet), CRITERIA)
    results = [td.get("class") for td in dom.of("td") if td.get("class") in ("pass", "fail")]
    assert results == ["pass" if c.passed else "fail" for c in conditions]
    assert "pass" in results
    assert [t for t, _ in dom.tags].count("b") == 0  # the title's <b> stayed text
    assert console_errors(done.stderr) == []


def test_every_report_image_decodes_in_the_browser(chromium, report, tmp_path):
    path, _ = report
    probe = tmp_path / "probe.html"
    probe.write_text(path.read_text(encoding="utf-8").replace("</body>", IMAGE_PROBE + "</body>"), encoding="utf-8")
    done = run_chromium(chromium, tmp_path / "profile", probe, "--virtual-time-budget=10000", "--dump-dom")
    found = re.search(r'<pre id="img-check">(.*?)</pre>', done.stdout)
    assert found, f"the probe script did not run:\n{done.stderr[-2000:]}"
    images = json.loads(found.group(1))
    assert len(images) == 4
    assert all(complete and width > 100 and height > 100 for complete, width, height in images), images
    assert console_errors(done.stderr) == []


def test_console_error_check_catches_a_broken_page(chromium, tmp_path):
    # The negative control: the same check does see an uncaught error.
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>x</title></head>'
                    "<body><script>notDefined();</script></body></html>", encoding="utf-8")
    done = run_chromium(chromium, tmp_path / "profile", page, "--dump-dom")
    assert any("Uncaught" in line for line in console_errors(done.stderr))


def test_report_screenshot_is_not_blank(chromium, report, tmp_path):
    path, _ = report
    shot = tmp_path / "report.png"
    run_chromium(chromium, tmp_path / "profile", path, f"--window-size={WINDOW[0]},{WINDOW[1]}",
                 "--hide-scrollbars", f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 20_000
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    grey = pixels[..., :3].mean(axis=2)
    assert grey.std() > 0.05  # text, tables and figures, not an empty page
    assert (grey < 0.5).mean() > 0.01  # some dark ink


def test_decimation_keeps_extremes_and_bounds_points():
    t = np.arange(100_000) / 30.0
    v = np.full(t.size, 0.3)
    v[54_321] = 0.05  # one closed-eye frame in an hour
    v[77_777] = 0.45
    dt, dv = decimate_min_max(t, v, max_points=2000)
    assert dt.size <= 2100 and np.all(np.diff(dt) >= 0)
    assert dv.min() == 0.05 and dv.max() == 0.45
    assert decimate_min_max(t[:10], v[:10])[0].size == 10  # short series untouched


def test_report_of_a_trace_without_camera_or_labels(tmp_path):
    bare = Trace(name="vehicle_only", duration_s=120.0, stage_latency_ms={"policy": [0.4, 0.6]})
    metrics = compute_metrics(bare)
    conditions = check_criteria(metrics, {"blink_f1": {"min": 0.8}, "closed_frame_f1": {"min": 0.8, "optional": True}})
    path = write_report(tmp_path / "report.html", [bare], metrics, conditions, "bare")
    dom = summarise(path.read_text(encoding="utf-8"))
    assert dom.mismatched == [] and len(dom.of("img")) == 3
    assert "not measurable" in " ".join(dom.text)


# ---------------------------------------------------------------------------------------------- results


def test_result_jsonl_has_condition_window_and_verdict_lines(tmp_path, fleet):
    trace = fleet[1]
    metrics = compute_metrics(trace)
    conditions = check_criteria(metrics, CRITERIA)
    path = write_results_jsonl(tmp_path / "out" / "result.jsonl", trace, conditions, verdict(conditions))
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [ln["type"] for ln in (lines[0], lines[-1])] == ["condition", "verdict"]
    assert lines[0]["criteria"][0] == {"metric": "level_accuracy", "op": ">=", "threshold": 0.5}
    windows = lines[1:-1]
    assert len(windows) == len(trace.windows) and all(w["type"] == "window" for w in windows)
    assert set(windows[0]) >= {"t", "features", "predicted_level", "truth_level", "interventions"}
    # Each intervention is listed once, with the first window at or after it.
    listed = [(w["t"], iv["t"]) for w in windows for iv in w["interventions"]]
    assert [iv for _, iv in listed] == [iv.t for iv in trace.interventions]
    assert all(0 <= wt - it < 5.0 for wt, it in listed)
    final = read_verdict(path)
    assert final["passed"] is False and final["stopped_at"] is None
    assert len(final["conditions"]) == len(conditions)
    assert [p.name for p in path.parent.iterdir()] == ["result.jsonl"]  # no temp file left behind


def test_read_verdict_rejects_an_unfinished_run(tmp_path):
    path = tmp_path / "result.jsonl"
    path.write_text('{"type": "condition", "criteria": []}\n{"type": "window", "t": 1.0}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="no verdict"):
        read_verdict(path)


def test_write_json_atomic_is_strict_json(tmp_path):
    path = write_json_atomic(tmp_path / "metrics.json", {"auc": math.nan, "n": np.int64(3), "xs": (1.5, math.inf)})
    assert json.loads(path.read_text(encoding="utf-8")) == {"auc": None, "n": 3, "xs": [1.5, None]}
    write_json_atomic(path, {"again": True})  # replaces the file in place
    assert json.loads(path.read_text(encoding="utf-8")) == {"again": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
