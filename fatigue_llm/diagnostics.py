"""Node health as plain data: a report and thread-safe counters (no rclpy; ros/diagnostics.py publishes them).

Each node builds one HealthReport per status period from its Counters; the ROS side turns it into a
diagnostic_msgs/DiagnosticStatus on /diagnostics.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# The four levels of diagnostic_msgs/DiagnosticStatus, in its order (the byte values are 0..3).
OK = "OK"
WARN = "WARN"
ERROR = "ERROR"
STALE = "STALE"
LEVELS = (OK, WARN, ERROR, STALE)


@dataclass(frozen=True)
class HealthReport:
    """One node's health: a level from LEVELS, a one-line message and named values (counters, ages, ...)."""

    level: str
    message: str
    values: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"health level must be one of {', '.join(LEVELS)}, got {self.level!r}")


def summarize(problems: Iterable[tuple[str, str]], values: Mapping[str, object],
              ok_message: str = "ok") -> HealthReport:
    """A report at the worst level among (level, text) problems, their texts joined; OK when there are none."""
    problems = list(problems)
    if not problems:
        return HealthReport(OK, ok_message, dict(values))
    level = max((lvl for lvl, _ in problems), key=LEVELS.index)
    return HealthReport(level, "; ".join(text for _, text in problems), dict(values))


class Counters:
    """Named event counters, safe to increment from executor callbacks and worker threads at once.

    Names given to the constructor start at 0, so they appear in every snapshot before their first event.
    """

    def __init__(self, *names: str) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(names, 0)

    def increment(self, name: str, n: int = 1) -> int:
        """Add n to the counter (creating it at 0); returns the new count."""
        with self._lock:
            count = self._counts.get(name, 0) + n
            self._counts[name] = count
            return count

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        """A consistent copy of all counters (taken under one lock)."""
        with self._lock:
            return dict(self._counts)


def changes(current: Mapping[str, int], previous: Mapping[str, int]) -> dict[str, int]:
    """Per-counter increase between two snapshots (what happened during the last status period)."""
    return {name: count - previous.get(name, 0) for name, count in current.items()}
