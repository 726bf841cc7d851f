"""The installed llama.cpp is checked in a child process: a build this CPU cannot execute is reported
with the signal that killed it and what to do, never a dead test runner."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

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


# AVX-512 (zmm registers) and AMX (tile registers and instructions): what an AMX-reporting Xeon under a
# hypervisor, or a laptop without AVX-512, cannot execute
FORBIDDEN = re.compile(r"%zmm|%tmm|\b(?:tilezero|ldtilecfg|sttilecfg|tileloadd|tilestored|tdpb\w*)\b")


@pytest.mark.slow
def test_installed_llama_cpp_carries_no_avx512_or_amx_code():
    """Stronger than running here: the portable build holds no instruction that another x86-64 machine of
    this workplace (or a laptop) could lack. (A -march=native build on an AVX-512 EPYC holds ~30 000.)"""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    spec = importlib.util.find_spec("llama_cpp")
    libraries = sorted((Path(spec.origin).parent / "lib").glob("lib*.so"))
    assert libraries, "llama_cpp ships no shared libraries?"
    for library in libraries:
        listing = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(library)], capture_output=True,
                                 text=True, check=True).stdout
        found = FORBIDDEN.findall(listing)
        assert not found, f"{library.name}: {len(found)} AVX-512/AMX instructions, e.g. {sorted(set(found))[:5]}"
