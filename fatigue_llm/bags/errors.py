"""The one error type of the bag tools."""

from __future__ import annotations

from pathlib import Path


class BagError(ValueError):
    """A bag cannot be read or written; the message names the bag path and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = " ".join(problem.split())  # one line: parser messages come with carets and newlines
        super().__init__(f"{path}: {self.problem}")
