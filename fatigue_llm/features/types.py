"""The windowed fatigue feature vector (plain data; mirrors fatigue_msgs/FatigueFeatures).

Each numeric field carries its physical range and unit (``FieldRange`` in the field's metadata, collected in
``FEATURE_RANGES``): values no sensor or window can produce are refused by ``from_dict`` and turned into
"absent" by ``sanitize``. NaN encodes an absent float feature, as in the ROS message.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from dataclasses import field as dataclass_field

NAN = math.nan
INF = math.inf

# The seed project's eight features, in its CSV column order.
SEED_FEATURES = (
    "eye_closure_ratio",
    "blink_frequency",
    "head_nod",
    "voice_quality",
    "steering_reversal_rate",
    "speed_variance",
    "yaw_rate",
    "time_awake",
)

# Columns renamed since earlier files were written: old name -> (new name, why). Readers refuse the old
# name with this explanation rather than guess what a file holds.
RENAMED_COLUMNS = {
    "steering_stability": ("steering_reversal_rate", "it holds steering reversals per minute, where higher means "
                           "less stable; a 0-1 steering regularity from the source documents' seed CSV is read "
                           "with data.format: seed_csv"),
}


def renamed_column_hint(columns) -> str:
    """A sentence for each renamed column found in ``columns`` ("" when none)."""
    return "".join(f" Column '{old}' is now '{new}': {why}." for old, (new, why) in RENAMED_COLUMNS.items()
                   if old in columns)


MAX_WINDOW_S = 3600.0  # no feature window is longer than an hour
MAX_COUNT = 10_000     # events in one window; even 1 event/s for MAX_WINDOW_S stays below it


def _number(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class FieldRange:
    """The values (inclusive) a real sensor or window can produce for one field, and their unit."""

    low: float
    high: float
    unit: str
    integer: bool = False  # a count: whole numbers only

    def contains(self, value: float) -> bool:
        """True for a finite value within [low, high] (a whole number for a count). NaN is not contained."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, float) and (not math.isfinite(value) or (self.integer and not value.is_integer())):
            return False
        return self.low <= value <= self.high  # exact for Python ints of any size too

    def __str__(self) -> str:
        if math.isinf(self.low) and math.isinf(self.high):
            return f"any finite value ({self.unit})"
        text = f"[{_number(self.low)}, {_number(self.high)}] {self.unit}"
        return f"{text} (whole numbers)" if self.integer else text


@dataclass(frozen=True)
class RangeViolation:
    """One field whose value lies outside its physical range."""

    field: str
    value: float
    range: FieldRange

    @property
    def unit(self) -> str:
        return self.range.unit

    def __str__(self) -> str:
        if math.isinf(self.range.low) and math.isinf(self.range.high):
            return f"field '{self.field}' = {self.value!r} is not finite ({self.unit})"
        return f"field '{self.field}' = {self.value!r} is outside {self.range}"


def _ranged(default: float, low: float, high: float, unit: str, integer: bool = False):
    return dataclass_field(default=default, metadata={"range": FieldRange(low, high, unit, integer)})


def _count(unit: str = "events"):
    return _ranged(0, 0, MAX_COUNT, unit, integer=True)


@dataclass(frozen=True)
class FatigueFeatures:
    timestamp_s: float = _ranged(NAN, -INF, INF, "s")            # end of the window
    trigger_event: bool = False                                 # published at once for a safety event
    window_duration: float = _ranged(0.0, 0.0, MAX_WINDOW_S, "s")
    face_visible_fraction: float = _ranged(NAN, 0.0, 1.0, "fraction")
    # seed features
    eye_closure_ratio: float = _ranged(NAN, 0.0, 1.0, "fraction")   # PERCLOS P80 of face-visible time
    blink_frequency: float = _ranged(NAN, 0.0, 120.0, "/min")       # physiological maximum ~60-100 /min
    head_nod: float = _ranged(NAN, 0.0, 60.0, "/min")               # one nod a second at most
    voice_quality: float = _ranged(NAN, 0.0, 1.0, "score")          # no voice source yet
    steering_reversal_rate: float = _ranged(NAN, 0.0, 600.0, "/min")    # steering reversals; 10 Hz is beyond any hand
    speed_variance: float = _ranged(NAN, 0.0, 2500.0, "(m/s)^2")    # speeds spanning 0-100 m/s
    yaw_rate: float = _ranged(NAN, 0.0, 3.0, "rad/s")               # std; a car's yaw rate stays below ~1 rad/s
    time_awake: float = _ranged(NAN, 0.0, 72.0, "h")                # beyond 3 days awake is not a driver
    # supporting detail
    mean_blink_duration: float = _ranged(NAN, 0.0, 10.0, "s")       # blinks last 0.1-0.4 s, slow ones ~1 s
    longest_eye_closure: float = _ranged(0.0, 0.0, MAX_WINDOW_S, "s")  # may start before the window
    microsleep_count: int = _count()
    slow_blink_count: int = _count()
    yawn_count: int = _count()
    steering_angle_std: float = _ranged(NAN, 0.0, 12.0, "rad")      # at the wheel: lock is ~±8-9 rad from centre
    sdlp: float = _ranged(NAN, 0.0, 5.0, "m")                       # std of lane position; a lane is ~3.5 m
    time_driving: float = _ranged(NAN, 0.0, 7 * 24 * 3600.0, "s")   # since the last rest stop, a week at most
    microsleep: bool = False          # a microsleep started since the previous publication

    def seed_vector(self) -> list[float]:
        """The eight seed features in seed CSV order (NaN where absent)."""
        return [float(getattr(self, name)) for name in SEED_FEATURES]

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "<features>") -> FatigueFeatures:
        """Build from a JSON-like mapping; None (null) or a missing key is an absent feature.

        Raises ValueError naming ``source`` and every bad field: an unknown key, a value of the wrong type, or
        one outside the field's physical range (with the range and its unit).
        """
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{source}: unknown feature field(s) {unknown}; known: {sorted(known)}")
        kwargs = {}
        problems = []
        for name, value in values.items():
            spec = known[name]
            if value is None:  # absent: NaN for a float feature, the default (0, False) otherwise
                kwargs[name] = NAN if spec.type in ("float", float) else spec.default
                continue
            if spec.type in ("bool", bool):
                if isinstance(value, bool):
                    kwargs[name] = value
                else:
                    problems.append(f"field '{name}' must be true or false, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"field '{name}' must be a number, got {value!r}")
                continue
            allowed = FEATURE_RANGES[name]
            if not allowed.integer and isinstance(value, float) and math.isnan(value):
                kwargs[name] = NAN
            elif allowed.contains(value):
                kwargs[name] = int(value) if allowed.integer else float(value)
            else:
                problems.append(str(RangeViolation(name, value, allowed)))
        if problems:
            raise ValueError(f"{source}: " + "; ".join(problems))
        return cls(**kwargs)


# Field name -> physical range, for every numeric field of FatigueFeatures.
FEATURE_RANGES: dict[str, FieldRange] = {f.name: f.metadata["range"] for f in fields(FatigueFeatures)
                                         if "range" in f.metadata}


def out_of_range(features: FatigueFeatures) -> list[RangeViolation]:
    """The numeric fields whose value no sensor can produce, in field order.

    An absent float feature (NaN) is fine; an infinite one is a violation, and so is a count that is negative,
    too large, NaN or not a whole number.
    """
    violations = []
    for name, allowed in FEATURE_RANGES.items():
        value = getattr(features, name)
        if not allowed.integer and isinstance(value, float) and math.isnan(value):
            continue
        if not allowed.contains(value):
            violations.append(RangeViolation(name, value, allowed))
    return violations


def sanitize(features: FatigueFeatures) -> tuple[FatigueFeatures, list[RangeViolation]]:
    """A copy in which each out-of-range float feature is NaN (absent) and each bad count is 0.

    The valid fields beside a bad one are kept, so the safety policy still acts on them and never on garbage.
    Returns the copy and what was replaced (empty, and the very same object, when all is in range).
    """
    violations = out_of_range(features)
    if not violations:
        return features, []
    changes = {v.field: (0 if v.range.integer else NAN) for v in violations}
    return replace(features, **changes), violations
