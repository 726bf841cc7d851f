"""Throughput of VehicleWindow at 100 Hz with 60 s windows: add alone, metrics alone, and both.

Input is a simulated 10-minute drive (fatigue 0.2 -> 0.9) at 100 Hz. Prints a table and one JSON
line (prefix ``BENCH``). Single-threaded; finishes in a few seconds.

    .venv/bin/python bench/bench_vehicle.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

from fatigue_llm.perception.types import VehicleSample
from fatigue_llm.perception.vehicle import VehicleWindow
from fatigue_llm.sim.drive import simulate_drive

RATE_HZ = 100.0
WINDOW_S = 60.0
GAP_RAD = math.radians(2.0)


def _window() -> VehicleWindow:
    return VehicleWindow(WINDOW_S, GAP_RAD)


def bench_add(samples: list[VehicleSample]) -> float:
    """Samples/s of ``add`` alone."""
    window = _window()
    start = time.perf_counter()
    for sample in samples:
        window.add(sample)
    return len(samples) / (time.perf_counter() - start)


def bench_metrics(samples: list[VehicleSample], calls: int = 300) -> tuple[float, float]:
    """Mean and p99 latency (ms) of ``metrics`` over a full 60 s window (6000 samples)."""
    window = _window()
    for sample in samples[: int(2 * WINDOW_S * RATE_HZ)]:
        window.add(sample)
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        window.metrics()
        latencies.append((time.perf_counter() - start) * 1e3)
    latencies.sort()
    return statistics.fmean(latencies), latencies[int(0.99 * (len(latencies) - 1))]


def bench_stream(samples: list[VehicleSample], every: int) -> float:
    """Samples/s of ``add`` with ``metrics`` after every ``every``-th sample."""
    window = _window()
    start = time.perf_counter()
    for i, sample in enumerate(samples, 1):
        window.add(sample)
        if i % every == 0:
            window.metrics()
    return len(samples) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="simulated drive length (default 10)")
    duration = parser.parse_args(argv).minutes * 60.0
    samples = simulate_drive(duration, RATE_HZ, [(0.0, 0.2), (duration, 0.9)], seed=0).samples
    add_rate = bench_add(samples)
    metrics_ms, metrics_p99 = bench_metrics(samples)
    node_rate = bench_stream(samples, int(RATE_HZ))               # the feature node: metrics at 1 Hz
    worst = bench_stream(samples[: int(2 * WINDOW_S * RATE_HZ)], 1)  # metrics after every sample
    rows = [
        ("add only", f"{add_rate:,.0f} samples/s", f"{add_rate / RATE_HZ:,.0f}x real time"),
        ("metrics, 6000-sample window", f"{metrics_ms:.3f} ms mean", f"{metrics_p99:.3f} ms p99"),
        ("add + metrics at 1 Hz", f"{node_rate:,.0f} samples/s", f"{node_rate / RATE_HZ:,.0f}x real time"),
        ("add + metrics every sample", f"{worst:,.0f} samples/s", f"{worst / RATE_HZ:,.1f}x real time"),
    ]
    print(f"VehicleWindow, {RATE_HZ:g} Hz input, {WINDOW_S:g} s window, {len(samples)} samples "
          f"(python {platform.python_version()})")
    for name, value, note in rows:
        print(f"  {name:<30} {value:>22}  {note}")
    print("BENCH " + json.dumps({
        "bench": "vehicle_window", "rate_hz": RATE_HZ, "window_s": WINDOW_S, "samples": len(samples),
        "add_samples_per_s": round(add_rate), "metrics_ms_mean": round(metrics_ms, 4),
        "metrics_ms_p99": round(metrics_p99, 4), "add_metrics_1hz_samples_per_s": round(node_rate),
        "add_metrics_every_sample_samples_per_s": round(worst),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
