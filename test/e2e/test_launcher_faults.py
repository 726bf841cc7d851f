"""The launcher with real child processes that crash with real signals (test/e2e/fault_child.py):
a dead node is named with its exit code or signal and its last lines, a respawning node comes back
after its delay, stop() cancels a pending respawn, and a node that stays dead fails the launch."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from fatigue_llm.demo import NodeLogFilter
from fatigue_llm.nodeset import NodeSpec
from fatigue_llm.ros.launcher import LAST_LINES, Launcher, run_launcher

CHILD = "test.e2e.fault_child"
CONFIG = f"{CHILD}:FaultConfig"


def spec(name: str, respawn: bool = False, delay: float = 0.0) -> NodeSpec:
    return NodeSpec(name=name, executable=name, module=CHILD, config=CONFIG, respawn=respawn, respawn_delay=delay)


def make_launcher(repo: Path, tmp_path: Path, behaviour: dict[str, dict], specs: tuple[NodeSpec, ...],
                  out: io.TextIOBase | None = None) -> Launcher:
    """A launcher of fault children; ``behaviour`` is each node's FaultConfig parameters."""
    document = {name: {"ros__parameters": {"starts_file": str(tmp_path / f"{name}.starts"), **params}}
                for name, params in behaviour.items()}
    params_file = tmp_path / "faults.yaml"
    params_file.write_text(yaml.safe_dump(document))
    # the child runs `python -m test.e2e.fault_child` from wherever pytest was started
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    return Launcher("faults", params_file, {}, out=out or io.StringIO(), env=env, specs=specs)


def starts(tmp_path: Path, name: str) -> list[int]:
    path = tmp_path / f"{name}.starts"
    return [int(pid) for pid in path.read_text().split()] if path.exists() else []


def until(condition: Callable[[], bool], timeout_s: float = 8.0, poll: Launcher | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        if poll is not None:
            poll.poll()
        time.sleep(0.05)


def test_segfault_is_reported_with_last_lines_and_the_node_respawned(repo, tmp_path):
    launcher = make_launcher(repo, tmp_path, {"crash": {"lines": 25, "crashes": 2}, "steady": {"crashes": 0}},
                             (spec("crash", respawn=True, delay=0.5), spec("steady")))
    stop = threading.Event()
    try:
        launcher.start()
        waiter = threading.Thread(target=launcher.wait, args=(stop, 0.05))
        waiter.start()
        until(lambda: launcher.restarts["crash"] >= 1)
        assert time.time() - launcher.failures[0].at >= 0.5  # restarted after the delay, not at once
        until(lambda: "crash start 3 ready" in launcher.out.getvalue())
        assert waiter.is_alive()  # the wait loop kept watching the whole time
    finally:
        stop.set()
        code = launcher.stop()
    waiter.join(timeout=5)
    text = launcher.out.getvalue()
    assert code == 0, text  # a respawning node's deaths do not fail the launch
    assert launcher.restarts == {"crash": 2, "steady": 0}
    assert len(set(starts(tmp_path, "crash"))) == 3 and len(starts(tmp_path, "steady")) == 1

    first, second = launcher.failures
    assert (first.name, first.code, first.signal, first.respawn) == ("crash", -11, "SIGSEGV", True)
    assert first.last_lines == tuple(f"[INFO] crash start 1 line {i}" for i in range(26 - LAST_LINES, 26))
    assert second.last_lines[-1] == "[INFO] crash start 2 line 25" and second.at > first.at
    assert "[launch] crash died: killed by signal SIGSEGV (-11)\n" in text
    report = text.split("[launch] crash died: killed by signal SIGSEGV (-11)\n", 1)[1]
    assert report.startswith("[launch]   last 20 lines of crash:\n[launch]     [INFO] crash start 1 line 6\n")
    assert "[launch]     [INFO] crash start 1 line 25\n" in report
    assert "[launch] respawning crash in 0.5 s (restart #1)" in text
    assert "[launch] respawning crash in 0.5 s (restart #2)" in text
    assert "steady died" not in text and "all nodes stopped" in text


def test_stop_during_the_respawn_delay_cancels_the_respawn(repo, tmp_path):
    launcher = make_launcher(repo, tmp_path, {"crash": {"crashes": -1, "fail": "SIGABRT"}},
                             (spec("crash", respawn=True, delay=30.0),))
    stop = threading.Event()  # never set: the wait loop must end because stop() ended everything
    launcher.start()
    waiter = threading.Thread(target=launcher.wait, args=(stop, 0.05))
    waiter.start()
    until(lambda: "respawning crash in 30 s (restart #1)" in launcher.out.getvalue())
    began = time.monotonic()
    assert launcher.stop() == 0
    assert time.monotonic() - began < 2.0
    waiter.join(timeout=2)
    assert not waiter.is_alive()
    assert not launcher.poll()
    time.sleep(0.3)
    assert starts(tmp_path, "crash") == [starts(tmp_path, "crash")[0]] and launcher.restarts["crash"] == 0
    assert [(f.signal, f.code) for f in launcher.failures] == [("SIGABRT", -6)]


def test_a_node_that_stays_dead_fails_the_launch(repo, tmp_path):
    launcher = make_launcher(repo, tmp_path, {"bad": {"fail": "3"}, "good": {"crashes": 0}},
                             (spec("bad"), spec("good")))
    began = time.monotonic()
    code = run_launcher(launcher, duration_s=2.0)  # "good" keeps the launch up until the duration ends
    text = launcher.out.getvalue()
    assert code == 3, text
    assert time.monotonic() - began >= 2.0
    assert "[launch] bad died: exit code 3\n" in text and "[launch]     [INFO] bad start 1 line 3\n" in text
    assert "respawning" not in text and launcher.restarts["bad"] == 0
    assert [(f.name, f.code, f.signal, f.respawn) for f in launcher.failures] == [("bad", 3, None, False)]


def test_when_every_node_is_dead_the_launch_ends_with_the_signal_status(repo, tmp_path):
    launcher = make_launcher(repo, tmp_path, {"bad": {"fail": "SIGILL"}}, (spec("bad"),))
    assert run_launcher(launcher) == 128 + 4
    assert "[launch] bad died: killed by signal SIGILL (-4)" in launcher.out.getvalue()


def test_demo_filter_hides_live_info_lines_but_not_the_death_report(repo, tmp_path):
    shown = io.StringIO()
    launcher = make_launcher(repo, tmp_path, {"bad": {"fail": "SIGILL", "lines": 2}}, (spec("bad"),),
                             out=NodeLogFilter(shown))
    launcher.start()
    until(lambda: not launcher.poll() and launcher.failures, poll=launcher)
    launcher.stop()
    text = shown.getvalue()
    assert "[bad] [INFO]" not in text  # the live stream stays quiet, the report does not
    assert ("[launch] bad died: killed by signal SIGILL (-4)\n[launch]   last 2 lines of bad:\n"
            "[launch]     [INFO] bad start 1 line 1\n[launch]     [INFO] bad start 1 line 2\n") in text
