"""Test-wide setup: keep DDS traffic of this test run on its own domain and on this host."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from fatigue_llm.ros.environment import apply_local_dds_defaults

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# A domain of our own per test session, so other ROS graphs on the machine (a demo, another
# test run) neither see our messages nor feed theirs into our assertions.
os.environ["ROS_DOMAIN_ID"] = str(100 + os.getpid() % 100)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
apply_local_dds_defaults()  # the same DDS profile the launcher gives nodes (large images via SHM)
os.environ.setdefault("PYTHONUNBUFFERED", "1")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (a clone outside the workplace): no shared test data")
    return SHARED


def pytest_sessionstart(session) -> None:
    """Stop with the reason when the installed llama.cpp cannot execute on this CPU: the tests that load
    a model would otherwise kill the runner itself (SIGILL) with no result printed."""
    from fatigue_llm.llm.cpucheck import check_llama_cpu_once

    result = check_llama_cpu_once()
    if not result.ok:
        pytest.exit(f"{result.summary}\n{result.output[-2000:]}", returncode=1)
