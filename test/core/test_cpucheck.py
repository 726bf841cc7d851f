"""The installed llama.cpp is checked in a child process: a build this CPU cannot execute is reported
with the signal that killed it and what to do, never a dead test runner."""

from __future__ import annotations

import sys

import pytest

from fatigue_llm.llm.cpucheck import check_llama_cpu, exit_reason


@pytest.mark.slow
def test_installed_llama_cpp_executes_on_this_cpu():
    result = check_llama_cpu()
    if not result.ok:
        pytest.fail(f"{result.summary}\n{result.output}")
    assert "ok q8_0" in result.summary and "ok q4_0" in result.summary and "ok as_shipped" in result.summary


def test_a_child_killed_by_sigill_is_reported_with_the_signal_and_the_fix():
    # a real SIGILL in a real process, as a native build on an AMX-reporting Xeon dies
    dying = [sys.executable, "-c", "import os, signal; print('checking q8_0 ...', flush=True); "
                                   "os.kill(os.getpid(), signal.SIGILL)"]
    result = check_llama_cpu(command=dying)
    assert not result.ok
    assert "killed by signal SIGILL (-4)" in result.summary
    assert "checking q8_0" in result.summary       # where it died
    assert "make setup" in result.summary           # what to do


def test_exit_reasons_name_signals_and_codes():
    assert exit_reason(-11) == "killed by signal SIGSEGV (-11)"
    assert exit_reason(3) == "exit code 3"
