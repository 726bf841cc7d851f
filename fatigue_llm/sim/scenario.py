"""Drive scenarios: one YAML file per labelled drive, typed and validated, and the driver they describe.

    name: highway_drowsiness
    description: ...
    duration_s: 600
    seed: 3
    driver:   {time_awake_h: 16, time_driving_h: 1.5, blink_rate_scale: 1.0, blink_duration_scale: 1.0}
    fatigue:  [{t_s: 0, f: 0.2}, {t_s: 600, f: 0.95}]          # piecewise-linear latent fatigue in [0, 1]
    events:   {spontaneous: true, microsleeps: [{start_s: 540, duration_s: 2.0}], yawns: [...], nods: [...]}
    camera:   {enabled: true, fps: 15, width: 320, height: 240, occlusions: [...], lighting: [...]}
    vehicle:  {rate_hz: 20}
    pass_criteria: {level_accuracy: {min: 0.8}, detection_latency_s: {max: 60}}

Unknown keys, values of the wrong type and inconsistent values are ScenarioError (a ConfigError) naming the
file, the key and the value. ``pass_criteria`` is only checked for its shape here; the evaluator knows the
metric names.

The driver: the latent fatigue f maps to the Karolinska Sleepiness Scale as ``kss = 1 + 8 f`` and to the
truth level ALERT (KSS <= 5), DROWSY (6-7) or SLEEPY (8-9), the bands training/generate.py uses. From f, seeded
point processes draw blinks, yawns, nods and microsleeps (``driver_script``) whose rates and durations follow
published relations (docs/scenarios.md has the citations):

* blink rate rises from ~14 to ~23 /min and blinks lengthen with sleepiness (Schleicher et al. 2008; Caffier
  et al. 2003), so PERCLOS (P80) climbs from ~2 % alert to ~25 % when fighting sleep (Wierwille et al. 1994;
  Dinges & Grace 1998) -- the anchors are training/generate.py's KSS tables, so the simulator and the
  synthetic training cases agree;
* microsleeps (lid closures >= 1 s) appear only late: none up to KSS 7, then steeply more towards KSS 9
  (Åkerstedt et al. 2005; Ingre et al. 2006: lapses and long closures rise steeply near KSS 8-9);
* nods follow the same KSS table as the training cases; yawns become frequent as drowsiness sets in
  (Baenninger 1997) and last ~6 s (Provine 1986).

Plain Python + numpy, no ROS.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from fatigue_llm.config import ConfigError, coerce_value
from fatigue_llm.training.generate import BLINK_MEDIAN, NOD_RATE, PERCLOS_MEDIAN

if TYPE_CHECKING:  # the renderer module pulls in OpenCV and MediaPipe: imported where a script is drawn
    from fatigue_llm.sim.driver_video import DriverScript, EyeClosure, HeadNod, Yawn

# ------------------------------------------------------------------------------------------ truth levels
ALERT, DROWSY, SLEEPY = 0, 1, 2
LEVEL_NAMES = ("alert", "drowsy", "sleepy")
KSS_ALERT_MAX = 5.5     # continuous KSS below this is ALERT (KSS 1-5)
KSS_DROWSY_MAX = 7.5    # below this DROWSY (KSS 6-7); from here SLEEPY (KSS 8-9)

MAX_DURATION_S = 4 * 3600.0
MICROSLEEP_MIN_S = 1.0  # a lid closure this long is a microsleep (the perception default microsleep_duration)
SLOW_BLINK_S = 0.3      # longer closures are slow blinks (the perception default slow_blink_duration)
BLINK_MAX_S = 0.9       # spontaneous blinks stay below MICROSLEEP_MIN_S, so duration alone names the kind


class ScenarioError(ConfigError):
    """A scenario file or value is invalid; the message names the file, the key and the value."""


def kss_of(fatigue: float | np.ndarray) -> float | np.ndarray:
    """Continuous Karolinska Sleepiness Scale 1..9 of the latent fatigue f in [0, 1]: ``1 + 8 f``."""
    return 1.0 + 8.0 * np.asarray(fatigue) if isinstance(fatigue, np.ndarray) else 1.0 + 8.0 * fatigue


def level_of(fatigue: float | np.ndarray) -> int | np.ndarray:
    """ALERT (KSS <= 5), DROWSY (KSS 6-7) or SLEEPY (KSS 8-9) for f, scalar or array."""
    kss = kss_of(fatigue)
    levels = np.where(kss < KSS_ALERT_MAX, ALERT, np.where(kss < KSS_DROWSY_MAX, DROWSY, SLEEPY))
    return levels if isinstance(fatigue, np.ndarray) else int(levels)


# ------------------------------------------------------------------------------------------- the schema
@dataclass(frozen=True)
class Keyframe:
    t_s: float                      # s from the start of the drive
    f: float                        # latent fatigue in [0, 1] (0 = wide awake, 1 = fighting sleep)


@dataclass(frozen=True)
class DriverSection:
    time_awake_h: float = 8.0       # h awake at the start of the drive
    time_driving_h: float = 0.0     # h since the last rest stop at the start (VehicleSignals.time_driving)
    blink_rate_scale: float = 1.0   # this driver's blink rate relative to the population anchors
    blink_duration_scale: float = 1.0  # and blink duration (individual differences, Ingre et al. 2006)


@dataclass(frozen=True)
class ClosureEvent:
    start_s: float                  # lids reach 80 % closed
    duration_s: float               # s at >= 80 % closed; >= MICROSLEEP_MIN_S for a microsleep


@dataclass(frozen=True)
class YawnEvent:
    start_s: float                  # mouth starts to open
    duration_s: float               # s including opening and closing
    peak: float = 1.0               # mouth opening at the top, 0..1


@dataclass(frozen=True)
class NodEvent:
    start_s: float
    duration_s: float               # s chin down and back up
    peak_deg: float = 20.0          # rendered pitch at the bottom of the nod


@dataclass(frozen=True)
class EventsSection:
    spontaneous: bool = True        # draw yawns, nods and microsleeps from f too (blinks are always drawn)
    microsleeps: tuple[ClosureEvent, ...] = ()
    yawns: tuple[YawnEvent, ...] = ()
    nods: tuple[NodEvent, ...] = ()


OCCLUSION_KINDS = ("hand", "out_of_view")


@dataclass(frozen=True)
class Occlusion:
    start_s: float
    end_s: float
    kind: str = "hand"              # hand: a hand in front of the face; out_of_view: the head leaves the image


@dataclass(frozen=True)
class LightingChange:
    start_s: float
    end_s: float
    gain: float = 0.5               # brightness factor reached after the ramp (1 = unchanged)
    contrast: float = 1.0           # contrast factor about mid-grey reached after the ramp
    ramp_s: float = 1.0             # s to reach the change at start_s and to come back before end_s


@dataclass(frozen=True)
class CameraSection:
    enabled: bool = True            # render camera/image_raw (else synthesise driver/observation)
    fps: float = 15.0               # 5..30; truth/fatigue is published at this rate either way
    width: int = 320
    height: int = 240
    occlusions: tuple[Occlusion, ...] = ()
    lighting: tuple[LightingChange, ...] = ()


@dataclass(frozen=True)
class VehicleSection:
    rate_hz: float = 20.0           # vehicle/signals rate


@dataclass(frozen=True)
class PassCriterion:
    metric: str
    min: float | None = None
    max: float | None = None

    def passes(self, value: float) -> bool:
        """True when ``value`` is within the bounds (NaN never passes)."""
        if not math.isfinite(value):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


@dataclass(frozen=True)
class Scenario:
    name: str
    duration_s: float
    fatigue: tuple[Keyframe, ...]
    description: str = ""
    seed: int = 0
    driver: DriverSection = field(default_factory=DriverSection)
    events: EventsSection = field(default_factory=EventsSection)
    camera: CameraSection = field(default_factory=CameraSection)
    vehicle: VehicleSection = field(default_factory=VehicleSection)
    pass_criteria: tuple[PassCriterion, ...] = ()
    source: str = "<scenario>"      # the file it came from (for messages; not a YAML key)

    @property
    def keyframes(self) -> list[tuple[float, float]]:
        """The fatigue profile as (t, f) pairs (sim/drive.py's FatigueProfile)."""
        return [(k.t_s, k.f) for k in self.fatigue]

    def fatigue_at(self, times: np.ndarray) -> np.ndarray:
        """f at ``times`` (s): linear between keyframes, held before the first and after the last."""
        points = np.array(self.keyframes, dtype=float)
        return np.interp(times, points[:, 0], points[:, 1])

    def with_overrides(self, seed: int | None = None, duration_s: float | None = None,
                       camera: bool | None = None) -> Scenario:
        """A copy with another seed, length or camera switch (events after a shorter end are dropped)."""
        changed = self
        if seed is not None:
            changed = dataclasses.replace(changed, seed=seed)
        if duration_s is not None:
            changed = dataclasses.replace(changed, duration_s=duration_s)
        if camera is not None:
            changed = dataclasses.replace(changed, camera=dataclasses.replace(changed.camera, enabled=camera))
        if changed is not self:
            _validate(changed, scripted_within=False)
        return changed


# ------------------------------------------------------------------------------------------ loading
def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _value(value: Any, tp: Any, source: str, key: str) -> Any:
    """``value`` of ``key`` checked against the type hint ``tp`` (dataclass, tuple[X, ...], X | None, scalar)."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return None if value is None else _value(value, args[0], source, key)
    if origin is tuple:
        if not isinstance(value, list):
            raise ScenarioError(f"{source}: {key}: expected a list, got {value!r}")
        item = typing.get_args(tp)[0]
        return tuple(_value(v, item, source, f"{key}[{i}]") for i, v in enumerate(value))
    if _is_dataclass_type(tp):
        return _build(tp, value, source, key)
    try:
        return coerce_value(value, tp, f"{source}: {key}")
    except ConfigError as error:
        raise ScenarioError(str(error)) from None


def _build(cls: type, values: Any, source: str, key: str = "", skip: tuple[str, ...] = (),
           also_known: tuple[str, ...] = ()) -> Any:
    """A frozen dataclass from the YAML mapping at ``key`` (dotted, "" for the top level): unknown or missing
    keys and wrong types are ScenarioError naming ``source`` and the key."""
    if not isinstance(values, dict):
        raise ScenarioError(f"{source}: {key or 'scenario'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    prefix = f"{key}." if key else ""
    unknown = sorted(str(name) for name in values if name not in fields and name not in also_known)
    if unknown:
        raise ScenarioError(f"{source}: unknown key(s) {', '.join(prefix + name for name in unknown)}; known"
                            f"{' in ' + repr(key) if key else ''}: {', '.join(sorted([*fields, *also_known]))}")
    missing = [name for name, f in fields.items() if name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ScenarioError(f"{source}: missing key(s) {', '.join(prefix + name for name in missing)}")
    return cls(**{name: _value(value, hints[name], source, prefix + name) for name, value in values.items()})


def _criteria(values: Any, source: str) -> tuple[PassCriterion, ...]:
    if values is None:
        return ()
    if not isinstance(values, dict):
        raise ScenarioError(f"{source}: pass_criteria: expected a mapping of metric -> {{min: x, max: y}}, "
                            f"got {values!r}")
    criteria = []
    for metric, bounds in values.items():
        key = f"pass_criteria.{metric}"
        if not isinstance(metric, str) or not metric:
            raise ScenarioError(f"{source}: pass_criteria: metric names must be strings, got {metric!r}")
        if not isinstance(bounds, dict) or not bounds:
            raise ScenarioError(f"{source}: {key}: expected {{min: x}} and/or {{max: y}}, got {bounds!r}")
        criterion = PassCriterion(metric, **_build(_Bounds, bounds, source, key).__dict__)
        if criterion.min is not None and criterion.max is not None and criterion.min > criterion.max:
            raise ScenarioError(f"{source}: {key}: min {criterion.min:g} is above max {criterion.max:g}")
        criteria.append(criterion)
    return tuple(criteria)


@dataclass(frozen=True)
class _Bounds:
    min: float | None = None
    max: float | None = None


def scenario_from_mapping(data: Any, source: str = "<scenario>") -> Scenario:
    """A validated Scenario from a parsed YAML document. Raises ScenarioError naming file, key and value."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a mapping of scenario keys, got {type(data).__name__}")
    body = {key: value for key, value in data.items() if key != "pass_criteria"}
    scenario = _build(Scenario, body, source, skip=("source", "pass_criteria"), also_known=("pass_criteria",))
    scenario = dataclasses.replace(scenario, pass_criteria=_criteria(data.get("pass_criteria"), source),
                                   source=source)
    _validate(scenario)
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """The validated scenario in ``path``. Raises ScenarioError naming the file, the key and the value."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ScenarioError(f"{path}: cannot read the scenario ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise ScenarioError(f"{path}: not valid YAML ({error})") from None
    return scenario_from_mapping(data, str(path))


# ---------------------------------------------------------------------------------------- validation
def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ScenarioError(f"{where}: {message}")


def _check_intervals(items: tuple, key: str, src: str, duration: float, end_of, within: bool,
                     gap: float = 0.0) -> None:
    last_end = -math.inf
    for i, item in enumerate(items):
        where = f"{src}: {key}[{i}]"
        end = end_of(item)
        _check(item.start_s >= 0 and (not within or item.start_s < duration), where,
               f"start_s {item.start_s:g} must be in [0, duration_s={duration:g})")
        _check(end > item.start_s, where, f"must end after it starts (start_s {item.start_s:g}, end {end:g})")
        _check(item.start_s >= last_end + gap, where,
               f"starts at {item.start_s:g} s, before the previous one ends ({last_end:g} s"
               f"{f' + {gap:g} s' if gap else ''}); list them in time order without overlap")
        last_end = end


def _validate(s: Scenario, scripted_within: bool = True) -> None:
    src = s.source
    _check(bool(s.name.strip()), f"{src}: name", "must not be empty")
    _check(0 < s.duration_s <= MAX_DURATION_S, f"{src}: duration_s",
           f"must be > 0 and <= {MAX_DURATION_S:g}, got {s.duration_s:g}")
    _check(s.seed >= 0, f"{src}: seed", f"must be >= 0, got {s.seed}")
    _check(len(s.fatigue) > 0, f"{src}: fatigue", "needs at least one keyframe {t_s: 0, f: 0.1}")
    for i, key in enumerate(s.fatigue):
        _check(0.0 <= key.f <= 1.0, f"{src}: fatigue[{i}].f", f"must be in [0, 1], got {key.f:g}")
        _check(key.t_s >= 0, f"{src}: fatigue[{i}].t_s", f"must be >= 0, got {key.t_s:g}")
        _check(i == 0 or key.t_s > s.fatigue[i - 1].t_s, f"{src}: fatigue[{i}].t_s",
               f"keyframe times must increase, got {s.fatigue[i - 1].t_s:g} then {key.t_s:g}")
    d = s.driver
    _check(0 <= d.time_awake_h <= 72, f"{src}: driver.time_awake_h", f"must be in [0, 72], got {d.time_awake_h:g}")
    _check(0 <= d.time_driving_h <= 24, f"{src}: driver.time_driving_h",
           f"must be in [0, 24], got {d.time_driving_h:g}")
    for name in ("blink_rate_scale", "blink_duration_scale"):
        value = getattr(d, name)
        _check(0.25 <= value <= 4.0, f"{src}: driver.{name}", f"must be in [0.25, 4], got {value:g}")
    ev = s.events
    for i, m in enumerate(ev.microsleeps):
        _check(MICROSLEEP_MIN_S <= m.duration_s <= 30.0, f"{src}: events.microsleeps[{i}].duration_s",
               f"must be in [{MICROSLEEP_MIN_S:g}, 30] s, got {m.duration_s:g}")
    for i, y in enumerate(ev.yawns):
        _check(1.5 <= y.duration_s <= 15.0, f"{src}: events.yawns[{i}].duration_s",
               f"must be in [1.5, 15] s, got {y.duration_s:g}")
        _check(0 < y.peak <= 1.0, f"{src}: events.yawns[{i}].peak", f"must be in (0, 1], got {y.peak:g}")
    for i, n in enumerate(ev.nods):
        _check(0.3 <= n.duration_s <= 5.0, f"{src}: events.nods[{i}].duration_s",
               f"must be in [0.3, 5] s, got {n.duration_s:g}")
        _check(0 < n.peak_deg <= 45.0, f"{src}: events.nods[{i}].peak_deg",
               f"must be in (0, 45], got {n.peak_deg:g}")
    T = s.duration_s
    _check_intervals(ev.microsleeps, "events.microsleeps", src, T, lambda e: e.start_s + e.duration_s,
                     scripted_within, gap=0.5)  # the eyes open in between
    _check_intervals(ev.yawns, "events.yawns", src, T, lambda e: e.start_s + e.duration_s, scripted_within)
    _check_intervals(ev.nods, "events.nods", src, T, lambda e: e.start_s + e.duration_s, scripted_within)
    c = s.camera
    _check(5.0 <= c.fps <= 30.0, f"{src}: camera.fps", f"must be in [5, 30], got {c.fps:g}")
    _check(32 <= c.width <= 1920, f"{src}: camera.width", f"must be in [32, 1920], got {c.width}")
    _check(32 <= c.height <= 1080, f"{src}: camera.height", f"must be in [32, 1080], got {c.height}")
    for i, o in enumerate(c.occlusions):
        _check(o.kind in OCCLUSION_KINDS, f"{src}: camera.occlusions[{i}].kind",
               f"must be one of {', '.join(OCCLUSION_KINDS)}, got {o.kind!r}")
    for i, light in enumerate(c.lighting):
        where = f"{src}: camera.lighting[{i}]"
        _check(0.1 <= light.gain <= 3.0, f"{where}.gain", f"must be in [0.1, 3], got {light.gain:g}")
        _check(0.1 <= light.contrast <= 3.0, f"{where}.contrast", f"must be in [0.1, 3], got {light.contrast:g}")
        _check(0 <= 2 * light.ramp_s <= light.end_s - light.start_s, f"{where}.ramp_s",
               f"must be >= 0 and fit twice into the interval, got {light.ramp_s:g}")
    _check_intervals(c.occlusions, "camera.occlusions", src, T, lambda e: e.end_s, scripted_within)
    _check_intervals(c.lighting, "camera.lighting", src, T, lambda e: e.end_s, scripted_within)
    _check(0 < s.vehicle.rate_hz <= 1000, f"{src}: vehicle.rate_hz",
           f"must be in (0, 1000], got {s.vehicle.rate_hz:g}")


# ------------------------------------------------------------------------------------- driver dynamics
KSS_POINTS = np.arange(1.0, 10.0)
# Spontaneous microsleeps per minute by KSS 1..9: none up to 7, then steeply more (our anchors for the
# "long closures near KSS 8-9" of Ingre et al. 2006; Åkerstedt et al. 2005 report lapses mostly at KSS >= 8).
MICROSLEEP_RATE = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.4, 1.5)
MICROSLEEP_MEDIAN_S, MICROSLEEP_SIGMA = 1.6, 0.35   # log-normal closure length, clipped to [1.1, 5] s
# Yawns per minute by KSS 1..9: rare when alert, frequent once drowsy (Baenninger 1997; our magnitudes).
YAWN_RATE = (0.02, 0.03, 0.05, 0.08, 0.12, 0.25, 0.4, 0.5, 0.5)
YAWN_MEDIAN_S = 6.0      # s, mean yawn length (Provine 1986)
BLINK_SIGMA = 0.35       # log-normal shape of blink durations
MICROSLEEP_SHARE = tuple(rate * MICROSLEEP_MEDIAN_S / 60.0 for rate in MICROSLEEP_RATE)
# Median blink duration (s at >= 80 % closed) by KSS: what makes blinks alone give the PERCLOS anchors less
# the microsleep share, at the anchor blink rate: PERCLOS = rate x mean duration.
BLINK_DURATION_S = tuple((p - m) * 60.0 / b / math.exp(BLINK_SIGMA ** 2 / 2)
                         for p, m, b in zip(PERCLOS_MEDIAN, MICROSLEEP_SHARE, BLINK_MEDIAN, strict=True))
STREAMS = {"blinks": 11, "microsleeps": 12, "yawns": 13, "nods": 14}  # independent RNG streams per process
GAP_S = 0.2              # s of open eyes kept between two closures (besides the lid strokes)


def _table(values: tuple[float, ...], kss: np.ndarray | float) -> np.ndarray:
    return np.interp(kss, KSS_POINTS, np.asarray(values, dtype=float))


def blink_rate_per_min(scenario: Scenario, f: np.ndarray | float) -> np.ndarray:
    return _table(BLINK_MEDIAN, kss_of(f)) * scenario.driver.blink_rate_scale


def blink_duration_median_s(scenario: Scenario, f: np.ndarray | float) -> np.ndarray:
    return _table(BLINK_DURATION_S, kss_of(f)) * scenario.driver.blink_duration_scale


def _poisson_times(rng: np.random.Generator, scenario: Scenario, per_min: tuple[float, ...],
                   refractory_s: float) -> list[float]:
    """Onsets of an inhomogeneous Poisson process with rate ``per_min`` (by KSS) of f(t), by thinning,
    with at least ``refractory_s`` between onsets."""
    T = scenario.duration_s
    peak = max(per_min) / 60.0
    if peak <= 0:
        return []
    count = rng.poisson(peak * T)
    candidates = np.sort(rng.uniform(0.0, T, count))
    accept = rng.random(count) * peak < _table(per_min, kss_of(scenario.fatigue_at(candidates))) / 60.0
    times, last = [], -math.inf
    for t in candidates[accept].tolist():
        if t - last >= refractory_s:
            times.append(t)
            last = t
    return times


def _free(start: float, end: float, taken: list[tuple[float, float]], margin: float) -> bool:
    return all(end + margin <= a or start >= b + margin for a, b in taken)


def _lid_window(start: float, duration: float) -> tuple[float, float]:
    """From the lid starting to fall to being fully up again (driver_video's linear strokes)."""
    from fatigue_llm.sim.driver_video import LID_CLOSE_S, LID_OPEN_S, P80

    return start - P80 * LID_CLOSE_S, start + duration + P80 * LID_OPEN_S


def _microsleeps(scenario: Scenario) -> tuple[list[EyeClosure], list[HeadNod]]:
    """Scripted microsleeps plus, if spontaneous, ones drawn from f; half of the drawn ones dip the head."""
    from fatigue_llm.sim.driver_video import EyeClosure, HeadNod

    rng = np.random.default_rng([scenario.seed, STREAMS["microsleeps"]])
    closures = [EyeClosure(m.start_s, m.duration_s) for m in scenario.events.microsleeps
                if m.start_s < scenario.duration_s]
    nods: list[HeadNod] = []
    if scenario.events.spontaneous:
        taken = [_lid_window(c.start_s, c.duration_s) for c in closures]
        for t in _poisson_times(rng, scenario, MICROSLEEP_RATE, refractory_s=10.0):
            duration = float(np.clip(MICROSLEEP_MEDIAN_S * math.exp(MICROSLEEP_SIGMA * rng.standard_normal()),
                                     1.1, 5.0))
            nod_draw, peak_draw = rng.random(), rng.uniform(18.0, 26.0)
            window = _lid_window(t, duration)
            if window[0] < 0.0 or not _free(*window, taken, margin=2.0):
                continue
            taken.append(window)
            closures.append(EyeClosure(t, duration))
            if nod_draw < 0.5:  # the head drops as the driver nods off (our choice)
                nods.append(HeadNod(t + 0.3, min(1.5, duration), peak_draw))
    return sorted(closures, key=lambda c: c.start_s), nods


def _blinks(scenario: Scenario, microsleeps: list[EyeClosure]) -> list[EyeClosure]:
    """A renewal process: gamma(2) intervals at the rate of f(t), log-normal durations < MICROSLEEP_MIN_S,
    never overlapping a microsleep or each other."""
    from fatigue_llm.sim.driver_video import EyeClosure

    rng = np.random.default_rng([scenario.seed, STREAMS["blinks"]])
    taken = [_lid_window(c.start_s, c.duration_s) for c in microsleeps]
    blinks: list[EyeClosure] = []
    t, last_end = 0.0, -math.inf
    while True:
        f = float(scenario.fatigue_at(np.array([t]))[0])
        mean_interval = 60.0 / float(blink_rate_per_min(scenario, f))
        t += rng.gamma(2.0, mean_interval / 2.0)
        duration = float(np.clip(float(blink_duration_median_s(scenario, f)) * math.exp(
            BLINK_SIGMA * rng.standard_normal()), 0.04, BLINK_MAX_S))
        if t >= scenario.duration_s:
            return blinks
        window = _lid_window(t, duration)
        if window[0] < 0.0 or window[0] < last_end + GAP_S or not _free(*window, taken, margin=GAP_S):
            continue
        blinks.append(EyeClosure(t, duration))
        last_end = window[1]


def _yawns(scenario: Scenario) -> list[Yawn]:
    from fatigue_llm.sim.driver_video import Yawn

    rng = np.random.default_rng([scenario.seed, STREAMS["yawns"]])
    yawns = [Yawn(y.start_s, y.duration_s, y.peak) for y in scenario.events.yawns if y.start_s < scenario.duration_s]
    if scenario.events.spontaneous:
        taken = [(y.start_s, y.start_s + y.duration_s) for y in yawns]
        for t in _poisson_times(rng, scenario, YAWN_RATE, refractory_s=20.0):
            duration = float(np.clip(YAWN_MEDIAN_S * math.exp(0.2 * rng.standard_normal()), 3.5, 9.0))
            peak = float(rng.uniform(0.85, 1.0))
            if _free(t, t + duration, taken, margin=3.0):
                taken.append((t, t + duration))
                yawns.append(Yawn(t, duration, peak))
    return sorted(yawns, key=lambda y: y.start_s)


def _nods(scenario: Scenario, with_microsleeps: list[HeadNod]) -> list[HeadNod]:
    from fatigue_llm.sim.driver_video import HeadNod

    rng = np.random.default_rng([scenario.seed, STREAMS["nods"]])
    nods = [HeadNod(n.start_s, n.duration_s, n.peak_deg) for n in scenario.events.nods
            if n.start_s < scenario.duration_s]
    if scenario.events.spontaneous:
        candidates = [(t, float(rng.uniform(0.8, 1.8)), float(rng.uniform(17.0, 26.0)))
                      for t in _poisson_times(rng, scenario, NOD_RATE, refractory_s=4.0)]
        candidates += [(n.start_s, n.duration_s, n.peak_deg) for n in with_microsleeps]
        taken = [(n.start_s, n.start_s + n.duration_s) for n in nods]
        for t, duration, peak in sorted(candidates):
            if _free(t, t + duration, taken, margin=1.0):
                taken.append((t, t + duration))
                nods.append(HeadNod(t, duration, peak))
    return sorted(nods, key=lambda n: n.start_s)


def driver_script(scenario: Scenario) -> DriverScript:
    """The driver's eye closures (blinks, slow blinks, microsleeps), yawns and nods over the drive, drawn from
    the fatigue profile by seeded processes (one RNG stream each) plus the scripted events.

    Closures never overlap (GAP_S of open eyes between them); a closure >= MICROSLEEP_MIN_S is a microsleep,
    every other one a blink (a slow blink above SLOW_BLINK_S). Deterministic for the scenario and its seed.
    """
    from fatigue_llm.sim.driver_video import DriverScript

    microsleeps, dips = _microsleeps(scenario)
    closures = sorted(microsleeps + _blinks(scenario, microsleeps), key=lambda c: c.start_s)
    return DriverScript(duration_s=scenario.duration_s, fps=scenario.camera.fps, closures=tuple(closures),
                        nods=tuple(_nods(scenario, dips)), yawns=tuple(_yawns(scenario)), seed=scenario.seed)


__all__ = ["ALERT", "DROWSY", "SLEEPY", "LEVEL_NAMES", "Scenario", "ScenarioError", "driver_script",
           "kss_of", "level_of", "load_scenario", "scenario_from_mapping"]
