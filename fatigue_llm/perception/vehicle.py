"""Fatigue indicators from vehicle signals over a sliding time window, and the vehicle CSV format.

Plain Python and numpy (no ROS). ``VehicleWindow`` takes ``VehicleSample``s in time order and
returns ``VehicleMetrics``: steering reversal rate, steering / yaw-rate / lateral-offset spread and
speed variance. Statistics are integrals over time of the signal interpolated linearly between
samples, so a 10 Hz and a 100 Hz (or an irregular) recording of the same signal give the same
numbers. A signal that is NaN is absent; a metric whose signal is absent, or covers less than
``min_duration_s`` of the window, is NaN.

Vehicle CSV: header ``timestamp_s,speed,steering_angle,yaw_rate[,lateral_offset][,time_driving]``
in SI units (s, m/s, rad, rad/s, m, s); an empty cell (or ``nan``) is an absent value; columns with
other names are ignored by ``read_vehicle_csv`` and can be read with ``read_vehicle_table``.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fatigue_llm.perception.types import VehicleSample

NAN = math.nan

SIGNALS = ("speed", "steering_angle", "yaw_rate", "lateral_offset", "time_driving")
REQUIRED_COLUMNS = ("timestamp_s", "speed", "steering_angle", "yaw_rate")
CSV_COLUMNS = ("timestamp_s", *SIGNALS)

# Steering wheel reversal rate as defined by Markkula & Engström (2006), "A steering wheel reversal
# rate metric for assessing effects of visual and cognitive secondary task load", Proc. 13th ITS
# World Congress, London; standardised in SAE J2944 (2015). The angle is low-passed with a 2nd-order
# Butterworth filter (0.6 Hz), its stationary points are found, and a reversal is a swing between
# stationary points of at least the gap size, counted upwards and downwards separately.
REVERSAL_CUTOFF_HZ = 0.6
RESAMPLE_HZ = 20.0        # steering is averaged into cells of this absolute time grid, then filtered
DEFAULT_MAX_GAP_S = 1.0   # samples further apart than this are a dropout: nothing is interpolated across
DEFAULT_MIN_DURATION_S = 2.0  # a metric needs at least this much signal in the window

_T, _SPEED, _STEER, _YAW, _LAT, _DRIVING = range(6)


class VehicleSignalError(ValueError):
    """A vehicle sample or vehicle CSV is invalid; the message names the field (and file/line)."""


@dataclass(frozen=True)
class VehicleMetrics:
    """Vehicle-signal statistics over one window; NaN where the source signal is absent or too short."""

    steering_reversal_rate: float = NAN  # reversals/min (Markkula & Engström 2006)
    steering_angle_std: float = NAN      # rad
    speed_variance: float = NAN          # (m/s)^2
    yaw_rate_std: float = NAN            # rad/s
    yaw_rate_mean_abs: float = NAN       # rad/s
    sdlp: float = NAN                    # m, standard deviation of lateral position
    time_driving: float = NAN            # s, latest value in the window
    window_duration: float = 0.0         # s of samples in the window
    samples: int = 0                     # samples in the window


# --- storage --------------------------------------------------------------------------------------
class _Rows:
    """FIFO of float rows, column 0 = time, kept contiguous in one numpy array.

    Appending is amortised O(1): when the array is full, rows older than ``keep_s`` before the
    newest are dropped (one is kept as the left neighbour of the window), then the live rows are
    moved to the front or the array doubles.
    """

    def __init__(self, width: int, keep_s: float, capacity: int = 1024) -> None:
        self._a = np.empty((capacity, width))
        self._start = 0
        self._end = 0
        self._keep_s = keep_s

    def append(self, row: tuple[float, ...]) -> None:
        if self._end == len(self._a):
            self._make_room()
        self._a[self._end] = row
        self._end += 1

    def drop_before(self, horizon: float) -> None:
        """Drop rows older than ``horizon``, keeping the newest one before it."""
        first_inside = int(np.searchsorted(self._a[self._start:self._end, 0], horizon, side="left"))
        self._start += max(first_inside - 1, 0)

    def view(self) -> np.ndarray:
        return self._a[self._start:self._end]

    def _make_room(self) -> None:
        self.drop_before(self._a[self._end - 1, 0] - self._keep_s)
        live = self._end - self._start
        if live > len(self._a) // 2:
            grown = np.empty((2 * len(self._a), self._a.shape[1]))
            grown[:live] = self._a[self._start:self._end]
            self._a = grown
        else:
            self._a[:live] = self._a[self._start:self._end]  # numpy copies overlapping ranges safely
        self._start, self._end = 0, live


# --- steering filter ------------------------------------------------------------------------------
def butterworth2(cutoff_hz: float, rate_hz: float) -> tuple[float, float, float, float, float]:
    """Coefficients (b0, b1, b2, a1, a2) of a 2nd-order Butterworth low-pass (bilinear, pre-warped)."""
    k = math.tan(math.pi * cutoff_hz / rate_hz)
    norm = 1.0 / (1.0 + math.sqrt(2.0) * k + k * k)
    b0 = k * k * norm
    return b0, 2.0 * b0, b0, 2.0 * (k * k - 1.0) * norm, (1.0 - math.sqrt(2.0) * k + k * k) * norm


class _SteeringFilter:
    """Steering angle -> low-passed angle on the absolute time grid k / RESAMPLE_HZ, sample by sample.

    The signal (linear between samples) is averaged over each grid cell, which keeps steering noise
    above the grid's Nyquist frequency from aliasing into the band of the low-pass, then filtered.
    Output rows are (cell end time, filtered angle, run id); a dropout (a gap over ``max_gap_s`` or an
    absent angle) ends a run, and the filter restarts in steady state at the next valid angle.
    """

    def __init__(self, rows: _Rows, max_gap_s: float) -> None:
        self._rows = rows
        self._max_gap_s = max_gap_s
        self._b0, self._b1, self._b2, self._a1, self._a2 = butterworth2(REVERSAL_CUTOFF_HZ, RESAMPLE_HZ)
        self._t = NAN
        self._x = NAN
        self._z1 = self._z2 = 0.0
        self._run = 0
        self._next_cell = 0    # index k of the grid time k / RESAMPLE_HZ that closes the current cell
        self._area = 0.0       # integral of the angle over the current cell so far
        self._span = 0.0       # seconds of the current cell covered so far

    def add(self, t: float, x: float) -> None:
        if math.isfinite(x) and math.isfinite(self._x) and t - self._t <= self._max_gap_s:
            self._integrate(t, x)
        elif math.isfinite(x):
            self._restart(t, x)
        self._t, self._x = t, x

    def _restart(self, t: float, x: float) -> None:
        self._run += 1
        self._z2 = (self._b2 - self._a2) * x
        self._z1 = (self._b1 - self._a1) * x + self._z2
        self._next_cell = math.floor(t * RESAMPLE_HZ) + 1
        self._area = self._span = 0.0

    def _integrate(self, t: float, x: float) -> None:
        t0, x0 = self._t, self._x
        slope = (x - x0) / (t - t0)
        while (edge := self._next_cell / RESAMPLE_HZ) <= t:
            x_edge = x0 + (edge - t0) * slope
            self._area += (edge - t0) * (x0 + x_edge) / 2.0
            self._span += edge - t0
            if self._span > 0:
                self._filter(edge, self._area / self._span)
            self._area = self._span = 0.0
            self._next_cell += 1
            t0, x0 = edge, x_edge
        self._area += (t - t0) * (x0 + x) / 2.0
        self._span += t - t0

    def _filter(self, t: float, x: float) -> None:
        y = self._b0 * x + self._z1  # direct form II transposed
        self._z1 = self._b1 * x - self._a1 * y + self._z2
        self._z2 = self._b2 * x - self._a2 * y
        self._rows.append((t, y, float(self._run)))


def stationary_values(y: np.ndarray) -> np.ndarray:
    """Values of ``y`` at its interior local extrema (a plateau counts once, at its end)."""
    d = np.diff(y)
    moving = np.flatnonzero(d != 0.0)
    if len(moving) < 2:
        return y[:0]
    direction = np.sign(d[moving])
    turns = np.flatnonzero(direction[1:] != direction[:-1])
    return y[moving[turns + 1]]


def count_reversals(points: Sequence[float], gap: float) -> int:
    """Upward plus downward reversals of at least ``gap`` between stationary points.

    Markkula & Engström (2006): an upward reversal is a rise of >= gap from the lowest point since
    the last counted upward reversal; downward reversals mirror it.
    """
    total = 0
    for sign in (1.0, -1.0):
        anchor = sign * points[0] if len(points) else 0.0
        for value in points[1:]:
            v = sign * value
            if v - anchor >= gap:
                total += 1
                anchor = v
            elif v < anchor:
                anchor = v
    return total


# --- window ---------------------------------------------------------------------------------------
class VehicleWindow:
    """Vehicle samples of the last ``window_s`` seconds -> ``VehicleMetrics``.

    ``reversal_gap_rad`` is the smallest steering swing counted as a reversal. Samples further apart
    than ``max_gap_s`` are a dropout (not interpolated across); a metric needs ``min_duration_s`` of
    its signal. Raises ValueError for a non-positive or non-finite parameter.
    """

    def __init__(self, window_s: float, reversal_gap_rad: float, *, max_gap_s: float = DEFAULT_MAX_GAP_S,
                 min_duration_s: float = DEFAULT_MIN_DURATION_S) -> None:
        for name, value in (("window_s", window_s), ("reversal_gap_rad", reversal_gap_rad),
                            ("max_gap_s", max_gap_s)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"VehicleWindow: {name} must be finite and > 0, got {value}")
        if not (math.isfinite(min_duration_s) and min_duration_s >= 0):
            raise ValueError(f"VehicleWindow: min_duration_s must be finite and >= 0, got {min_duration_s}")
        self.window_s = window_s
        self.reversal_gap_rad = reversal_gap_rad
        self.max_gap_s = max_gap_s
        self.min_duration_s = min_duration_s
        self._samples = _Rows(6, window_s)
        self._grid = _Rows(3, window_s, capacity=256)
        self._steering = _SteeringFilter(self._grid, max_gap_s)
        self._last_t = -math.inf

    def __len__(self) -> int:
        """Samples held (the window plus at most one before it and any not yet evicted)."""
        return len(self._samples.view())

    def add(self, sample: VehicleSample) -> None:
        """Add the next sample. NaN in a signal means absent.

        Raises VehicleSignalError (state unchanged) for a non-finite timestamp, a timestamp not after
        the previous sample's, or a signal value that is infinite or not a number.
        """
        row = _checked_row(sample)
        t = row[_T]
        if t <= self._last_t:
            raise VehicleSignalError(
                f"vehicle sample: timestamp_s {t!r} is not after the previous sample's {self._last_t!r}"
            )
        self._last_t = t
        self._samples.append(row)
        self._steering.add(t, sample.steering_angle)

    def metrics(self, now_s: float | None = None) -> VehicleMetrics:
        """Metrics over ``(now_s - window_s, now_s]`` (default: up to the latest sample).

        Older samples are discarded. Raises VehicleSignalError for a non-finite ``now_s``.
        """
        now = self._last_t if now_s is None else now_s
        if not math.isfinite(now):
            if now_s is None:
                return VehicleMetrics()
            raise VehicleSignalError(f"vehicle metrics: now_s is not finite: {now_s}")
        horizon = now - self.window_s
        self._samples.drop_before(horizon)
        self._grid.drop_before(horizon)
        rows = _clip(self._samples.view(), horizon, now, self.max_gap_s)
        t = rows[:, _T]
        if len(t) == 0:
            return VehicleMetrics()
        dt = np.diff(t)
        speed, steering, yaw, lateral = (_segments(dt, rows[:, c], self.max_gap_s)
                                         for c in (_SPEED, _STEER, _YAW, _LAT))
        driving = rows[:, _DRIVING][np.isfinite(rows[:, _DRIVING])]
        return VehicleMetrics(
            steering_reversal_rate=self._reversal_rate(horizon, now),
            steering_angle_std=math.sqrt(self._variance(steering)),
            speed_variance=self._variance(speed),
            yaw_rate_std=math.sqrt(self._variance(yaw)),
            yaw_rate_mean_abs=yaw.mean_abs() if yaw.covered >= self._min_covered else NAN,
            sdlp=math.sqrt(self._variance(lateral)),
            time_driving=float(driving[-1]) if len(driving) else NAN,
            window_duration=float(t[-1] - t[0]),
            samples=int(np.count_nonzero(t > horizon)),
        )

    @property
    def _min_covered(self) -> float:
        return max(self.min_duration_s, 1e-12)

    def _variance(self, segments: _Segments) -> float:
        return segments.variance() if segments.covered >= self._min_covered else NAN

    def _reversal_rate(self, horizon: float, now: float) -> float:
        grid = self._grid.view()
        inside = grid[(grid[:, 0] > horizon) & (grid[:, 0] <= now)]
        if len(inside) < 2:
            return NAN
        reversals, duration = 0, 0.0
        run_starts = np.flatnonzero(np.diff(inside[:, 2])) + 1
        for run in np.split(inside, run_starts):
            if len(run) >= 2:
                duration += run[-1, 0] - run[0, 0]
                reversals += count_reversals(stationary_values(run[:, 1]).tolist(), self.reversal_gap_rad)
        if duration < self._min_covered:
            return NAN
        return reversals / (duration / 60.0)


def _checked_row(sample: VehicleSample) -> tuple[float, ...]:
    """(timestamp_s, *SIGNALS) as floats; raises VehicleSignalError naming a bad field."""
    row = []
    for name in CSV_COLUMNS:
        value = getattr(sample, name)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise VehicleSignalError(f"vehicle sample: {name} is not a number: {value!r}") from None
        if math.isinf(value) or (name == "timestamp_s" and math.isnan(value)):
            at = "" if name == "timestamp_s" else f" at timestamp_s={sample.timestamp_s!r}"
            raise VehicleSignalError(
                f"vehicle sample{at}: {name} is {value} (not finite; use NaN for an absent signal value)"
            )
        row.append(value)
    return tuple(row)


def _clip(rows: np.ndarray, horizon: float, now: float, max_gap_s: float) -> np.ndarray:
    """Rows inside ``(horizon, now]``; the segment crossing ``horizon`` is cut there by interpolation."""
    t = rows[:, _T]
    first = int(np.searchsorted(t, horizon, side="right"))
    end = int(np.searchsorted(t, now, side="right"))
    inside = rows[first:end]
    if first == 0 or first >= end or t[first] - t[first - 1] > max_gap_s:
        return inside
    before, after = rows[first - 1], rows[first]
    edge = before + (horizon - before[_T]) / (after[_T] - before[_T]) * (after - before)
    edge[_T] = horizon
    return np.vstack((edge, inside))


class _Segments:
    """One signal taken as straight between neighbouring samples: the pieces that count.

    A piece with an absent end or longer than the dropout gap is left out.
    """

    def __init__(self, w: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        self.w, self.a, self.b = w, a, b  # seconds, start value, end value of each piece
        self.covered = float(w.sum())

    def variance(self) -> float:
        """Time-weighted variance (exact for the piecewise-linear signal); NaN without coverage."""
        if self.covered <= 0:
            return NAN
        ref = float(self.a[0])  # centre first: no cancellation for e.g. a speed of 30 +- 0.1 m/s
        a, b = self.a - ref, self.b - ref
        m1 = float(np.dot(self.w, a + b)) / (2.0 * self.covered)
        m2 = float(np.dot(self.w, a * a + a * b + b * b)) / (3.0 * self.covered)
        return max(m2 - m1 * m1, 0.0)

    def mean_abs(self) -> float:
        """Time-weighted mean of |x|, exact also for pieces that cross zero; NaN without coverage."""
        if self.covered <= 0:
            return NAN
        a, b = np.abs(self.a), np.abs(self.b)
        same_side = self.a * self.b >= 0
        with np.errstate(invalid="ignore", divide="ignore"):
            crossing = (a * a + b * b) / (2.0 * (a + b))  # only used where a + b > 0
        return float(np.dot(self.w, np.where(same_side, (a + b) / 2.0, crossing))) / self.covered


def _segments(dt: np.ndarray, x: np.ndarray, max_gap_s: float) -> _Segments:
    a, b = x[:-1], x[1:]
    valid = (dt <= max_gap_s) & np.isfinite(a) & np.isfinite(b)
    return _Segments(dt[valid], a[valid], b[valid])


# --- CSV ------------------------------------------------------------------------------------------
def read_vehicle_csv(path: str | os.PathLike) -> list[VehicleSample]:
    """Vehicle samples from a CSV (see the module docstring); unknown columns are ignored.

    Raises VehicleSignalError naming file, line, column and value for a missing required column, a
    non-numeric or infinite cell, an empty timestamp or time not increasing; OSError if unreadable.
    """
    return read_vehicle_table(path)[0]


def read_vehicle_table(path: str | os.PathLike, extra_columns: Sequence[str] = ()
                       ) -> tuple[list[VehicleSample], dict[str, list[float]]]:
    """Vehicle samples plus the numeric ``extra_columns`` (e.g. simulator labels) of a vehicle CSV.

    Raises VehicleSignalError as ``read_vehicle_csv`` does, also when an extra column is missing.
    """
    name = str(path)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise VehicleSignalError(f"{name}: empty file, expected header {','.join(CSV_COLUMNS)}")
        index = _column_index(name, [cell.strip() for cell in header], extra_columns)
        samples: list[VehicleSample] = []
        extras: dict[str, list[float]] = {column: [] for column in extra_columns}
        previous = -math.inf
        for cells in reader:
            if not cells or all(not cell.strip() for cell in cells):
                continue
            where = f"{name}, line {reader.line_num}"
            if len(cells) != len(header):
                raise VehicleSignalError(f"{where}: {len(cells)} cells, the header has {len(header)}")
            values = {column: _cell(where, column, cells[i]) for column, i in index.items()}
            t = values["timestamp_s"]
            if not math.isfinite(t):
                raise VehicleSignalError(f"{where}, column 'timestamp_s': empty; every row needs a time")
            if t <= previous:
                raise VehicleSignalError(
                    f"{where}, column 'timestamp_s': {cells[index['timestamp_s']].strip()!r} is not after "
                    f"the previous row's {previous!r} (time must increase)"
                )
            previous = t
            samples.append(VehicleSample(**{c: values.get(c, NAN) for c in CSV_COLUMNS}))
            for column in extra_columns:
                extras[column].append(values[column])
    return samples, extras


def _column_index(name: str, header: list[str], extra_columns: Sequence[str]) -> dict[str, int]:
    duplicates = sorted({column for column in header if header.count(column) > 1 and column})
    if duplicates:
        raise VehicleSignalError(f"{name}, line 1: duplicate column(s) {', '.join(duplicates)}")
    for column in (*REQUIRED_COLUMNS, *extra_columns):
        if column not in header:
            raise VehicleSignalError(
                f"{name}, line 1: missing required column '{column}' (header: {','.join(header)})"
            )
    wanted = (*CSV_COLUMNS, *extra_columns)
    return {column: header.index(column) for column in wanted if column in header}


def _cell(where: str, column: str, text: str) -> float:
    text = text.strip()
    if not text:
        return NAN
    try:
        value = float(text)
    except ValueError:
        raise VehicleSignalError(f"{where}, column '{column}': {text!r} is not a number") from None
    if math.isinf(value):
        raise VehicleSignalError(
            f"{where}, column '{column}': {text!r} is infinite (leave the cell empty for an absent value)"
        )
    return value


def write_vehicle_csv(path: str | os.PathLike, samples: Iterable[VehicleSample],
                      extra_columns: Mapping[str, Sequence[float]] | None = None) -> None:
    """Write samples (and optional numeric extra columns, one value per sample) as a vehicle CSV.

    Atomic: written to a temporary file in the same folder, then renamed over ``path``. NaN is
    written as an empty cell; floats round-trip exactly. Raises ValueError when an extra column's
    length differs from the number of samples; OSError if the folder is not writable.
    """
    samples = list(samples)
    extras = dict(extra_columns or {})
    for column, values in extras.items():
        if len(values) != len(samples):
            raise ValueError(f"extra column '{column}' has {len(values)} values for {len(samples)} samples")
    target = Path(path)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with open(fd, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow([*CSV_COLUMNS, *extras])
            for i, sample in enumerate(samples):
                row = [getattr(sample, column) for column in CSV_COLUMNS]
                row += [values[i] for values in extras.values()]
                writer.writerow([_format(value) for value in row])
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, target.stat().st_mode & 0o777 if target.exists() else 0o644)  # mkstemp made it 0600
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _format(value: float) -> str:
    value = float(value)
    return "" if math.isnan(value) else repr(value)

