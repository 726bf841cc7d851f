"""Fixtures for tests that run real rclpy nodes in this process."""

from __future__ import annotations

import pytest

from .helpers import Graph


@pytest.fixture
def graph():
    graph = Graph()
    yield graph
    graph.close()
