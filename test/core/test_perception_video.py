"""The full perception path (real MediaPipe) on the generated driver video, scored against ground truth."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fatigue_llm.perception.config import PerceptionConfig
from fatigue_llm.perception.detectors import EyeClosureRecord
from fatigue_llm.perception.landmarks import FaceLandmarks, FaceMeshDetector, _normalized_xyz
from fatigue_llm.perception.pipeline import (
    RIGIDITY_SCALE,
    FrameError,
    PerceptionPipeline,
    TimestampError,
    rigidity_confidence,
)
from fatigue_llm.perception.sources import VideoFileSource
from fatigue_llm.perception.types import EventType, FrameObservation
from fatigue_llm.sim.driver_video import (
    TRUTH_COLUMNS,
    DriverScript,
    EyeClosure,
    FaceRenderer,
    GroundTruth,
    frame_truth,
    make_sample_video,
    piecewise_affine_maps,
    render_video,
    sample_script,
)


@dataclass
class Run:
    truth: GroundTruth
    observations: list[FrameObservation]
    closures: list[tuple[int, int, EyeClosureRecord]]   # first and last closed frame


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    video = tmp_path_factory.mktemp("video") / "sample.mp4"
    truth = make_sample_video(video, video.with_suffix(".csv"))
    observations, closures, frame_of = [], [], {}
    with VideoFileSource(video) as source, PerceptionPipeline(PerceptionConfig()) as pipeline:
        for index, (t, frame) in enumerate(source):
            observations.append(pipeline.process(frame, t))
            frame_of[t] = index
            if pipeline.last_closure is not None:
                closures.append((frame_of[pipeline.last_closure.start_s], index - 1, pipeline.last_closure))
    return Run(truth, observations, closures)


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def events(run: Run, kind: EventType) -> list[tuple[int, float]]:
    """(frame index, event start) of each event of `kind`."""
    return [(i, e.start_s) for i, o in enumerate(run.observations) for e in o.events if e.type == kind]


def test_every_frame_has_a_face_and_calibration_completes(run: Run) -> None:
    assert len(run.observations) == len(run.truth.frames) == 300
    assert all(o.face_found for o in run.observations)
    assert not events(run, EventType.FACE_LOST)
    calibrated = [o.timestamp_s for o in run.observations if o.calibrated]
    assert calibrated[0] == pytest.approx(5.0, abs=0.1)
    # our measurement: open-eye EAR of the generated face ~0.30
    assert run.observations[-1].ear_threshold == pytest.approx(0.65 * 0.30, abs=0.02)


def test_closed_eye_frames_f1(run: Run) -> None:
    truth = np.array([f.eyes_closed for f in run.truth.frames])
    found = np.array([o.eyes_closed for o in run.observations])
    score = f1(int((truth & found).sum()), int((~truth & found).sum()), int((truth & ~found).sum()))
    assert score >= 0.9
    closure = np.array([o.eye_closure for o in run.observations])
    assert np.mean(closure[truth] >= 0.8) >= 0.9      # PERCLOS P80 sees the closed frames as closed
    assert np.mean(closure[~truth] < 0.8) >= 0.98


def test_blink_events_f1_durations_and_kinds(run: Run) -> None:
    truth_runs = run.truth.closed_runs()
    unmatched = list(run.closures)
    tp = 0
    for first, last in truth_runs:
        match = next((c for c in unmatched if c[0] <= last and c[1] >= first), None)
        if match is None:
            continue
        unmatched.remove(match)
        tp += 1
        fps = run.truth.script.fps
        assert match[2].duration_s == pytest.approx((last - first + 1) / fps, abs=1.01 / fps)
    assert f1(tp, len(unmatched), len(truth_runs) - tp) >= 0.9
    script = run.truth.script
    expected = [EventType.MICROSLEEP if c.duration_s >= 1.0 else
                EventType.SLOW_BLINK if c.duration_s > 0.3 else EventType.BLINK for c in script.closures]
    assert [c[2].kind for c in run.closures] == expected


def test_microsleeps_reported_at_onset(run: Run) -> None:
    microsleeps = [c for c in run.truth.script.closures if c.duration_s >= 1.0]
    found = [(run.observations[i].timestamp_s, start) for i, start in events(run, EventType.MICROSLEEP)]
    assert len(found) == len(microsleeps) == 2
    fps = run.truth.script.fps
    for (reported_at, start), truth in zip(found, microsleeps, strict=True):
        assert start == pytest.approx(truth.start_s, abs=1.01 / fps)
        assert 1.0 <= reported_at - start < 1.0 + 1.01 / fps     # as soon as 1 s closed, not at reopening
        assert reported_at < truth.start_s + truth.duration_s


def test_yawn_detected_on_mouth_opening_frames_only(run: Run) -> None:
    mouth = np.array([f.mouth_open for f in run.truth.frames])
    yawning = np.array([o.yawning for o in run.observations])
    wide = mouth >= 0.9
    assert yawning.any() and not yawning[mouth == 0].any()
    mar = np.array([o.mar for o in run.observations])
    assert mar[wide].min() > 0.6 > mar[mouth == 0].max()
    (index, start), = events(run, EventType.YAWN)
    yawn = run.truth.script.yawns[0]
    assert yawn.start_s < start < yawn.start_s + yawn.duration_s
    assert run.observations[index].timestamp_s <= yawn.start_s + yawn.duration_s


def test_nod_detected_once_during_the_nod(run: Run) -> None:
    (index, start), = events(run, EventType.NOD)
    nod = run.truth.script.nods[0]
    assert nod.start_s < start < run.observations[index].timestamp_s <= nod.start_s + nod.duration_s + 0.2
    pitch = np.degrees([o.pitch_rad for o in run.observations])
    assert np.nanmax(pitch) - np.nanmedian(pitch) > 12.0


# ------------------------------------------------------------------------------------ pipeline contract
@pytest.fixture(scope="module")
def renderer() -> FaceRenderer:
    return FaceRenderer()


def frames_with_blink(renderer: FaceRenderer, n: int = 16) -> list[np.ndarray]:
    script = DriverScript(duration_s=n / 15, closures=(EyeClosure(0.4, 0.2),))
    return [renderer.render(frame_truth(script, i).closure) for i in range(n)]


def test_bad_frames_and_timestamps_raise_without_changing_state(renderer: FaceRenderer) -> None:
    frames = frames_with_blink(renderer)
    with PerceptionPipeline(PerceptionConfig()) as clean:
        expected = [clean.process(f, i / 15) for i, f in enumerate(frames)]
    bad_frames = [np.zeros((0, 640, 3), np.uint8), np.zeros((48, 64, 3), np.float32),
                  np.zeros((48, 64, 4), np.uint8), np.zeros((48, 64, 3, 1), np.uint8), [[0, 1], [2, 3]]]
    with PerceptionPipeline(PerceptionConfig()) as pipeline:
        got = []
        for i, f in enumerate(frames):
            for bad in bad_frames:
                with pytest.raises(FrameError) as info:
                    pipeline.process(bad, i / 15 + 0.01)
                assert "shape" in str(info.value) or "numpy array" in str(info.value)
            if i:
                for stamp in ((i - 1) / 15, math.nan, math.inf, "soon"):
                    with pytest.raises(TimestampError):
                        pipeline.process(f, stamp)
            got.append(pipeline.process(f, i / 15))
    assert got == expected
    assert sum(o.eyes_closed for o in got) >= 2


def test_grey_frames_are_accepted(renderer: FaceRenderer) -> None:
    grey = renderer.render()[:, :, 1].copy()
    with PerceptionPipeline(PerceptionConfig(), still_images=True) as pipeline:
        assert pipeline.process(grey, 0.0).face_found
        observation = pipeline.process(grey[:, :, None], 0.1)
    assert observation.face_found and observation.ear > 0.25


def test_no_face_and_closed_pipeline(renderer: FaceRenderer) -> None:
    pipeline = PerceptionPipeline(PerceptionConfig(face_lost_duration=0.2))
    blank = np.full((480, 640, 3), 128, np.uint8)
    observations = [pipeline.process(blank, t) for t in (0.0, 0.1, 0.2, 0.3)]
    assert not any(o.face_found or o.eyes_closed for o in observations)
    assert all(math.isnan(o.ear) and o.tracking_confidence == 0.0 for o in observations)
    assert [e.type for o in observations for e in o.events] == [EventType.FACE_LOST]
    pipeline.close()
    pipeline.close()
    with pytest.raises(RuntimeError, match="close"):
        pipeline.process(blank, 1.0)


def test_fast_landmark_parsing_matches_protobuf_fields(renderer: FaceRenderer) -> None:
    detector = FaceMeshDetector(still_images=True)
    rgb = np.ascontiguousarray(renderer.render(closure=0.5)[:, :, ::-1])
    result = detector._mesh.process(rgb)
    detector.close()
    landmarks = result.multi_face_landmarks[0]
    slow = np.array([(p.x, p.y, p.z) for p in landmarks.landmark], np.float32)
    np.testing.assert_array_equal(_normalized_xyz(landmarks), slow)
    assert slow.shape == (478, 3)


def test_generator_sample_script_matches_the_demo_brief() -> None:
    script = sample_script()
    assert script.frame_count == pytest.approx(20 * 15, abs=15)
    early = [c.duration_s for c in script.closures if c.start_s < 8.0]
    assert early and all(0.1 <= d <= 0.2 for d in early)
    long_last_third = [c for c in script.closures if c.start_s >= script.duration_s * 2 / 3 - 1.0
                       and c.duration_s >= 1.5]
    assert len(long_last_third) >= 2
    middle = [c.duration_s for c in script.closures if 8.0 <= c.start_s < 13.0]
    assert middle == sorted(middle) and middle[0] > 0.3


def test_truth_csv_columns(tmp_path: Path, renderer: FaceRenderer) -> None:
    script = DriverScript(duration_s=1.0, fps=10.0, closures=(EyeClosure(0.25, 0.2),))  # frames 3, 4
    truth = render_video(script, tmp_path / "t.avi", tmp_path / "t.csv", renderer=renderer)
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0].split(",") == list(TRUTH_COLUMNS)
    assert len(lines) == 11 and len(truth.frames) == 10
    closed = [int(line.split(",")[2]) for line in lines[1:]]
    assert closed == [int(f.eyes_closed) for f in truth.frames] and sum(closed) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.avi", "t.csv"]   # no temporary files left


def test_piecewise_affine_maps_reproduce_an_affine_warp_and_pin_anchors() -> None:
    rng = np.random.default_rng(0)
    corners = np.array([[0, 0], [639, 0], [0, 479], [639, 479]], float)
    dst = np.concatenate([rng.uniform(50, 430, (40, 2)), corners])
    affine = np.array([[1.02, 0.05, -3.0], [-0.03, 0.98, 4.0]])
    src = np.c_[dst, np.ones(len(dst))] @ affine.T
    map_x, map_y = piecewise_affine_maps(src, dst, 640, 480)
    gy, gx = np.mgrid[0:480, 0:640]
    assert np.abs(map_x - (affine[0, 0] * gx + affine[0, 1] * gy + affine[0, 2])).max() < 1e-3
    assert np.abs(map_y - (affine[1, 0] * gx + affine[1, 1] * gy + affine[1, 2])).max() < 1e-3
    # a moved point pulls its neighbourhood, far pixels stay put
    src2 = dst.copy()
    src2[0] += (5.0, -4.0)
    map_x, map_y = piecewise_affine_maps(src2, dst, 640, 480)
    x, y = np.round(dst[0]).astype(int)
    assert map_x[y, x] == pytest.approx(dst[0][0] + 5.0, abs=0.6)
    assert (map_x[0, 0], map_y[479, 639]) == (0.0, 479.0)


def test_tracking_confidence_is_high_on_the_video_and_falls_with_a_poor_fit(run: Run) -> None:
    confidence = np.array([o.tracking_confidence for o in run.observations])
    assert 0.6 < confidence.min() <= confidence.max() <= 1.0
    points = np.zeros((478, 3), np.float32)
    points[33, :2], points[263, :2] = (200, 200), (300, 200)     # eye span 100 px
    face = FaceLandmarks(points, 640, 480)
    assert rigidity_confidence(face, 0.0) == 1.0
    assert rigidity_confidence(face, RIGIDITY_SCALE * 100) == pytest.approx(0.5)
    assert rigidity_confidence(face, 50.0) < 0.1
    assert rigidity_confidence(face, math.nan) == 0.0
