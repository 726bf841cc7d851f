"""The one mapping between the simulator's truth classes and the intervention policy's levels.

    truth class   policy level(s) that are right for it
    ALERT  (0)    INFO (0)              -- no intervention
    DROWSY (1)    ADVISORY (1)
    SLEEPY (2)    WARNING (2) or CRITICAL (3)

A policy level maps back to a predicted class the same way (CRITICAL counts as SLEEPY), so level
accuracy and the confusion matrix compare like with like.
"""

from __future__ import annotations

from enum import IntEnum

from fatigue_llm.intervention.types import Level


class TruthClass(IntEnum):
    ALERT = 0
    DROWSY = 1
    SLEEPY = 2


TRUTH_NAMES: tuple[str, ...] = tuple(c.name.lower() for c in TruthClass)  # index = class value
LEVEL_NAMES: tuple[str, ...] = tuple(lv.name for lv in Level)  # index = level value
N_CLASSES = len(TruthClass)

# The levels that fit each truth class (see the table above).
APPROPRIATE_LEVELS: dict[TruthClass, tuple[Level, ...]] = {
    TruthClass.ALERT: (Level.INFO,),
    TruthClass.DROWSY: (Level.ADVISORY,),
    TruthClass.SLEEPY: (Level.WARNING, Level.CRITICAL),
}


def predicted_class(level: int) -> int:
    """The truth class a policy level claims: INFO->ALERT, ADVISORY->DROWSY, WARNING/CRITICAL->SLEEPY."""
    lv = Level(level)  # ValueError for a level outside 0..3
    for truth, levels in APPROPRIATE_LEVELS.items():
        if lv in levels:
            return int(truth)
    raise AssertionError(f"level {lv!r} has no truth class")  # the table covers every Level


def required_level(truth: int) -> int:
    """The minimum intervention level appropriate for a truth class (ALERT -> INFO, i.e. none)."""
    return int(min(APPROPRIATE_LEVELS[TruthClass(truth)]))


def max_appropriate_level(truth: int) -> int:
    """The strongest intervention level still appropriate for a truth class."""
    return int(max(APPROPRIATE_LEVELS[TruthClass(truth)]))


def truth_from_name(name: str) -> int | None:
    """Truth class of a level-period name ("DROWSY", "drowsy"); ``None`` for other kinds."""
    try:
        return int(TruthClass[name.strip().upper()])
    except KeyError:
        return None


def truth_name(truth: int) -> str:
    return TRUTH_NAMES[TruthClass(truth)]


def level_name(level: int) -> str:
    return LEVEL_NAMES[Level(level)]
