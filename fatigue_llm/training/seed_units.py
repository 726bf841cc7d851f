"""The source documents' seed CSV on its own scales -> our features (``data.format: seed_csv``).

The project's source documents define a seed CSV
``eye_closure_ratio,blink_frequency,head_nod,voice_quality,steering_stability,speed_variance,yaw_rate,
time_awake,intervention,effectiveness`` whose columns share our names but not all our meanings or units.
Each column is converted only where the two quantities are the same; otherwise it becomes absent (NaN), as
an unmeasured feature is, or, with ``strict=True``, a value in it is refused:

    ====================  ==========================  ==========================  ===============================
    source column         source meaning / scale      ours                        mapping
    ====================  ==========================  ==========================  ===============================
    eye_closure_ratio     fraction eyes closed, 0-1   PERCLOS P80, fraction       same quantity: kept
    blink_frequency       blinks per minute           blinks /min                 same quantity: kept
    head_nod              nod intensity, 0-1          nods /min                   NaN: an intensity is no rate
    voice_quality         score, 0-1                  score, 0-1                  same scale: kept
    steering_stability    regularity, 0-1 (1 stable)  reversals >= 2 deg /min     NaN: no scale links the two
    speed_variance        normalised, 0-1             (m/s)^2                     NaN: normaliser not stated
    yaw_rate              normalised, 0-1             rad/s (std)                 NaN: normaliser not stated
    time_awake            s since last rest, 0-500    h awake                     NaN time_awake; the value is
                                                      (time_driving: s since the  our time_driving (same
                                                      last rest stop)             quantity, same unit)
    effectiveness         0-1                         0-1                         kept as given (the source does
                                                                                  not say it is the tracker's
                                                                                  0.5 = no change scale)
    intervention          free text                   level + action              keyword table (below)
    ====================  ==========================  ==========================  ===============================

Why not a linear map for steering regularity: the direction is known (1 = stable; our reversal count rises
with drowsy drift-and-correct steering) but nothing defines "regularity", and published reversal rates
depend on the gap size, the filter, the road and the speed (Markkula & Engström 2006), so no pair of
published alert / drowsy rates anchors r = 1 and r = 0; any line through them would invent the numbers.
Why not hours for time_awake: seconds since the last rest is the time driving since a stop, not the time
since waking; the sample rows' 60-180 s would read as two minutes awake.

A value outside the source's own stated scale (e.g. ``steering_stability = 31``, or ``time_awake = 900``) is
refused in every mode: the file is then not on that scale (our cases CSV, perhaps; use ``cases_csv``).

The action comes from the free-text ``intervention`` by the first matching row of ``INTERVENTION_KEYWORDS``
(a row whose text matches none is refused); the level is the lowest level that fits the action
(``LEVEL_ACTION_CHOICES``) and is not below the rule level of the converted features; when every fitting
level is below it (e.g. "no intervention" at PERCLOS 0.2) the lowest fitting level stays and the trainer
skips the case as unanswerable (counted in run.json). The message is the action's catalogue text: the
source's text says what was done, it is not a sentence to the driver.

Errors are ``DataError`` naming the file, the row (header = row 1), the column and the value.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from fatigue_llm.features.types import FEATURE_RANGES, SEED_FEATURES, FatigueFeatures
from fatigue_llm.intervention.config import InterventionConfig
from fatigue_llm.intervention.policy import assess
from fatigue_llm.intervention.types import ACTIONS, LEVEL_ACTION_CHOICES, Level
from fatigue_llm.training.data import DataError

WINDOW_S = 60.0  # as read_cases_csv: one feature window a row
_BLINKS = FEATURE_RANGES["blink_frequency"]  # the source gives no range of its own: ours


@dataclass(frozen=True)
class ColumnMap:
    """How one source column becomes ours: ``target`` None = unmappable (NaN, or refused when strict)."""

    meaning: str                 # the source's definition
    scale: tuple[float, float]   # the source's stated range (inclusive); a value outside it is refused
    target: str | None           # our FatigueFeatures field that receives the value unchanged
    why: str                     # the reason, quoted in errors


SEED_COLUMN_MAP: dict[str, ColumnMap] = {
    "eye_closure_ratio": ColumnMap("fraction of time the eyes are closed, 0-1", (0.0, 1.0), "eye_closure_ratio",
                                   "same quantity (PERCLOS)"),
    "blink_frequency": ColumnMap("blinks per minute", (_BLINKS.low, _BLINKS.high), "blink_frequency",
                                 "same quantity and unit"),
    "head_nod": ColumnMap("nod intensity, 0-1", (0.0, 1.0), None,
                          "a 0-1 nod intensity is not a nod rate (ours: nods per minute)"),
    "voice_quality": ColumnMap("voice quality score, 0-1", (0.0, 1.0), "voice_quality", "same 0-1 score"),
    "steering_stability": ColumnMap(
        "steering regularity, 0-1 (1 = stable)", (0.0, 1.0), None,
        "a 0-1 steering regularity has no defined relation to our steering reversals per minute "
        "(published reversal rates depend on gap size, road and speed, so no anchors fix a linear map)"),
    "speed_variance": ColumnMap("normalised speed variance, 0-1", (0.0, 1.0), None,
                                "normalised to 0-1 with no stated scale; ours is (m/s)^2"),
    "yaw_rate": ColumnMap("normalised yaw rate, 0-1", (0.0, 1.0), None,
                          "normalised to 0-1 with no stated scale; ours is the yaw-rate std in rad/s"),
    "time_awake": ColumnMap("seconds since the last rest, 0-500", (0.0, 500.0), "time_driving",
                            "seconds since the last rest is time driving, not hours awake: kept as "
                            "time_driving (s), time_awake left absent"),
}
EFFECTIVENESS_SCALE = (0.0, 1.0)
SOURCE_COLUMNS = tuple(SEED_COLUMN_MAP)  # the source's own names, in its column order
REQUIRED_COLUMNS = (*SOURCE_COLUMNS, "intervention", "effectiveness")

# (pattern, action), first match wins: specific phrases before the words they contain ("no intervention -
# alert driver" is none, "alert then pulled over" a stop, "dashboard reminder of the next rest area" a notice)
INTERVENTION_KEYWORDS: tuple[tuple[str, str], ...] = (
    (r"\bno (intervention|action)\b|^none$", "none"),
    (r"\bpull(s|ed|ing)? over\b|\bstop(ped|ping)? (now|driving)\b|\bhard shoulder\b|\bco-driver\b", "pull_over"),
    (r"\balarm\b|\balert\b|\bvibrat\w*|\bhaptic\b|\bwake\b", "alert_audio_haptic"),
    (r"\bchime\b|\bbeep\w*|\bsound\b|\baudio\b", "audio_chime"),
    (r"\bdashboard\b|\bnotice\b|\breminder\b|\bdisplay\b", "dashboard_notice"),
    (r"\bwindows?\b|\bair\b|\bventilat\w*|\bfan\b", "ventilation"),
    (r"\bbreak\b|\brest\b|\bnap\b|\bcoffee\b", "suggest_break"),
    (r"\bstop\b", "pull_over"),
)
_KEYWORDS = tuple((re.compile(pattern, re.IGNORECASE), action) for pattern, action in INTERVENTION_KEYWORDS)

SeedRow = tuple[FatigueFeatures, str, str, str, float]  # features, level name, action, message, effectiveness


def intervention_action(text: str) -> str | None:
    """The catalogue action the free text names (first ``INTERVENTION_KEYWORDS`` match), else None."""
    text = " ".join(text.split())
    return next((action for pattern, action in _KEYWORDS if pattern.search(text)), None)


def level_for(action: str, rule_level: Level) -> Level:
    """The lowest level fitting ``action`` that is not below ``rule_level`` (else the lowest fitting one)."""
    fitting = [level for level, actions in LEVEL_ACTION_CHOICES.items() if action in actions]
    return next((level for level in fitting if level >= rule_level), fitting[0])


def is_seed_csv(path: Path) -> bool:
    """A CSV whose header has ``intervention`` and no ``level`` (an unreadable file is not: the cases
    reader then says why)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # a spreadsheet BOM is no column name
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    names = {name.strip() for name in header}
    return "intervention" in names and "level" not in names


def _value(text: str | None, scale: tuple[float, float], where: str) -> float:
    """The cell as a number within the source's scale; empty = absent (NaN)."""
    raw = (text or "").strip()
    if raw == "":
        return math.nan
    try:
        value = float(raw)
    except ValueError:
        raise DataError(f"{where}: expected a number, got {raw!r}") from None
    if not (math.isfinite(value) and scale[0] <= value <= scale[1]):
        raise DataError(f"{where}: {raw!r} is outside the source scale [{scale[0]:g}, {scale[1]:g}], so this "
                        "file is not on the source documents' scales (a cases CSV in our units is data.format "
                        "cases_csv)")
    return value


def _features(row: dict, where: str, strict: bool) -> FatigueFeatures:
    values: dict[str, float] = {name: math.nan for name in SEED_FEATURES}
    for column, mapping in SEED_COLUMN_MAP.items():
        cell = f"{where}, column '{column}'"
        value = _value(row.get(column), mapping.scale, cell)
        if mapping.target is not None:
            values[mapping.target] = value
        elif strict and not math.isnan(value):
            raise DataError(f"{cell}: {row[column].strip()!r} cannot be converted: {mapping.why}")
    try:
        return FatigueFeatures.from_dict({**values, "window_duration": WINDOW_S}, source=where)
    except ValueError as error:
        raise DataError(str(error)) from None


def _parse_row(row: dict, where: str, strict: bool, rules: InterventionConfig) -> SeedRow:
    if None in row:
        raise DataError(f"{where}: {row[None]!r} is beyond the header's columns")
    features = _features(row, where, strict)
    effect = _value(row.get("effectiveness"), EFFECTIVENESS_SCALE, f"{where}, column 'effectiveness'")
    text = (row.get("intervention") or "").strip()
    action = intervention_action(text)
    if action is None:
        keywords = sorted({a for _, a in INTERVENTION_KEYWORDS})
        raise DataError(f"{where}, column 'intervention': {text!r} names no known intervention (keywords for "
                        f"{keywords}: see INTERVENTION_KEYWORDS in fatigue_llm/training/seed_units.py)")
    level = level_for(action, assess(features, rules)[0])
    return features, level.name, action, ACTIONS[action], effect


def read_seed_csv(path: Path, strict: bool = False) -> list[SeedRow]:
    """(features, level, action, message, effectiveness) per row of a source-format seed CSV.

    ``strict``: refuse a value in an unmappable column instead of leaving the feature absent.
    Raises DataError naming the file, row, column and value (module docstring).
    """
    rules, rows = InterventionConfig(), []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # a spreadsheet BOM is no column name
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [name for name in REQUIRED_COLUMNS if name not in columns]
            if missing:
                raise DataError(f"{path}: missing column(s) {missing}; found {columns}")
            for number, row in enumerate(reader, start=2):
                rows.append(_parse_row(row, f"{path}: row {number}", strict, rules))
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a valid CSV ({error})") from None
    if not rows:
        raise DataError(f"{path}: no data rows")
    return rows
