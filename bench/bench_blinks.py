"""The blink detector: its cost per frame, the full perception path vs MediaPipe alone, and blink F1 per fps.

* ms/frame of `BlinkDetector.update` alone (an EAR series with blinks, 30 fps, 10 min) and of the whole
  `DriverStateDetectors.update` (all detectors);
* full-path fps / MediaPipe-alone fps at 640x480 on one core (bench_perception.py's method);
* blink-event F1 and blink-frame F1 per frame rate (5, 7.5, 10, 15, 30 fps) on camera-model videos the
  detector was not tuned on (astronaut seed 100, the GRID person seed 200 when ../shared is there), for the
  blink detector and for the previous method (runs of frames below the closed-eye threshold).

    .venv/bin/python bench/bench_blinks.py [--duration 60] [--skip-f1] [--out bench/results/blinks.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTEROP_THREADS",
             "TF_NUM_INTRAOP_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_perception import mediapipe_round, pipeline_round, render_frames, stats  # noqa: E402

from fatigue_llm.perception.blinks import BlinkDetector  # noqa: E402
from fatigue_llm.perception.config import PerceptionConfig  # noqa: E402
from fatigue_llm.perception.detectors import DriverStateDetectors, FaceMeasurement  # noqa: E402
from fatigue_llm.sim.camera_model import (  # noqa: E402
    Camera,
    CameraSimulator,
    grid_face,
    random_lid_script,
    run_perception,
    score_blinks,
)
from fatigue_llm.sim.driver_video import FaceRenderer  # noqa: E402

cv2.setNumThreads(1)
RATES = (5.0, 7.5, 10.0, 15.0, 30.0)
HELD_OUT = (("astronaut", 100), ("grid", 200))


def ear_series(n: int, fps: float = 30.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps
    ear = 0.3 * (1 + rng.normal(0, 0.01, n))
    for c in np.arange(1.0, t[-1], 3.7):
        ear *= 1 - 0.5 * np.clip(1 - np.abs(t - c) / 0.15, 0, None)
    return t, ear


def detector_cost(n: int = 18000) -> dict[str, float]:
    t, ear = ear_series(n)
    best_blink = best_all = np.inf
    for _ in range(3):
        detector = BlinkDetector()
        start = time.perf_counter()
        for ti, e in zip(t.tolist(), ear.tolist(), strict=True):
            detector.update(ti, e)
        best_blink = min(best_blink, (time.perf_counter() - start) / n)
        all_detectors = DriverStateDetectors(PerceptionConfig())
        faces = [FaceMeasurement(e, 0.3, 0.0) for e in ear.tolist()]
        start = time.perf_counter()
        for ti, f in zip(t.tolist(), faces, strict=True):
            all_detectors.update(ti, f)
        best_all = min(best_all, (time.perf_counter() - start) / n)
    return {"blink_detector_ms": 1e3 * best_blink, "all_detectors_ms": 1e3 * best_all}


def f1_table(duration: float) -> list[dict]:
    faces = {"astronaut": FaceRenderer()}
    grid = grid_face()
    if grid is not None:
        faces["grid"] = FaceRenderer(grid)
    rows = []
    for fps in RATES:
        new = old = None
        for name, seed in HELD_OUT:
            if name not in faces:
                continue
            rng = np.random.default_rng(seed)
            script = random_lid_script(duration, rng)
            exposure = float(rng.uniform(0.008, min(1.0 / fps, 0.05)))
            camera = Camera(fps=fps, exposure_s=exposure, seed=seed, jpeg_quality=int(rng.integers(60, 90)))
            sim = CameraSimulator(script, camera, faces[name])
            _, blinks, closures = run_perception(sim)
            truth = sim.truth()
            s_new, s_old = score_blinks(truth, blinks), score_blinks(truth, closures)
            new = s_new if new is None else new + s_new
            old = s_old if old is None else old + s_old
        assert new is not None and old is not None
        rows.append({"fps": fps, "faces": list(faces), "blinks": new.tp + new.fn,
                     "event_f1": round(new.event_f1, 3), "frame_f1": round(new.frame_f1, 3),
                     "old_event_f1": round(old.event_f1, 3), "old_frame_f1": round(old.frame_f1, 3),
                     "counts": new.as_tuple()})
        print(f"  {fps:>5.1f} fps: blinks {rows[-1]['blinks']:>3}  event F1 {new.event_f1:.3f} "
              f"(was {old.event_f1:.3f})  frame F1 {new.frame_f1:.3f} (was {old.frame_f1:.3f})", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="s of video per face and rate")
    parser.add_argument("--frames", type=int, default=150, help="frames per throughput round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-f1", action="store_true", help="only the timings")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "blinks.json"))
    args = parser.parse_args(argv)
    cost = detector_cost()
    print(f"blink detector {cost['blink_detector_ms']:.4f} ms/frame; all detectors "
          f"{cost['all_detectors_ms']:.4f} ms/frame")
    bgr = render_frames(args.frames)
    rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in bgr]
    mp_rounds, full_rounds = [], []
    for _ in range(args.rounds):
        mp_rounds.append(mediapipe_round(rgb))
        full_rounds.append(pipeline_round(bgr))
    mp_stats, full_stats = stats(mp_rounds), stats(full_rounds)
    ratio = full_stats["fps"] / mp_stats["fps"]
    print(f"mediapipe alone {mp_stats['fps']:.1f} fps, full path {full_stats['fps']:.1f} fps, ratio {ratio:.3f}")
    table = [] if args.skip_f1 else f1_table(args.duration)
    result = {"bench": "blinks", "cores": 1, **cost, "mediapipe": mp_stats, "full": full_stats,
              "fps_ratio": ratio, "duration_s_per_video": args.duration, "held_out": HELD_OUT, "f1": table,
              "cpu": platform.processor() or platform.machine()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
