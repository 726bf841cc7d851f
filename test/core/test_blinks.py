"""Blinks as dips below an adapting open-eye level (perception/blinks.py) and the camera model that tests them.

Unit tests run on EAR series; the slow ones render videos through the camera model (sim/camera_model.py:
blink kinematics, exposure blur, random shutter phase, head-pose drift, lighting, noise, JPEG) and score the
full MediaPipe path per frame rate, on seeds and a face the detector was not tuned on (tuning used the
astronaut face, seeds 0 and 1).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fatigue_llm.perception.blinks import BlinkDetector
from fatigue_llm.perception.config import PerceptionConfig
from fatigue_llm.perception.detectors import EyeStateDetector
from fatigue_llm.perception.pipeline import PerceptionPipeline
from fatigue_llm.perception.sources import VideoFileSource
from fatigue_llm.perception.types import EventType
from fatigue_llm.sim.camera_model import (
    GRID_DIR,
    Blink,
    Camera,
    CameraSimulator,
    LidScript,
    annotate,
    grid_face,
    random_lid_script,
    run_perception,
    score_blinks,
)
from fatigue_llm.sim.driver_video import FaceRenderer

OPEN = 0.30
RATES = (5.0, 7.5, 10.0, 15.0, 30.0)


def series(fps: float, duration: float, ear, jitter: float = 0.0, seed: int = 0) -> list[tuple[float, float | None]]:
    rng = np.random.default_rng(seed)
    ts = np.arange(int(duration * fps)) / fps + rng.uniform(0, jitter, int(duration * fps))
    noise = rng.normal(0, 0.002, len(ts))
    out = []
    for t, n in zip(ts, noise, strict=True):
        v = ear(float(t))
        out.append((float(t), None if v is None else v + n))
    return out


def run(samples, detector: BlinkDetector | None = None):
    detector = detector or BlinkDetector()
    updates = [(t, detector.update(t, e)) for t, e in samples]
    return [u.finished for _, u in updates if u.finished is not None], updates


def dip(centre: float, depth: float, half_width: float = 0.12):
    """EAR with a triangular dip of relative `depth` at `centre`."""
    return lambda t: OPEN * (1.0 - depth * max(0.0, 1.0 - abs(t - centre) / half_width))


# -------------------------------------------------------------------------------------------- the detector
@pytest.mark.parametrize("fps", RATES[:-1])
def test_one_half_closed_frame_is_a_blink_at_any_rate(fps: float) -> None:
    # the lid caught at ~half travel on a single frame (EAR 18 % down), everything else open; at 30 fps a
    # real blink always spans several frames (MIN_BLINK_S)
    hit = round(3.0 * fps) / fps

    def ear(t: float) -> float:
        return OPEN * (0.82 if abs(t - hit) < 0.5 / fps else 1.0)

    blinks, _ = run(series(fps, 6.0, ear))
    assert len(blinks) == 1
    assert blinks[0].start_s == blinks[0].end_s == pytest.approx(hit, abs=0.5 / fps)


@pytest.mark.parametrize("fps", RATES)
def test_blink_frames_run_from_lid_falling_to_lid_back_up(fps: float) -> None:
    blinks, updates = run(series(fps, 6.0, dip(3.0, 0.5, 0.15), jitter=0.2 / fps, seed=int(fps)))
    assert len(blinks) == 1
    ts = [t for t, _ in updates]
    inside = [t for t in ts if dip(3.0, 0.5, 0.15)(t) < OPEN * (1 - 0.05)]   # >= 5 % down
    assert blinks[0].start_s == pytest.approx(inside[0], abs=1.01 / fps)
    assert blinks[0].end_s == pytest.approx(inside[-1], abs=1.01 / fps)


def test_baseline_keeps_adapting_to_squints_and_lighting() -> None:
    level = {"v": OPEN}

    def ear(t: float) -> float:
        base = OPEN if t < 10 else (0.8 * OPEN if t < 25 else 1.1 * OPEN)   # squint, then wide open
        blink = any(abs(t - c) < 0.06 for c in (5.0, 18.0, 30.0))
        level["v"] = base
        return base * (0.55 if blink else 1.0)

    blinks, _ = run(series(30.0, 35.0, ear))
    assert [round(b.start_s) for b in blinks] == [5, 18, 30]
    assert all(b.baseline == pytest.approx(e, rel=0.05) for b, e in zip(blinks, (OPEN, 0.8 * OPEN, 1.1 * OPEN),
                                                                          strict=True))


def test_slow_drifts_noise_and_mesh_flicker_are_not_blinks() -> None:
    rng = np.random.default_rng(5)

    def ear(t: float) -> float:
        drift = 0.08 * math.sin(2 * math.pi * t / 7.0)           # head pose
        flicker = 0.06 if int(t * 30) % 2 and 20 < t < 22 else 0.0  # the mesh alternating at 30 fps
        return OPEN * (1 + drift - flicker + rng.normal(0, 0.01))

    blinks, _ = run(series(30.0, 40.0, ear))
    assert blinks == []


def test_face_that_comes_and_goes_never_makes_a_blink() -> None:
    def ear(t: float) -> float | None:
        k = int(t * 10)
        if 5 <= t < 15 and k % 3 == 0:
            return None                      # lost every third frame
        if 5 <= t < 15 and k % 3 == 1:
            return OPEN * 0.6                # the first frame back is odd
        return OPEN

    blinks, updates = run(series(10.0, 20.0, ear))
    assert blinks == [] and not any(u.in_blink for _, u in updates)


def test_face_lost_inside_a_dip_cancels_it() -> None:
    def ear(t: float) -> float | None:
        if 3.0 <= t < 3.1:
            return OPEN * 0.5
        return None if 3.1 <= t < 3.6 else OPEN

    blinks, _ = run(series(30.0, 6.0, ear))
    assert blinks == []


def test_occluded_eyes_for_seconds_are_not_a_blink() -> None:
    blinks, _ = run(series(15.0, 12.0, lambda t: OPEN * (0.75 if 4 <= t < 7 else 1.0)))
    assert blinks == []


def test_per_frame_cost_is_well_under_0p2_ms() -> None:
    import time

    samples = series(30.0, 60.0, lambda t: dip(round(t / 3) * 3 + 0.5, 0.5)(t))
    detector = BlinkDetector()
    start = time.perf_counter()
    for t, e in samples:
        detector.update(t, e)
    per_frame = (time.perf_counter() - start) / len(samples)
    assert per_frame < 0.2e-3


# ------------------------------------------------------------------------------- events from EyeStateDetector
def test_half_closed_frame_gives_a_blink_event_and_a_closed_blink_only_one() -> None:
    detector = EyeStateDetector(PerceptionConfig())
    events, flags = [], []
    for t, e in series(5.0, 12.0, lambda t: OPEN * (0.8 if abs(t - 8.0) < 0.05 else
                                                    (0.3 if abs(t - 10.0) < 0.05 else 1.0))):
        state = detector.update(t, e)
        events += state.events
        flags.append(state.blink)
    assert [e.type for e in events] == [EventType.BLINK, EventType.BLINK]
    assert events[0].start_s == pytest.approx(8.0, abs=0.05)
    assert events[1].start_s == pytest.approx(10.0, abs=0.05)
    assert sum(flags) == 2


def test_microsleep_is_reported_at_onset_and_is_not_a_blink() -> None:
    detector = EyeStateDetector(PerceptionConfig())
    events, finished = [], []
    for t, e in series(15.0, 14.0, lambda t: OPEN * (0.35 if 8.0 <= t < 10.0 else 1.0)):
        state = detector.update(t, e)
        events += state.events
        if state.blink_finished:
            finished.append(state.blink_finished)
        assert not (state.blink and 9.0 < t < 10.0)
    assert [e.type for e in events] == [EventType.MICROSLEEP]
    assert finished == []        # longer than blink_max_duration: no blink frames


# --------------------------------------------------------------------------------------- the camera model
def test_blink_kinematics_and_annotation() -> None:
    b = Blink(1.0, 0.085, 0.05, 0.175)
    assert b.closure(1.0) == 0.0 and b.closure(1.085) == pytest.approx(1.0)
    assert b.closure(1.085 + 0.05 + 0.0875) == pytest.approx(0.5)
    assert b.end_s == pytest.approx(1.31)
    script = LidScript(3.0, (b,))
    # a 5-fps camera with its shutter on the closed lid shows one frame; annotation = that frame
    cam = Camera(fps=5.0, exposure_s=0.02, phase_s=0.1, jitter_s=0.0)
    frames = []
    from fatigue_llm.sim.camera_model import CameraFrameTruth

    for i in range(15):
        t = 0.1 + i / 5.0
        seen = script.blink_closure(t)[0]
        frames.append(CameraFrameTruth(i, t, script.lid(t), seen, -1, False, 0, 0, 1))
    truth = annotate(script, cam, frames)
    assert [(x.start_frame, x.end_frame, x.visible) for x in truth.blinks] == [(5, 5, True)]


def test_random_scripts_have_realistic_kinds_and_no_overlap() -> None:
    script = random_lid_script(300.0, np.random.default_rng(3))
    kinds = {b.kind for b in script.blinks}
    assert kinds >= {"blink", "slow"}
    assert 10 <= 60 * len(script.blinks) / 300 <= 22
    assert all(a.end_s + 1.0 <= b.start_s for a, b in zip(script.blinks, script.blinks[1:], strict=False))
    normal = [b for b in script.blinks if b.kind == "blink"]
    assert all(0.07 <= b.close_s <= 0.10 and 0.15 <= b.open_s <= 0.20 for b in normal)


# -------------------------------------------------------------------------------- full path, per frame rate
@pytest.fixture(scope="module")
def faces() -> dict[str, FaceRenderer]:
    out = {"astronaut": FaceRenderer()}
    grid = grid_face()
    if grid is not None:
        out["grid"] = FaceRenderer(grid)
    return out


def simulate(face: FaceRenderer, fps: float, seed: int, duration: float = 60.0) -> CameraSimulator:
    rng = np.random.default_rng(seed)
    script = random_lid_script(duration, rng)
    exposure = float(rng.uniform(0.008, min(1.0 / fps, 0.05)))
    camera = Camera(fps=fps, exposure_s=exposure, seed=seed, jpeg_quality=int(rng.integers(60, 90)))
    return CameraSimulator(script, camera, face)


@pytest.mark.slow
@pytest.mark.parametrize("fps", RATES)
def test_blink_f1_per_frame_rate_on_unseen_seeds_and_face(faces: dict[str, FaceRenderer], fps: float) -> None:
    """Held out: astronaut seed 100 and (when ../shared is there) the GRID person, seed 200."""
    total = None
    total_old = None
    for name, seed in (("astronaut", 100), ("grid", 200)):
        if name not in faces:
            continue
        sim = simulate(faces[name], fps, seed)
        _, blinks, closures = run_perception(sim)
        truth = sim.truth()
        score, old = score_blinks(truth, blinks), score_blinks(truth, closures)
        total = score if total is None else total + score
        total_old = old if total_old is None else total_old + old
    assert total is not None and total_old is not None
    print(f"fps {fps}: event F1 {total.event_f1:.3f} frame F1 {total.frame_f1:.3f} "
          f"(closed-threshold runs: {total_old.event_f1:.3f} / {total_old.frame_f1:.3f})")
    assert total.event_f1 > 0.95
    assert total.frame_f1 >= 0.80


@pytest.mark.slow
def test_lost_face_and_covered_eyes_on_video_make_no_blink(faces: dict[str, FaceRenderer]) -> None:
    face = faces["astronaut"]
    sim = CameraSimulator(LidScript(12.0), Camera(fps=15.0, exposure_s=0.02, seed=3, underpasses=0), face)
    eyes = face._eyes
    x0 = min(e.box[0] for e in eyes) - 10
    x1 = max(e.box[2] for e in eyes) + 10
    y0 = min(e.box[1] for e in eyes) - 12
    y1 = max(e.box[3] for e in eyes) + 12
    events, records, online = [], [], []
    config = PerceptionConfig()
    with PerceptionPipeline(config) as pipeline:
        for t, frame in sim:
            frame = frame.copy()
            if 4.0 <= t < 6.5:
                frame[y0:y1, x0:x1] = (60, 80, 120)             # a hand over both eyes
            elif 8.0 <= t < 10.5 and int(t * 15) % 4 < 2:
                frame[:] = 40                                   # the face comes and goes
            obs = pipeline.process(frame, t)
            online.append((t, obs.blink))
            if pipeline.last_blink is not None:
                records.append(pipeline.last_blink)
            events += [e for e in obs.events if e.type in (EventType.BLINK, EventType.SLOW_BLINK)]
    assert records == [] and events == []        # FRAMES.csv's blink column and the events
    # the online flag is provisional: under the hand it may be set until the dip is longer than a blink
    assert not any(flag for t, flag in online if not 4.0 <= t < 4.0 + config.blink_max_duration + 0.1)


def _grid_blinks(clip: Path, step: int) -> int:
    with VideoFileSource(clip) as source:
        frames = [frame for _, frame in source]
    count = 0
    with PerceptionPipeline(PerceptionConfig(calibration_duration=1.0)) as pipeline:
        for i in range(0, len(frames), step):
            obs = pipeline.process(frames[i], i / 25.0)
            count += sum(1 for e in obs.events if e.type in (EventType.BLINK, EventType.SLOW_BLINK))
    return count


@pytest.mark.slow
@pytest.mark.skipif(not GRID_DIR.is_dir(), reason="../shared/data/grid (real GRID clips) is not there")
def test_real_grid_clips_subsampled_invent_no_blinks() -> None:
    """Real talking faces at 25 fps and subsampled to ~10 and 5 fps: a slower camera sees no more blinks
    (it may miss some) -- the counts stay consistent across rates."""
    clips = sorted(GRID_DIR.glob("*.mpg"))
    counts = {step: sum(_grid_blinks(c, step) for c in clips) for step in (1, 2, 5)}   # 25, 12.5, 5 fps
    print(f"GRID blinks over {len(clips)} clips at 25 / 12.5 / 5 fps: {counts[1]} / {counts[2]} / {counts[5]}")
    assert counts[2] <= counts[1] and counts[5] <= counts[1]
    assert counts[1] <= 2 * len(clips)         # 3-s clips: a real blink rate, not noise
