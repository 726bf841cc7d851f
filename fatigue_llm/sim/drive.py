"""Labelled drive simulator: lane keeping by a driver model whose attention degrades with fatigue.

A kinematic single-track car drives a motorway with slowly varying bends and yaw gusts (wind,
road crown). The driver model steers intermittently towards an aim point ``preview`` s ahead
(a pure-pursuit law: without delays the lateral error is a second-order loop with damping ratio
1/sqrt(2)) after a perception delay, through a lagging, noisy arm, and keeps speed with a
proportional throttle. Fatigue f in [0, 1] makes the driver slower and sloppier, and brings
attention lapses (hazard ``lapse_rate * f^2``): during a lapse the steering wheel is held and the
foot relaxes, until the lapse ends or the rumble strip wakes the driver, who then corrects sharply
(short preview, fast arm). So an alert driver makes small
frequent corrections (low SDLP, few large steering reversals) and a drowsy one drifts and jerks
back (higher SDLP, more reversals above 2 degrees, more speed variance).

The dynamics run at 100 Hz and are sampled at the requested rate, so a seed gives the same drive
at any output rate (only the sensor noise, drawn per output sample, differs). Units are SI, left is
positive (ISO 8855); ``steering_angle`` is the steering-wheel angle (what reversal-rate gap sizes
refer to). Plain Python + numpy, no ROS.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fatigue_llm.perception.types import VehicleSample
from fatigue_llm.perception.vehicle import read_vehicle_table, write_vehicle_csv

FatigueProfile = Callable[[float], float] | Sequence[tuple[float, float]]

STEP_S = 0.01              # s, internal simulation step (100 Hz)
MAX_DURATION_S = 4 * 3600.0  # memory bound: about 100 bytes per output sample
MAX_RATE_HZ = 1000.0


class DriveSimError(ValueError):
    """Bad simulator input (duration, rate, seed or fatigue profile); the message names it."""


@dataclass(frozen=True)
class DriveParams:
    """Road, vehicle and driver-model constants. Pairs are (alert, fully drowsy), mixed linearly by f."""

    set_speed: float = 27.0                 # m/s, ~100 km/h
    wheelbase: float = 2.8                  # m
    steering_ratio: float = 15.0            # steering-wheel angle / road-wheel angle
    curvature_std: float = 1.0 / 3000.0     # 1/m, motorway bends (radius ~3 km)
    curvature_tau: float = 30.0             # s, correlation time of the bends
    gust_std: float = 0.004                 # rad/s yaw-rate disturbance
    gust_tau: float = 1.5                   # s
    preview: tuple[float, float] = (1.5, 2.0)        # s to the aim point (drowsy: sluggish)
    reaction: tuple[float, float] = (0.2, 0.4)       # s perception delay
    update: tuple[float, float] = (0.2, 0.4)         # s between steering corrections
    arm_lag: float = 0.15                   # s, time constant of the arm
    arm_noise: tuple[float, float] = (0.003, 0.006)  # rad steering-wheel noise (std)
    arm_noise_tau: float = 0.3              # s
    lapse_rate: float = 0.15                # lapses/s at f = 1 (scaled by f^2)
    lapse_median: tuple[float, float] = (0.5, 2.0)   # s, log-normal median duration
    lapse_sigma: float = 0.5                # log-normal shape
    lapse_max: float = 5.0                  # s
    wake_offset: float = 1.5                # m from the lane centre: the rumble strip ends a lapse
    refractory: float = 3.0                 # s after a correction before the next lapse can start
    correction: float = 1.5                 # s of sharp correction after a lapse
    correction_preview: float = 1.2         # s to the aim point while correcting (sharp)
    correction_arm_lag: float = 0.06        # s
    speed_gain: tuple[float, float] = (0.4, 0.1)     # 1/s
    accel_noise: tuple[float, float] = (0.05, 0.2)   # m/s^2 (std)
    accel_noise_tau: float = 2.0            # s
    lapse_decel: float = 0.15               # m/s^2 while the foot relaxes
    sensor_noise: tuple[float, float, float, float] = (0.02, 0.0005, 0.0003, 0.01)  # speed, steer, yaw, lat


@dataclass(frozen=True)
class SimulatedDrive:
    """Vehicle samples with their ground truth, one label per sample."""

    samples: list[VehicleSample]
    fatigue: list[float]                    # fatigue level in [0, 1]
    lapse: list[bool]                       # driver in an attention lapse
    lapse_events: list[tuple[float, float]]  # (start s, duration s) of every lapse


def _mix(pair: tuple[float, float], f: float) -> float:
    return pair[0] + (pair[1] - pair[0]) * f


def fatigue_levels(profile: FatigueProfile, times: np.ndarray) -> np.ndarray:
    """The profile at ``times``: a function of t, or (t, level) points interpolated linearly
    (held constant before the first and after the last point).

    Raises DriveSimError for points out of time order, or a level that is not in [0, 1].
    """
    if callable(profile):
        levels = np.array([float(profile(float(t))) for t in times])
    else:
        points = np.asarray(list(profile), dtype=float)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
            raise DriveSimError(f"fatigue profile: expected (t, level) pairs, got {list(profile)!r}")
        if not np.all(np.isfinite(points)) or np.any(np.diff(points[:, 0]) <= 0):
            raise DriveSimError(
                f"fatigue profile: times must be finite and increasing, got {points.tolist()}"
            )
        levels = np.interp(times, points[:, 0], points[:, 1])
    bad = np.flatnonzero(~((levels >= 0.0) & (levels <= 1.0)))
    if len(bad):
        i = bad[0]
        raise DriveSimError(f"fatigue profile: level {levels[i]!r} at t={times[i]:g} s is not in [0, 1]")
    return levels


class _Driver:
    """State of road, car and driver; ``step`` advances one STEP_S and records the signals."""

    def __init__(self, params: DriveParams, levels: np.ndarray, rng: np.random.Generator,
                 forced_lapses: Sequence[tuple[float, float]] = ()) -> None:
        self.p = params
        self.forced = {round(start / STEP_S): duration for start, duration in forced_lapses}
        self.levels = levels.tolist()
        n = len(levels)
        # all randomness drawn up front, in a fixed order: the drive depends on the seed only
        self.noise = rng.standard_normal((4, n)).tolist()   # curvature, gust, arm, accel
        self.lapse_draw = rng.random(n).tolist()
        self.lapse_size = rng.standard_normal(n).tolist()
        self.jitter = rng.random(n).tolist()
        self.kappa = rng.standard_normal() * params.curvature_std
        self.gust = self.arm = self.accel_noise = 0.0
        self.y = self.psi = self.yaw_rate = 0.0
        self.wheel = self.wheel_cmd = params.steering_ratio * math.atan(params.wheelbase * self.kappa)
        self.v = params.set_speed
        self.accel = 0.0
        self.next_update = 0.0
        self.lapse_end = -math.inf
        self.lapse_events: list[tuple[float, float]] = []
        self.rec = {name: array("d") for name in ("y", "psi", "kappa", "v", "wheel", "yaw_rate", "lapse")}

    def _ou(self, value: float, std: float, tau: float, z: float) -> float:
        """One step of an Ornstein-Uhlenbeck process with stationary std ``std``."""
        a = math.exp(-STEP_S / tau)
        return a * value + std * math.sqrt(1.0 - a * a) * z

    def step(self, k: int) -> None:
        p, t, f = self.p, k * STEP_S, self.levels[k]
        self.kappa = self._ou(self.kappa, p.curvature_std, p.curvature_tau, self.noise[0][k])
        self.gust = self._ou(self.gust, p.gust_std, p.gust_tau, self.noise[1][k])
        self.arm = self._ou(self.arm, _mix(p.arm_noise, f), p.arm_noise_tau, self.noise[2][k])
        self.accel_noise = self._ou(self.accel_noise, _mix(p.accel_noise, f), p.accel_noise_tau,
                                    self.noise[3][k])
        lapsing = self._attention(k, t, f)
        correcting = not lapsing and t < self.lapse_end + p.correction
        if not lapsing and t >= self.next_update:
            self._perceive(k, f, correcting)
            self.next_update = t + _mix(p.update, f) * (0.75 + 0.5 * self.jitter[k])
        self._move(lapsing, correcting, f)
        self._record(lapsing)

    def _attention(self, k: int, t: float, f: float) -> bool:
        """True while in a lapse. A lapse ends early at the lane edge (rumble strip); a new one can
        start (hazard lapse_rate * f^2) once the jolt of the last one has worn off."""
        p = self.p
        forced = self.forced.get(k) if self.forced else None
        if forced is not None and t + forced > self.lapse_end:  # a scripted lapse (microsleep) starts here
            if t < self.lapse_end:
                self.lapse_events[-1] = (self.lapse_events[-1][0], t + forced - self.lapse_events[-1][0])
            else:
                self.lapse_events.append((t, forced))
            self.lapse_end = t + forced
        if t < self.lapse_end:
            if abs(self.y) < p.wake_offset:
                return True
            start = self.lapse_events[-1][0]
            self.lapse_events[-1] = (start, t - start)
            self.lapse_end = t
            return False
        if t < self.lapse_end + p.correction + p.refractory:
            return False
        if self.lapse_draw[k] < p.lapse_rate * f * f * STEP_S:
            duration = _mix(p.lapse_median, f) * math.exp(p.lapse_sigma * self.lapse_size[k])
            duration = min(duration, p.lapse_max)
            self.lapse_end = t + duration
            self.lapse_events.append((t, duration))
            return True
        return False

    def _perceive(self, k: int, f: float, correcting: bool) -> None:
        """Aim at the lane centre ``preview`` ahead, seen ``reaction`` s ago (pure pursuit)."""
        p = self.p
        seen = k - round(_mix(p.reaction, f) / STEP_S)
        if seen >= 0:
            y, psi, kappa = self.rec["y"][seen], self.rec["psi"][seen], self.rec["kappa"][seen]
        else:  # the drive starts in a settled state
            y, psi, kappa = self.y, self.psi, self.kappa
        preview = p.correction_preview if correcting else _mix(p.preview, f)
        distance = max(self.v, 1.0) * preview
        curvature = kappa - 2.0 * (y + distance * psi) / (distance * distance)
        self.wheel_cmd = p.steering_ratio * math.atan(p.wheelbase * curvature)
        self.accel = _mix(p.speed_gain, f) * (p.set_speed - self.v)

    def _move(self, lapsing: bool, correcting: bool, f: float) -> None:
        p = self.p
        if not lapsing:  # in a lapse the wheel is held where it was
            lag = p.correction_arm_lag if correcting else p.arm_lag
            self.wheel += (self.wheel_cmd - self.wheel) * STEP_S / lag
        accel = -p.lapse_decel if lapsing else self.accel
        self.v = max(self.v + (accel + self.accel_noise) * STEP_S, 0.0)
        road_wheel = (self.wheel + self.arm) / p.steering_ratio
        self.yaw_rate = self.v * math.tan(road_wheel) / p.wheelbase + self.gust
        self.psi += (self.yaw_rate - self.v * self.kappa) * STEP_S
        self.y += self.v * math.sin(self.psi) * STEP_S

    def _record(self, lapsing: bool) -> None:
        values = (self.y, self.psi, self.kappa, self.v, self.wheel + self.arm, self.yaw_rate, float(lapsing))
        for column, value in zip(self.rec.values(), values, strict=True):
            column.append(value)


def _check_inputs(duration_s: float, rate_hz: float, seed: int, time_driving_at_start: float) -> None:
    if not (math.isfinite(duration_s) and 0 < duration_s <= MAX_DURATION_S):
        raise DriveSimError(f"duration must be > 0 and <= {MAX_DURATION_S:g} s, got {duration_s}")
    if not (math.isfinite(rate_hz) and 0 < rate_hz <= MAX_RATE_HZ):
        raise DriveSimError(f"rate must be > 0 and <= {MAX_RATE_HZ:g} Hz, got {rate_hz}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DriveSimError(f"seed must be a non-negative integer, got {seed!r}")
    if not (math.isfinite(time_driving_at_start) and time_driving_at_start >= 0):
        raise DriveSimError(f"time driving at start must be >= 0 s, got {time_driving_at_start}")


def simulate_drive(duration_s: float, rate_hz: float, fatigue_profile: FatigueProfile, seed: int = 0, *,
                   time_driving_at_start: float = 0.0, params: DriveParams | None = None,
                   forced_lapses: Sequence[tuple[float, float]] = ()) -> SimulatedDrive:
    """Simulate ``duration_s`` of lane keeping sampled at ``rate_hz`` (samples at t = i / rate_hz).

    ``fatigue_profile`` gives the fatigue level in [0, 1] over time (see ``fatigue_levels``).
    ``forced_lapses`` are (start s, duration s) lapses that happen besides the drawn ones, e.g. the
    microsleeps of a scripted driver (sim/scenario.py); like the others they end early at the rumble strip.
    Deterministic for a seed. Raises DriveSimError for a bad duration, rate, seed or profile.
    """
    _check_inputs(duration_s, rate_hz, seed, time_driving_at_start)
    p = params or DriveParams()
    steps = math.ceil(duration_s / STEP_S) + 1
    levels = fatigue_levels(fatigue_profile, np.arange(steps) * STEP_S)
    driver = _Driver(p, levels, np.random.default_rng(seed), forced_lapses)
    for k in range(steps):
        driver.step(k)
    times = np.arange(math.floor(duration_s * rate_hz + 1e-9) + 1) / rate_hz
    return _sample(driver, times, fatigue_levels(fatigue_profile, times), time_driving_at_start,
                   np.random.default_rng([seed, 1]))


def _sample(driver: _Driver, times: np.ndarray, labels: np.ndarray, time_driving_at_start: float,
            rng: np.random.Generator) -> SimulatedDrive:
    """Signals at ``times`` (linear between simulation steps) with sensor noise."""
    grid = np.arange(len(driver.rec["y"])) * STEP_S
    signals = [np.interp(times, grid, np.frombuffer(driver.rec[name]))
               for name in ("v", "wheel", "yaw_rate", "y")]
    for signal, std in zip(signals, driver.p.sensor_noise, strict=True):
        signal += rng.normal(0.0, std, len(times))
    speed, steering, yaw_rate, lateral = (signal.tolist() for signal in signals)
    steps = np.minimum(np.round(times / STEP_S).astype(int), len(grid) - 1)
    lapse = (np.frombuffer(driver.rec["lapse"])[steps] > 0).tolist()
    samples = [VehicleSample(t, speed[i], steering[i], yaw_rate[i], lateral[i], time_driving_at_start + t)
               for i, t in enumerate(times.tolist())]
    return SimulatedDrive(samples, labels.tolist(), lapse, list(driver.lapse_events))


# --- files ----------------------------------------------------------------------------------------
def write_drive_csv(path: str | os.PathLike, drive: SimulatedDrive) -> None:
    """Vehicle CSV with label columns ``fatigue`` and ``lapse`` (0/1) appended; atomic.

    Raises OSError if the file cannot be written.
    """
    write_vehicle_csv(path, drive.samples,
                      {"fatigue": drive.fatigue, "lapse": [float(flag) for flag in drive.lapse]})


def read_drive_csv(path: str | os.PathLike) -> SimulatedDrive:
    """A drive written by ``write_drive_csv`` (lapse events are rebuilt from the per-sample flags).

    Raises VehicleSignalError for a malformed file or missing label columns; OSError if unreadable.
    """
    samples, labels = read_vehicle_table(path, ("fatigue", "lapse"))
    lapse = [value > 0.5 for value in labels["lapse"]]
    return SimulatedDrive(samples, labels["fatigue"], lapse, _lapse_events(samples, lapse))


def _lapse_events(samples: Sequence[VehicleSample], lapse: Sequence[bool]) -> list[tuple[float, float]]:
    events, start = [], None
    for sample, flag in zip(samples, lapse, strict=True):
        if flag and start is None:
            start = sample.timestamp_s
        elif not flag and start is not None:
            events.append((start, sample.timestamp_s - start))
            start = None
    if start is not None:
        events.append((start, samples[-1].timestamp_s - start))
    return events


# --- command line ---------------------------------------------------------------------------------
def positive_number(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _fatigue_range(text: str) -> tuple[float, float]:
    parts = text.split(":")
    try:
        start, end = (float(part) for part in parts) if len(parts) == 2 else (float(text),) * 2
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected START:END fatigue levels, e.g. 0.1:0.8; got {text!r}"
        ) from None
    if not all(0.0 <= level <= 1.0 for level in (start, end)):
        raise argparse.ArgumentTypeError(f"fatigue levels must be within [0, 1], got {text!r}")
    return start, end


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fatigue-llm simulate-drive",
        description="Simulate labelled vehicle signals (lane keeping by a tiring driver) into a vehicle CSV "
                    "with 'fatigue' and 'lapse' label columns.",
    )
    parser.add_argument("out", metavar="OUT.csv", help="CSV file to write")
    parser.add_argument("--duration", type=positive_number, default=600.0, metavar="S",
                        help=f"length of the drive in s (default 600, at most {MAX_DURATION_S:g})")
    parser.add_argument("--rate", type=positive_number, default=50.0, metavar="HZ",
                        help=f"sample rate in Hz (default 50, at most {MAX_RATE_HZ:g})")
    parser.add_argument("--fatigue", type=_fatigue_range, default=(0.0, 0.0), metavar="START:END",
                        help="fatigue level in [0, 1] at the start and end, linear in between; "
                             "one level holds for the whole drive (default 0:0)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    parser.add_argument("--time-driving-start", type=float, default=0.0, metavar="S",
                        help="time_driving at the start of the drive in s (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``fatigue-llm simulate-drive``; returns 0, 2 for bad arguments (argparse exits with 2 itself
    for malformed ones), 1 if the file cannot be written."""
    parser = _parser()
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not out.parent.is_dir():
        parser.error(f"folder of OUT.csv does not exist: {out.parent}")
    start, end = args.fatigue
    try:
        drive = simulate_drive(args.duration, args.rate, [(0.0, start), (args.duration, end)], args.seed,
                               time_driving_at_start=args.time_driving_start)
        write_drive_csv(out, drive)
    except DriveSimError as error:
        print(f"fatigue-llm simulate-drive: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"fatigue-llm simulate-drive: error: cannot write {out}: {error.strerror or error}",
              file=sys.stderr)
        return 1
    print(f"wrote {len(drive.samples)} samples ({args.duration:g} s at {args.rate:g} Hz, "
          f"fatigue {start:g} -> {end:g}, seed {args.seed}, {len(drive.lapse_events)} lapses) to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
