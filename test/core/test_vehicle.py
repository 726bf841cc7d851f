"""VehicleWindow metrics (SDLP, steering reversals, speed variance, ...) and the vehicle CSV format."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fatigue_llm.perception.types import VehicleSample
from fatigue_llm.perception.vehicle import (
    VehicleSignalError,
    VehicleWindow,
    count_reversals,
    read_vehicle_csv,
    read_vehicle_table,
    write_vehicle_csv,
)

GAP = math.radians(2.0)
DEG = math.radians(1.0)


def regular(duration: float, rate: float) -> np.ndarray:
    return np.arange(round(duration * rate) + 1) / rate


def irregular(duration: float, seed: int = 0) -> np.ndarray:
    """Timestamps 5..60 ms apart at random (mean ~30 Hz), from 0 to ``duration``."""
    steps = np.random.default_rng(seed).uniform(0.005, 0.06, int(duration / 0.005))
    times = np.concatenate(([0.0], np.cumsum(steps)))
    return np.append(times[times < duration], duration)


def window_over(times: np.ndarray, window_s: float = 60.0, **signals) -> VehicleWindow:
    """A window fed with samples at ``times``; each signal is a function of t."""
    window = VehicleWindow(window_s, GAP)
    for t in times.tolist():
        window.add(VehicleSample(t, **{name: fn(t) for name, fn in signals.items()}))
    return window


def sine(amplitude: float, hz: float, offset: float = 0.0):
    return lambda t: offset + amplitude * math.sin(2 * math.pi * hz * t)


# --- statistics -----------------------------------------------------------------------------------
def test_sdlp_of_a_sine_is_amplitude_over_sqrt2():
    metrics = window_over(regular(60, 50), lateral_offset=sine(0.3, 0.2)).metrics()
    assert metrics.sdlp == pytest.approx(0.3 / math.sqrt(2), rel=1e-3)
    assert math.isnan(metrics.speed_variance) and math.isnan(metrics.steering_reversal_rate)


def test_speed_variance_of_a_ramp_is_exact_at_any_sampling():
    # speed rising linearly 20 -> 26 m/s over 60 s: variance of a uniform spread, (6^2)/12 = 3
    for times in (regular(60, 100), regular(60, 1), np.array([0.0, 0.4, 0.9, 1.0]) * 60):
        window = VehicleWindow(60.0, GAP, max_gap_s=30.0)
        for t in times.tolist():
            window.add(VehicleSample(t, speed=20.0 + 0.1 * t))
        assert window.metrics().speed_variance == pytest.approx(3.0, rel=1e-9)


def test_speed_variance_has_no_cancellation_at_motorway_speed():
    metrics = window_over(regular(60, 100), speed=sine(0.01, 0.5, offset=36.0)).metrics()
    assert metrics.speed_variance == pytest.approx(0.01**2 / 2, rel=1e-3)


def test_yaw_rate_std_and_mean_abs_of_a_sine():
    metrics = window_over(regular(60, 50), yaw_rate=sine(0.1, 0.25)).metrics()
    assert metrics.yaw_rate_std == pytest.approx(0.1 / math.sqrt(2), rel=1e-3)
    assert metrics.yaw_rate_mean_abs == pytest.approx(0.2 / math.pi, rel=1e-3)


def test_time_driving_is_the_latest_value_and_counts_describe_the_window():
    metrics = window_over(regular(30, 10), speed=lambda t: 20.0, time_driving=lambda t: 3600.0 + t).metrics()
    assert metrics.time_driving == 3630.0
    assert metrics.samples == 301 and metrics.window_duration == pytest.approx(30.0)
    assert metrics.speed_variance == 0.0


# --- steering reversals ---------------------------------------------------------------------------
def test_count_reversals_counts_swings_of_at_least_the_gap_both_ways():
    # rise 0 -> 3, fall 3.2 -> 0, rise -1 -> 2 reach the gap of 2; the 0.5..1.5 wiggles do not
    assert count_reversals([0.0, 3.0, 2.5, 3.2, 0.0, 0.5, -1.0, 2.0], 2.0) == 3
    assert count_reversals([0.0, 1.9, 0.0, 1.9], 2.0) == 0
    assert count_reversals([], 2.0) == 0


def test_reversal_rate_of_a_large_sine_is_two_per_period():
    # 0.2 Hz, +-3 degrees: swings of 6 degrees, 2 per period -> 24 per minute (one is cut by the window edge)
    metrics = window_over(regular(60, 100), steering_angle=sine(3 * DEG, 0.2)).metrics()
    assert 22.5 <= metrics.steering_reversal_rate <= 24.5
    assert metrics.steering_angle_std == pytest.approx(3 * DEG / math.sqrt(2), rel=1e-3)


def test_swings_below_the_gap_are_not_counted():
    small = window_over(regular(60, 100), steering_angle=sine(0.8 * DEG, 0.3)).metrics()
    assert small.steering_reversal_rate == 0.0
    # the same small fast wiggle on top of a large slow swing adds nothing: 0.1 Hz -> 12 per minute
    wiggle = sine(0.4 * DEG, 0.5)
    mixed = window_over(regular(60, 100), steering_angle=lambda t: 4 * DEG * math.sin(0.2 * math.pi * t)
                        + wiggle(t)).metrics()
    assert 10.5 <= mixed.steering_reversal_rate <= 12.5


def test_steering_noise_above_the_filter_cutoff_is_not_counted():
    rng = np.random.default_rng(3)
    noise = dict(zip(regular(60, 100).tolist(), rng.normal(0, 1.5 * DEG, 6001).tolist(), strict=True))
    metrics = window_over(regular(60, 100), steering_angle=lambda t: 5 * DEG * math.sin(0.2 * math.pi * t)
                          + noise[t]).metrics()
    assert 10.5 <= metrics.steering_reversal_rate <= 14.0


# --- sampling independence ------------------------------------------------------------------------
def test_irregular_and_regular_sampling_agree():
    signals = dict(
        speed=sine(1.5, 0.05, offset=25.0),
        steering_angle=lambda t: 3 * DEG * math.sin(0.4 * math.pi * t) + DEG * math.sin(0.74 * math.pi * t),
        yaw_rate=sine(0.02, 0.13),
        lateral_offset=lambda t: 0.2 * math.sin(0.3 * t) + 0.05 * math.sin(2.1 * t),
        time_driving=lambda t: t,
    )
    a = window_over(regular(90, 100), **signals).metrics()
    b = window_over(irregular(90), **signals).metrics()
    for name in ("steering_angle_std", "speed_variance", "yaw_rate_std", "yaw_rate_mean_abs", "sdlp"):
        assert getattr(b, name) == pytest.approx(getattr(a, name), rel=0.01), name
    assert abs(a.steering_reversal_rate - b.steering_reversal_rate) <= 1.1  # at most one reversal apart
    assert a.time_driving == b.time_driving == 90.0
    assert a.samples == 6000 and b.samples < 4000  # the irregular source has ~30 Hz


# --- absent signals, short windows ----------------------------------------------------------------
def test_absent_signals_give_nan_not_guesses():
    metrics = window_over(regular(10, 10), speed=lambda t: 20.0 + t).metrics()
    assert metrics.speed_variance > 0
    for name in ("steering_reversal_rate", "steering_angle_std", "yaw_rate_std", "yaw_rate_mean_abs", "sdlp",
                 "time_driving"):
        assert math.isnan(getattr(metrics, name)), name


def test_empty_single_and_too_short_windows_are_nan():
    window = VehicleWindow(60.0, GAP)
    empty = window.metrics()
    assert math.isnan(empty.sdlp) and empty.samples == 0 and empty.window_duration == 0.0
    window.add(VehicleSample(0.0, 20.0, 0.0, 0.0, 0.1, 5.0))
    single = window.metrics()
    assert single.samples == 1 and math.isnan(single.speed_variance) and math.isnan(single.sdlp)
    assert single.time_driving == 5.0
    window.add(VehicleSample(1.0, 21.0, 0.0, 0.0, 0.2, 6.0))  # 1 s < min_duration_s (2 s)
    assert math.isnan(window.metrics().speed_variance)


def test_a_dropout_is_not_interpolated_across():
    # two 10 s stretches at 10 and 30 m/s with 20 s of nothing between: variance of the two halves only
    window = VehicleWindow(60.0, GAP)
    for t in [*regular(10, 10).tolist(), *(30 + regular(10, 10)).tolist()]:
        window.add(VehicleSample(t, speed=10.0 if t < 20 else 30.0, steering_angle=0.0))
    metrics = window.metrics()
    assert metrics.speed_variance == pytest.approx(100.0)
    assert metrics.steering_reversal_rate == 0.0


def test_absent_values_inside_a_signal_are_skipped():
    window = VehicleWindow(60.0, GAP)
    for t in regular(20, 10).tolist():
        lateral = math.nan if 5 <= t < 10 else 0.5 * math.sin(t)
        window.add(VehicleSample(t, lateral_offset=lateral))
    assert math.isfinite(window.metrics().sdlp)


# --- window -----------------------------------------------------------------------------------------
def test_old_samples_leave_the_window():
    # 60 s of weaving, then 60 s of perfect lane keeping: the last minute has SDLP 0
    window = window_over(regular(120, 20), lateral_offset=lambda t: 0.5 * math.sin(t) if t < 60 else 0.0,
                         speed=lambda t: 20.0)
    metrics = window.metrics()
    assert metrics.sdlp < 1e-3 and metrics.samples == 1200
    assert metrics.window_duration == pytest.approx(60.0)
    assert math.isnan(window.metrics(now_s=300.0).sdlp)  # a stale stream ages out
    assert window.metrics(now_s=300.0).samples == 0


def test_memory_stays_bounded_without_metrics_calls():
    window = VehicleWindow(10.0, GAP)
    for t in regular(600, 100).tolist():
        window.add(VehicleSample(t, 20.0, 0.0, 0.0, 0.0, t))
    assert len(window) <= 4 * 1001
    assert window.metrics().samples == 1000


def test_metrics_at_an_earlier_time_use_only_samples_up_to_it():
    window = window_over(regular(60, 10), speed=lambda t: 20.0 if t <= 30 else 25.0 + t)
    assert window.metrics(now_s=30.0).speed_variance == pytest.approx(0.0)


# --- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sample", "words"),
    [
        (VehicleSample(math.nan, 20.0), ["timestamp_s", "nan"]),
        (VehicleSample(math.inf, 20.0), ["timestamp_s", "inf"]),
        (VehicleSample(2.0, steering_angle=math.inf), ["steering_angle", "inf"]),
        (VehicleSample(2.0, speed=-math.inf), ["speed", "-inf"]),
        (VehicleSample(0.5, 20.0), ["timestamp_s", "0.5", "1.0"]),
        (VehicleSample(1.0, 20.0), ["timestamp_s", "not after"]),
        (VehicleSample(2.0, yaw_rate=None), ["yaw_rate", "None", "not a number"]),
    ],
)
def test_bad_samples_are_rejected_naming_the_field(sample, words):
    window = VehicleWindow(60.0, GAP)
    window.add(VehicleSample(1.0, 20.0))
    with pytest.raises(VehicleSignalError) as error:
        window.add(sample)
    for word in words:
        assert word in str(error.value)
    window.add(VehicleSample(3.0, 22.0))  # state unchanged: the window goes on
    assert window.metrics().samples == 2


@pytest.mark.parametrize("kwargs", [dict(window_s=0.0), dict(window_s=math.nan), dict(reversal_gap_rad=-1.0)])
def test_bad_window_parameters(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        VehicleWindow(**{"window_s": 60.0, "reversal_gap_rad": GAP, **kwargs})


def test_non_finite_now_is_rejected():
    with pytest.raises(VehicleSignalError, match="now_s"):
        VehicleWindow(60.0, GAP).metrics(now_s=math.nan)


# --- CSV ----------------------------------------------------------------------------------------------
HEADER = "timestamp_s,speed,steering_angle,yaw_rate,lateral_offset,time_driving\n"


def write(tmp_path: Path, text: str, name: str = "drive.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_round_trip_is_exact_and_keeps_absent_values(tmp_path):
    samples = [VehicleSample(0.1 * i, 20.0 + 1 / 3 * i, -0.01 * i, math.nan if i == 2 else 1e-5 * i,
                             0.25, 7.0 + 0.1 * i) for i in range(5)]
    path = tmp_path / "out.csv"
    write_vehicle_csv(path, samples)
    back = read_vehicle_csv(path)
    assert len(back) == 5
    for a, b in zip(samples, back, strict=True):
        for field in ("timestamp_s", "speed", "steering_angle", "yaw_rate", "lateral_offset", "time_driving"):
            x, y = getattr(a, field), getattr(b, field)
            assert (math.isnan(x) and math.isnan(y)) or x == y
    assert path.read_text().splitlines()[3].split(",")[3] == ""  # NaN written as an empty cell
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temporary file left behind


def test_csv_optional_columns_may_be_absent_and_unknown_ones_are_ignored(tmp_path):
    path = write(tmp_path, "speed,timestamp_s,yaw_rate,steering_angle,note\n"
                           "20,0,0.01,0.02,5\n21,0.1,,0.03,6\n")
    samples = read_vehicle_csv(path)
    second = samples[1]
    assert (second.timestamp_s, second.speed, second.steering_angle) == (0.1, 21.0, 0.03)
    assert math.isnan(second.yaw_rate) and math.isnan(second.lateral_offset)
    assert math.isnan(second.time_driving)
    _, extras = read_vehicle_table(path, ("note",))
    assert extras == {"note": [5.0, 6.0]}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("timestamp_s,speed,steering_angle\n0,20,0\n", ["line 1", "yaw_rate", "missing"]),
        (HEADER + "0,20,0,0,0,0\n0.1,abc,0,0,0,0\n", ["line 3", "'speed'", "'abc'", "not a number"]),
        (HEADER + "0,20,0,0,0,0\n0.1,20,inf,0,0,0\n", ["line 3", "'steering_angle'", "'inf'", "infinite"]),
        (HEADER + "0,20,0,0,0,0\n0.2,20,0,0,0,0\n0.1,20,0,0,0,0\n",
         ["line 4", "'timestamp_s'", "'0.1'", "0.2"]),
        (HEADER + "0,20,0,0,0,0\n,20,0,0,0,0\n", ["line 3", "'timestamp_s'", "empty"]),
        (HEADER + "0,20,0,0,0\n", ["line 2", "5 cells"]),
        ("", ["empty file"]),
        ("timestamp_s,speed,speed,steering_angle,yaw_rate\n", ["line 1", "duplicate", "speed"]),
    ],
)
def test_bad_csv_errors_name_file_line_column_and_value(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(VehicleSignalError) as error:
        read_vehicle_csv(path)
    message = str(error.value)
    assert str(path) in message
    for word in words:
        assert word in message, message


def test_missing_extra_column_is_named(tmp_path):
    path = write(tmp_path, HEADER + "0,20,0,0,0,0\n")
    with pytest.raises(VehicleSignalError, match="'fatigue'"):
        read_vehicle_table(path, ("fatigue",))


def test_failed_write_leaves_the_old_file_untouched(tmp_path):
    path = write(tmp_path, HEADER + "0,20,0,0,0,0\n", "keep.csv")
    with pytest.raises(ValueError, match="label"):
        write_vehicle_csv(path, [VehicleSample(0.0, 1.0)], {"label": [1.0, 2.0]})
    assert path.read_text() == HEADER + "0,20,0,0,0,0\n"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.csv"]
