"""``fatigue-llm generate-data OUT.csv --rows N --seed S``: a synthetic intervention dataset (cases CSV).

Each row is one 60 s feature window of one driver, drawn as

1. a driving **context** (``CONTEXTS``: highway day / night, city day / night, long haul, rain), which sets
   time awake, time driving and the vehicle-signal baselines;
2. a latent **sleepiness** on the Karolinska Sleepiness Scale (KSS 1-9), rising with time awake, time
   driving and night driving; state alert (KSS 1-5), drowsy (6-7) or sleepy (8-9);
3. the eight features in OUR units (README "Topics and messages"), from KSS-indexed medians with a
   per-driver sensitivity and a shared per-window fluctuation (so the signs move together, as they do),
   each clipped to ``FEATURE_RANGES``; a source is sometimes absent (empty cell = NaN), as in real data:
   no voice source in about half the windows, no vehicle bus in 10 %, face lost in 3 %, time awake unknown
   in 10 %.

Relations followed (shapes and directions; the magnitudes are the project's own anchors):

- PERCLOS (P80, 60 s) rises with drowsiness, slowly while alert and steeply once sleepy; about 0.15 marks
  drowsiness (Wierwille et al. 1994; Dinges & Grace 1998, the NHTSA PERCLOS report).
- Blinks lengthen and become more frequent with sleepiness (Schleicher et al. 2008): blink rate
  ~14-18 /min alert, low-to-mid 20s sleepy.
- SDLP and blink duration grow curvilinearly with KSS, mostly from KSS 7 on, with large individual
  differences (Ingre et al. 2006): hence the steep KSS tables and the per-driver sensitivity. Lane
  position itself is not a cases-CSV column; its drift-and-correct pattern shows in the columns that are.
- Steering reversals (Markkula & Engström 2006; the project counts swings >= 2 deg, perception/vehicle.py)
  grow with the drift-and-correct steering of a drowsy driver (sim/drive.py); ~8 /min alert on a
  motorway (the projector's reference), more in town and in rain. Speed variance and yaw-rate spread grow
  with it; both are far larger in town than on a motorway, which is how a model can tell the place apart.
- Time awake: > 16 h impairs like 0.05 % BAC (Dawson & Reid 1997) and raises sleepiness.
- Voice quality has no published scale; it falls gently with KSS, as in the bundled seed cases.

Label: ``level = max(rule level, latent level)``, the rule level being
``rule_decision_for(features, InterventionConfig())`` on exactly the values written (so every row is
answerable by the engine's schema) and the latent level INFO for KSS <= 5, ADVISORY for 6, WARNING for 7-8,
CRITICAL for 9. The action is one of ``LEVEL_ACTION_CHOICES[level]``, chosen by context and evidence
(``_choose_action``: a break after a long drive or day, ventilation only as an early-sign help, a stop when
sleepy on a motorway). The message is a plain driver-facing sentence from templates per action x place x
evidence (``TEMPLATES``; no figures, no codes, <= 80 chars, each passing ``speaks_to_driver``), naming
only what the features show (eyes closing, nodding, a long day) or the place the vehicle signals imply.

Effectiveness is on the tracker's scale (intervention/effectiveness.py: 0.5 no change, 1 full recovery):
a relative fatigue reduction is drawn per action (``RECOVERY``) and scored with the tracker's own
``fatigue_score`` / ``effectiveness``; empty when no indicator is available (the tracker drops those too).
Breaks and stops work when taken (caffeine plus a nap: Reyner & Horne 1997), fresh air and sounds help
little and briefly (cold air and radio: Reyner & Horne 1998).

The ``context`` column is for analysis; the trainer reads the features, level, action and message.
Same seed -> byte-identical file (``random.Random``, fixed formatting, ``\\n`` line ends).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import random
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fatigue_llm.features.types import FEATURE_RANGES, SEED_FEATURES, FatigueFeatures
from fatigue_llm.intervention.config import InterventionConfig
from fatigue_llm.intervention.effectiveness import effectiveness, fatigue_score
from fatigue_llm.intervention.engine import rule_decision_for
from fatigue_llm.intervention.types import ACTIONS, LEVEL_ACTION_CHOICES, Level

COLUMNS = (*SEED_FEATURES, "level", "action", "message", "effectiveness", "context")
WINDOW_S = 60.0  # the window read_cases_csv gives every row
MAX_ROWS = 1_000_000

# --- contexts ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    place: str                       # "highway" or "city": decides the vehicle baselines and the wording
    weight: float                    # sampling weight
    awake_h: tuple[float, float]     # time awake: mean, std (h)
    driving_h: tuple[float, float]   # time driving since the last rest: uniform low, high (h)
    kss_shift: float                 # night driving, monotony
    reversals: float                 # steering reversals >= 2 deg per minute, alert median
    speed_var: float                 # (m/s)^2, alert median over 60 s
    yaw_std: float                   # rad/s, alert median


CONTEXTS: dict[str, Context] = {
    "highway_day": Context("highway", 0.22, (9.0, 3.0), (0.2, 2.5), 0.0, 8.0, 0.8, 0.012),
    "highway_night": Context("highway", 0.18, (16.0, 3.0), (0.3, 3.0), 1.5, 8.0, 0.6, 0.011),
    "city_day": Context("city", 0.18, (8.0, 3.0), (0.1, 1.0), -0.5, 14.0, 9.0, 0.08),
    "city_night": Context("city", 0.10, (15.0, 3.5), (0.1, 1.2), 1.0, 13.0, 7.0, 0.07),
    "long_haul": Context("highway", 0.20, (13.0, 3.5), (1.5, 4.5), 0.8, 7.0, 0.5, 0.010),
    "rain": Context("highway", 0.12, (10.0, 3.5), (0.2, 2.5), 0.2, 11.0, 1.5, 0.016),
}

# --- sleepiness -> features (index KSS - 1) ---------------------------------------------------------------

PERCLOS_MEDIAN = (0.020, 0.025, 0.030, 0.035, 0.045, 0.070, 0.110, 0.170, 0.270)
BLINK_MEDIAN = (14.0, 14.5, 15.0, 16.0, 17.0, 19.0, 21.0, 22.5, 23.0)   # /min
NOD_RATE = (0.0, 0.0, 0.02, 0.05, 0.1, 0.3, 0.8, 1.8, 3.5)              # /min
VEHICLE_GAIN = (1.0, 1.0, 1.0, 1.0, 1.0, 1.12, 1.3, 1.55, 1.9)          # reversals, speed and yaw spread
VOICE_MEDIAN = tuple(0.92 - 0.035 * k for k in range(9))                # score, seed-case trend
KSS_LEVEL = (Level.INFO,) * 5 + (Level.ADVISORY, Level.WARNING, Level.WARNING, Level.CRITICAL)

P_NO_VOICE, P_NO_VEHICLE, P_NO_FACE, P_NO_AWAKE = 0.5, 0.10, 0.03, 0.10

# column -> decimals written (blinks and nods are counts in a 60 s window)
DECIMALS = {"eye_closure_ratio": 3, "blink_frequency": 0, "head_nod": 0, "voice_quality": 2,
            "steering_reversal_rate": 1, "speed_variance": 2, "yaw_rate": 3, "time_awake": 1}


def state_of(kss: int) -> str:
    return "alert" if kss <= 5 else "drowsy" if kss <= 7 else "sleepy"


def _clip(value: float, name: str) -> float:
    allowed = FEATURE_RANGES[name]
    return min(max(value, allowed.low), allowed.high)


def _poisson(rng: random.Random, rate: float) -> int:
    """Knuth's method; rates here are a few per minute at most."""
    limit, count, product = math.exp(-rate), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _kss(rng: random.Random, context: Context, awake_h: float, driving_h: float) -> int:
    mean = 3.6 + context.kss_shift + 0.28 * max(0.0, awake_h - 8.0) + 0.45 * driving_h
    return min(9, max(1, round(rng.gauss(mean, 1.9))))


def _raw_features(rng: random.Random, context: Context, kss: int, awake_h: float) -> dict[str, float]:
    """The eight features before rounding and absence; NaN-free."""
    i = kss - 1
    sensitivity = math.exp(rng.gauss(0.0, 0.3)) if kss >= 6 else 1.0  # individual differences (Ingre 2006)
    shared = rng.gauss(0.0, 1.0)  # this window's fluctuation, common to every sign

    def noise(sigma: float) -> float:
        return sigma * (0.6 * shared + 0.8 * rng.gauss(0.0, 1.0))

    gain = 1.0 + (VEHICLE_GAIN[i] - 1.0) * sensitivity
    return {
        "eye_closure_ratio": min(0.95, PERCLOS_MEDIAN[i] * sensitivity * math.exp(noise(0.35))),
        "blink_frequency": max(4.0, BLINK_MEDIAN[i] + noise(4.0)),
        "head_nod": float(_poisson(rng, NOD_RATE[i] * sensitivity * math.exp(noise(0.4)))),
        "voice_quality": VOICE_MEDIAN[i] - noise(0.05),
        "steering_reversal_rate": context.reversals * gain * math.exp(noise(0.25)),
        "speed_variance": context.speed_var * gain * math.exp(noise(0.5)),
        "yaw_rate": context.yaw_std * gain * math.exp(noise(0.3)),
        "time_awake": awake_h,
    }


def _observed(rng: random.Random, raw: dict[str, float]) -> dict[str, str]:
    """Rounded, range-clipped cell texts, with the absent sources left empty."""
    absent: set[str] = set()
    if rng.random() < P_NO_FACE:
        absent |= {"eye_closure_ratio", "blink_frequency", "head_nod"}
    if rng.random() < P_NO_VOICE:
        absent.add("voice_quality")
    if rng.random() < P_NO_VEHICLE:
        absent |= {"steering_reversal_rate", "speed_variance", "yaw_rate"}
    if rng.random() < P_NO_AWAKE:
        absent.add("time_awake")
    return {name: "" if name in absent else f"{_clip(raw[name], name):.{DECIMALS[name]}f}" for name in SEED_FEATURES}


def _features(cells: dict[str, str]) -> FatigueFeatures:
    """Exactly what read_cases_csv builds from these cells (so the rule level is the trainer's)."""
    values = {name: float(text) if text else math.nan for name, text in cells.items()}
    return FatigueFeatures.from_dict({**values, "window_duration": WINDOW_S})


# --- action and message --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """What the written features show (and the latent drive length for the break advice)."""

    place: str
    eyes_closing: bool   # PERCLOS >= 0.15
    eyes_closed: bool    # PERCLOS >= 0.30
    nodding: bool        # >= 2 nods/min
    long_day: bool       # >= 16 h awake
    long_drive: bool     # >= 2 h since the last rest


def _evidence(features: FatigueFeatures, context: Context, driving_h: float) -> Evidence:
    def at_least(value: float, threshold: float) -> bool:
        return math.isfinite(value) and value >= threshold

    f = features
    return Evidence(context.place, at_least(f.eye_closure_ratio, 0.15), at_least(f.eye_closure_ratio, 0.30),
                    at_least(f.head_nod, 2.0), at_least(f.time_awake, 16.0), driving_h >= 2.0)


def _choose_action(rng: random.Random, level: Level, kss: int, evidence: Evidence) -> str:
    """One of LEVEL_ACTION_CHOICES[level], weighted by context and evidence (module docstring)."""
    e = evidence
    if level == Level.INFO:
        weights = {"none": 1.0, "dashboard_notice": 1.0 if e.long_drive or e.long_day else 0.05}
    elif level == Level.ADVISORY:
        tired_of_driving = e.long_drive or e.long_day
        weights = {"dashboard_notice": 0.45, "suggest_break": 1.4 if tired_of_driving else 0.35,
                   "ventilation": 0.15 if e.place == "highway" and kss >= 7 else 0.25}
    elif level == Level.WARNING:
        acute = e.eyes_closing or e.nodding
        weights = {"suggest_break": 1.0 if e.long_drive or e.long_day else 0.45,
                   "audio_chime": 0.9 if acute else 0.5}
    else:
        pull = 0.75 if e.place == "highway" and kss >= 8 else 0.45
        pull -= 0.25 if e.eyes_closed else 0.0  # eyes closing now: wake first, then stop
        weights = {"pull_over": pull, "alert_audio_haptic": 1.0 - pull}
    actions = list(LEVEL_ACTION_CHOICES[level])
    return rng.choices(actions, weights=[weights[a] for a in actions])[0]


Needs = Callable[[Evidence], bool]
ANY: Needs = lambda e: True  # noqa: E731
HIGHWAY: Needs = lambda e: e.place == "highway"  # noqa: E731
CITY: Needs = lambda e: e.place == "city"  # noqa: E731

# (action, at INFO?) -> [(message, when it may be said)]; "at INFO" only matters for dashboard_notice
TEMPLATES: dict[tuple[str, bool], list[tuple[str, Needs]]] = {
    ("none", True): [
        (ACTIONS["none"], ANY),
        ("All good. Enjoy the drive.", ANY),
        ("You seem alert. Drive safely.", ANY),
        ("No signs of tiredness right now.", ANY),
        ("You look fresh. Keep it up and stay focused.", ANY),
        ("You look alert. Keep a safe distance and enjoy the drive.", HIGHWAY),
        ("You look alert. Watch out for cyclists and enjoy the drive.", CITY),
    ],
    ("dashboard_notice", True): [
        ("You seem alert. Remember to plan a break on a long drive.", ANY),
        ("All fine so far. A regular break keeps it that way.", ANY),
        ("You have been driving a while. Plan a break at the next rest area.", lambda e: e.long_drive),
        ("It has been a long day. Plan a break before tiredness sets in.", lambda e: e.long_day),
    ],
    ("dashboard_notice", False): [
        (ACTIONS["dashboard_notice"], HIGHWAY),
        ("Early signs of tiredness. Plan a short break soon.", ANY),
        ("You may be getting tired. Think about a pause soon.", ANY),
        ("A little tiredness is showing. Plan your next stop.", ANY),
        ("Signs of tiredness. Plan a stop at the next service area.", HIGHWAY),
        ("Early signs of tiredness. Plan a pause once you reach your stop.", CITY),
        ("You may be tiring. Consider a short stop somewhere quiet.", CITY),
        ("A long day is catching up with you. Plan a break soon.", lambda e: e.long_day),
    ],
    ("suggest_break", False): [
        (ACTIONS["suggest_break"], ANY),
        ("You seem tired. Please take a break soon.", ANY),
        ("Time for a break: stretch your legs and have a coffee.", ANY),
        ("Tiredness is showing. A short break and a coffee will help.", ANY),
        ("You look tired. Please take a break at the next rest area.", HIGHWAY),
        ("Please leave at the next exit and take a proper break.", HIGHWAY),
        ("Tiredness is building. Stop at the next service area for a coffee.", HIGHWAY),
        ("You look tired. Find a place to park and take a short break.", CITY),
        ("Please take a break soon. Park somewhere safe and stretch.", CITY),
        ("You have been awake a long time. Please take a break soon.", lambda e: e.long_day),
        ("A long day shows. A coffee and a short nap would help.", lambda e: e.long_day),
        ("You have been driving a long time. Time for a proper break.", lambda e: e.long_drive),
        ("Long drive so far. Please stop for a break and stretch.", lambda e: e.long_drive),
        ("Your eyes look heavy. Please stop soon for a coffee and a nap.", lambda e: e.eyes_closing),
    ],
    ("ventilation", False): [
        (ACTIONS["ventilation"], ANY),
        ("Let some fresh air in, and plan a break soon.", ANY),
        ("Cooler air may help for a while. Plan a stop soon.", ANY),
        ("Set the fan to fresh air for a while, and plan a break soon.", ANY),
        ("Open a window for some fresh air, then plan a break.", ANY),
        ("Some fresh air may help. Plan a short stop once you can.", CITY),
        ("Cool fresh air may help. Plan a stop at the next rest area.", HIGHWAY),
    ],
    ("audio_chime", False): [
        ("Warning: clear signs of tiredness. Please stop for a break soon.", ANY),
        ("You are getting very tired. Please take a break very soon.", ANY),
        (ACTIONS["audio_chime"], lambda e: e.eyes_closing and e.place == "highway"),
        ("Your eyes are closing often. Please stop for a break soon.", lambda e: e.eyes_closing),
        ("Your head is nodding. Please take a break very soon.", lambda e: e.nodding),
        ("Warning: you are very tired. Take a break at the next exit.", HIGHWAY),
        ("Warning: you are very tired. Park somewhere safe soon.", CITY),
    ],
    ("alert_audio_haptic", False): [
        ("Wake up! Keep your eyes on the road and stop safely.", ANY),
        ("Danger: you are falling asleep. Stop as soon as it is safe.", ANY),
        ("Stay awake! Slow down and get off the road safely.", ANY),
        (ACTIONS["alert_audio_haptic"], lambda e: e.eyes_closed),
        ("Wake up! Your eyes are closing. Stop at the roadside when safe.", lambda e: e.eyes_closing and
         e.place == "city"),
        ("Wake up! Your head is dropping. Take the next exit and stop.", lambda e: e.nodding and
         e.place == "highway"),
    ],
    ("pull_over", False): [
        (ACTIONS["pull_over"], ANY),
        ("Please stop now. Let someone else drive or take a nap.", ANY),
        ("You are too tired to drive on safely. Stop and rest now.", ANY),
        ("You are falling asleep. Take the next exit or rest area and stop.", HIGHWAY),
        ("Stop at the next rest area now and sleep for a while.", HIGHWAY),
        ("You are too tired to drive. Park safely now and rest.", CITY),
        ("Please pull over somewhere safe right now and rest.", CITY),
    ],
}


def _message(rng: random.Random, action: str, level: Level, evidence: Evidence) -> str:
    options = [text for text, needs in TEMPLATES[(action, level == Level.INFO)] if needs(evidence)]
    return rng.choice(options)


# --- effectiveness ---------------------------------------------------------------------------------------

# action -> (probability the driver follows it, relative fatigue reduction if followed (mean, std),
# reduction if not (mean, std)); a reduction of 0 scores 0.5, full recovery 1
RECOVERY: dict[str, tuple[float, tuple[float, float], tuple[float, float]]] = {
    "none": (1.0, (-0.05, 0.08), (0.0, 0.0)),               # fatigue creeps up on its own
    "dashboard_notice": (0.35, (0.35, 0.2), (0.0, 0.1)),    # a notice is often ignored
    "suggest_break": (0.7, (0.6, 0.2), (0.0, 0.12)),        # a break (coffee + nap) works when taken
    "ventilation": (1.0, (0.08, 0.15), (0.0, 0.0)),         # cold air: little and briefly
    "audio_chime": (1.0, (0.2, 0.15), (0.0, 0.0)),          # a short arousal
    "alert_audio_haptic": (1.0, (0.3, 0.2), (0.0, 0.0)),    # wakes, but the sleep pressure stays
    "pull_over": (0.8, (0.7, 0.15), (0.1, 0.15)),           # a stop and a rest
}


def _effectiveness(rng: random.Random, action: str, kss: int, features: FatigueFeatures) -> float:
    before = fatigue_score(features)
    follow, taken, ignored = RECOVERY[action]
    mean, std = taken if rng.random() < follow else ignored
    if kss >= 8 and action not in ("pull_over", "suggest_break"):
        mean -= 0.1  # the sleepiest gain least from anything short of sleep
    reduction = min(1.0, max(-1.0, rng.gauss(mean, std)))
    if math.isnan(before):
        return math.nan  # no indicator to score it by: the tracker drops such an intervention
    after = min(1.0, max(0.0, before * (1.0 - reduction)))
    return effectiveness(before, after)


# --- rows -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedCase:
    context: str
    kss: int
    cells: dict[str, str]        # the eight feature cells as written ("" = absent)
    features: FatigueFeatures    # parsed back from ``cells``
    rule_level: Level
    level: Level
    action: str
    message: str
    effectiveness: float         # NaN when unscorable

    @property
    def state(self) -> str:
        return state_of(self.kss)

    def row(self) -> list[str]:
        effect = "" if math.isnan(self.effectiveness) else f"{self.effectiveness:.2f}"
        return [*(self.cells[name] for name in SEED_FEATURES), self.level.name, self.action, self.message,
                effect, self.context]


def generate_case(rng: random.Random, rules: InterventionConfig) -> GeneratedCase:
    names = list(CONTEXTS)
    name = rng.choices(names, weights=[CONTEXTS[n].weight for n in names])[0]
    context = CONTEXTS[name]
    awake_h = min(30.0, max(0.5, rng.gauss(*context.awake_h)))
    driving_h = rng.uniform(*context.driving_h)
    kss = _kss(rng, context, awake_h, driving_h)
    cells = _observed(rng, _raw_features(rng, context, kss, awake_h))
    features = _features(cells)
    rule_level = rule_decision_for(features, rules, now_s=0.0).level
    level = max(rule_level, KSS_LEVEL[kss - 1])
    evidence = _evidence(features, context, driving_h)
    action = _choose_action(rng, level, kss, evidence)
    message = _message(rng, action, level, evidence)
    return GeneratedCase(name, kss, cells, features, rule_level, level, action, message,
                         _effectiveness(rng, action, kss, features))


def generate_cases(rows: int, seed: int) -> list[GeneratedCase]:
    """``rows`` cases, the same for the same seed."""
    if not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"rows must be in [1, {MAX_ROWS}], got {rows}")
    rng, rules = random.Random(seed), InterventionConfig()
    return [generate_case(rng, rules) for _ in range(rows)]


def csv_text(cases: list[GeneratedCase]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(case.row() for case in cases)
    return buffer.getvalue()


def write_csv(path: Path, cases: list[GeneratedCase]) -> None:
    """Atomically: a reader sees the old file or the whole new one, never half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            handle.write(csv_text(cases))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fatigue-llm generate-data", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="cases CSV to write (fatigue-llm train's data.train)")
    parser.add_argument("--rows", type=int, default=2000, help="number of rows (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same bytes")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cases = generate_cases(args.rows, args.seed)
        write_csv(args.out, cases)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    levels = Counter(case.level.name for case in cases)
    summary = ", ".join(f"{level.name} {levels[level.name]}" for level in Level)
    print(f"wrote {len(cases)} rows to {args.out} ({summary})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
