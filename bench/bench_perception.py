"""Throughput of the perception path at 640x480 on one CPU core: MediaPipe alone vs the full pipeline.

Both run in the same process over the same pre-rendered frames of the generated driver video (decoding is
not timed), in alternating rounds so that machine load affects both alike. "MediaPipe alone" is
FaceMesh.process() on frames already converted to RGB; "full path" is PerceptionPipeline.process() on BGR
frames (colour conversion, landmark extraction, EAR/MAR, solvePnP head pose, detectors, observation).

    .venv/bin/python bench/bench_perception.py [--frames 150] [--rounds 3]

Prints a table and one JSON line. Takes well under 2 minutes.
"""

from __future__ import annotations

import os

# one core, one thread everywhere, before numpy / OpenCV / MediaPipe start their pools
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
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import mediapipe as mp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fatigue_llm.perception.config import PerceptionConfig  # noqa: E402
from fatigue_llm.perception.pipeline import PerceptionPipeline  # noqa: E402
from fatigue_llm.sim.driver_video import FaceRenderer, frame_truth, sample_script  # noqa: E402

cv2.setNumThreads(1)


def render_frames(count: int) -> list[np.ndarray]:
    """The first `count` frames of the sample script (blinks, then slow blinks, yawn, nod, microsleeps)."""
    script = sample_script()
    renderer = FaceRenderer()
    step = max(1, script.frame_count // count)
    frames = []
    for i in range(0, step * count, step):
        truth = frame_truth(script, i % script.frame_count)
        frames.append(renderer.render(truth.closure, truth.mouth_open, truth.pitch_deg))
    return frames


def time_per_frame(process: Callable[[int], object], count: int) -> np.ndarray:
    """Seconds per call of process(i) for i in range(count)."""
    times = np.empty(count)
    for i in range(count):
        start = time.perf_counter()
        process(i)
        times[i] = time.perf_counter() - start
    return times


def mediapipe_round(rgb: list[np.ndarray]) -> np.ndarray:
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                                         min_detection_confidence=0.5, min_tracking_confidence=0.5) as mesh:
        mesh.process(rgb[0])  # graph start-up is not per-frame cost
        return time_per_frame(lambda i: mesh.process(rgb[i]), len(rgb))


def pipeline_round(bgr: list[np.ndarray], fps: float = 15.0) -> np.ndarray:
    with PerceptionPipeline(PerceptionConfig()) as pipeline:
        pipeline.process(bgr[0], -1.0)
        return time_per_frame(lambda i: pipeline.process(bgr[i], i / fps), len(bgr))


def stats(samples: list[np.ndarray]) -> dict[str, float]:
    """fps from the best round's mean (least disturbed by other load); latency percentiles over all."""
    best = min(s.mean() for s in samples)
    every = np.concatenate(samples)
    return {"fps": 1.0 / best, "p50_ms": 1e3 * float(np.percentile(every, 50)),
            "p95_ms": 1e3 * float(np.percentile(every, 95))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150, help="frames per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per mode")
    args = parser.parse_args(argv)
    bgr = render_frames(args.frames)
    rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in bgr]
    mp_rounds, full_rounds = [], []
    for _ in range(args.rounds):
        mp_rounds.append(mediapipe_round(rgb))
        full_rounds.append(pipeline_round(bgr))
    mp_stats, full_stats = stats(mp_rounds), stats(full_rounds)
    ratio = full_stats["fps"] / mp_stats["fps"]
    height, width = bgr[0].shape[:2]
    print(f"perception at {width}x{height}, 1 core, {args.frames} frames x {args.rounds} rounds")
    print(f"{'path':<16}{'fps':>9}{'p50 ms':>9}{'p95 ms':>9}")
    for name, s in (("mediapipe alone", mp_stats), ("full pipeline", full_stats)):
        print(f"{name:<16}{s['fps']:>9.1f}{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}")
    print(f"full / mediapipe fps ratio: {ratio:.3f}")
    result = {"bench": "perception", "width": bgr[0].shape[1], "height": bgr[0].shape[0], "cores": 1,
              "frames": args.frames, "rounds": args.rounds, "mediapipe": mp_stats, "full": full_stats,
              "fps_ratio": ratio, "cpu": platform.processor() or platform.machine()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
