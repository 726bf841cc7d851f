"""``fatigue-llm simulate --scenario S.yaml --out BAG``: a labelled drive as a rosbag2 bag.

One scenario (sim/scenario.py) becomes a driver script (blinks, microsleeps, yawns, nods drawn from the fatigue
profile), the vehicle signals of sim/drive.py, and per-frame ground truth, written as

==================  ==================================  =================  ======================
topic               type                                rate               QoS
==================  ==================================  =================  ======================
vehicle/signals     fatigue_msgs/msg/VehicleSignals      vehicle.rate_hz    reliable
truth/fatigue       fatigue_msgs/msg/FatigueTruth        camera.fps         reliable
camera/image_raw    sensor_msgs/msg/Image (bgr8)         camera.fps         sensor_data
driver/observation  fatigue_msgs/msg/DriverObservation   camera.fps         reliable (--no-camera)
==================  ==================================  =================  ======================

With the camera, frames are rendered by sim/driver_video.py's FaceRenderer (occlusions: a hand over the face or
the head out of view; lighting changes: brightness and contrast ramps). Without it (``--no-camera`` or
``camera.enabled: false``) the DriverObservation a perfect face mesh would give is synthesised instead: EAR,
MAR and pitch from the rendered lid, mouth and head positions with the levels MediaPipe measures on the
rendered face (driver_video's docstring) plus noise, fed through the perception detectors themselves
(perception/detectors.py: calibration, closed eyes, blink / slow blink / microsleep / yawn / nod / face-lost
events), so long drives are evaluated in seconds.

Stamps (header and bag) are simulated time from START_NS, so a scenario and seed give byte-identical messages.
Plain typed Python, no rclpy.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import math
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fatigue_llm.bags.errors import BagError
from fatigue_llm.perception.config import PerceptionConfig
from fatigue_llm.perception.detectors import DriverStateDetectors, FaceMeasurement
from fatigue_llm.perception.types import FrameObservation, VehicleSample
from fatigue_llm.sim.drive import DriveSimError, positive_number, simulate_drive
from fatigue_llm.sim.driver_video import (
    LID_CLOSE_S,
    LID_OPEN_S,
    P80,
    YAWN_RAMP_S,
    DriverScript,
)
from fatigue_llm.sim.scenario import (
    LEVEL_NAMES,
    MICROSLEEP_MIN_S,
    SLOW_BLINK_S,
    Scenario,
    ScenarioError,
    driver_script,
    kss_of,
    level_of,
    load_scenario,
)
from fatigue_llm.topics import DRIVER_OBSERVATION, VEHICLE_SIGNALS

START_NS = 1_700_000_000 * 1_000_000_000   # simulated time zero (2023-11-14T22:13:20Z): reproducible stamps
TRUTH_TOPIC = "truth/fatigue"
IMAGE_TOPIC = "camera/image_raw"
CAMERA_FRAME = "driver_camera"
VEHICLE_FRAME = "base_link"

# What MediaPipe measures on the rendered face (driver_video docstring, our measurement): the synthetic
# observation maps the rendered positions linearly onto these levels.
EAR_OPEN, EAR_CLOSED = 0.29, 0.14          # eye aspect ratio, lids open / on the lower lid
MAR_REST, MAR_YAWN = 0.35, 0.78            # outer-lip mouth aspect ratio at rest / at full yawn
PITCH_GAIN = 16.0 / 20.0                   # solvePnP pitch rise per rendered degree of nod
# Measurement noise (std), our choice: small against the detector thresholds (closed at 0.65 x EAR_OPEN).
EAR_NOISE, MAR_NOISE, PITCH_NOISE_DEG = 0.008, 0.01, 0.4
TRACKING_CONFIDENCE = 0.78                 # the pipeline's rigidity confidence on the rendered face
OBSERVATION_STREAM = 21                    # RNG stream of the measurement noise


# ------------------------------------------------------------------------------------------ the timeline
def _windows(starts: Sequence[float], ends: Sequence[float], times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the window [start, end] holding each time or -1, that window's start) for sorted windows."""
    starts_a, ends_a = np.asarray(starts, dtype=float), np.asarray(ends, dtype=float)
    if len(starts_a) == 0:
        return np.full(len(times), -1), np.zeros(len(times))
    idx = np.searchsorted(starts_a, times, side="right") - 1
    safe = np.maximum(idx, 0)
    inside = (idx >= 0) & (times <= ends_a[safe])
    return np.where(inside, idx, -1), starts_a[safe]


def lid_closures(script: DriverScript, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """driver_video.lid_closure at many times at once (same arithmetic, so the same values): closure 0..1 and
    the index of the closure in progress (-1 when none). The script's closures must not overlap."""
    starts = [c.start_s - P80 * LID_CLOSE_S for c in script.closures]
    ends = [c.start_s + c.duration_s + P80 * LID_OPEN_S for c in script.closures]
    idx, down0 = _windows(starts, ends, times)
    up_end = np.asarray(ends + [0.0])[idx]
    full0, full1 = down0 + LID_CLOSE_S, up_end - LID_OPEN_S
    closure = np.where(times < full0, (times - down0) / LID_CLOSE_S,
                       np.where(times > full1, (up_end - times) / LID_OPEN_S, 1.0))
    return np.where(idx >= 0, closure, 0.0), idx


def mouth_openings(script: DriverScript, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """driver_video.mouth_opening at many times: opening 0..1 and the yawn index (-1 when none)."""
    yawns = script.yawns
    idx, start = _windows([y.start_s for y in yawns], [y.start_s + y.duration_s for y in yawns], times)
    end = np.asarray([y.start_s + y.duration_s for y in yawns] + [0.0])[idx]
    ramp = np.minimum(YAWN_RAMP_S, np.asarray([y.duration_s for y in yawns] + [1.0])[idx] / 2)
    peak = np.asarray([y.peak for y in yawns] + [0.0])[idx]
    level = np.minimum(1.0, np.minimum((times - start) / ramp, (end - times) / ramp))
    return np.where(idx >= 0, peak * 0.5 * (1.0 - np.cos(np.pi * level)), 0.0), idx


def head_pitches(script: DriverScript, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """driver_video.head_pitch at many times: pitch in degrees (chin down positive) and the nod index."""
    nods = script.nods
    idx, start = _windows([n.start_s for n in nods], [n.start_s + n.duration_s for n in nods], times)
    duration = np.asarray([n.duration_s for n in nods] + [1.0])[idx]
    peak = np.asarray([n.peak_deg for n in nods] + [0.0])[idx]
    phase = (times - start) / duration
    return np.where(idx >= 0, peak * 0.5 * (1.0 - np.cos(2.0 * np.pi * phase)), 0.0), idx


@dataclass(frozen=True)
class Timeline:
    """Per-frame ground truth of the drive (arrays of frame_count), at the camera frame times i / fps."""

    stamps_ns: np.ndarray       # int64, from the start of the drive
    times: np.ndarray           # s
    fatigue: np.ndarray
    kss: np.ndarray
    level: np.ndarray           # ALERT / DROWSY / SLEEPY
    time_awake_h: np.ndarray
    closure: np.ndarray         # lid position 0 (open) .. 1 (closed), as rendered
    eyes_closed: np.ndarray     # closure >= P80
    blink: np.ndarray           # inside a blink / slow blink (lid falling .. lid back up)
    microsleep: np.ndarray      # eyes closed during a microsleep closure
    mouth: np.ndarray           # mouth opening 0..1
    yawn: np.ndarray            # mouth >= 0.5
    pitch_deg: np.ndarray       # rendered head pitch
    nod: np.ndarray             # inside a nod
    face_visible: np.ndarray
    occlusion: np.ndarray       # index into camera.occlusions, -1 when the face is visible
    light_gain: np.ndarray      # brightness factor of lighting changes (1 = none)
    light_contrast: np.ndarray  # contrast factor of lighting changes (1 = none)

    def __len__(self) -> int:
        return len(self.times)


def _lighting(scenario: Scenario, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gain, contrast = np.ones(len(times)), np.ones(len(times))
    for light in scenario.camera.lighting:
        ramp = max(light.ramp_s, 1e-9)
        weight = np.clip(np.minimum(times - light.start_s, light.end_s - times) / ramp, 0.0, 1.0)
        gain *= 1.0 + (light.gain - 1.0) * weight
        contrast *= 1.0 + (light.contrast - 1.0) * weight
    return gain, contrast


def build_timeline(scenario: Scenario, script: DriverScript) -> Timeline:
    """The ground truth at every camera frame time of ``script`` (frame i at i / fps)."""
    n = script.frame_count
    stamps = np.array([round(i * 1e9 / script.fps) for i in range(n)], dtype=np.int64)
    times = np.arange(n) / script.fps
    fatigue = scenario.fatigue_at(times)
    closure, closure_idx = lid_closures(script, times)
    durations = np.asarray([c.duration_s for c in script.closures] + [0.0])[closure_idx]
    eyes_closed = closure >= P80 - 1e-9
    is_microsleep = (closure_idx >= 0) & (durations >= MICROSLEEP_MIN_S)
    mouth, _ = mouth_openings(script, times)
    pitch, nod_idx = head_pitches(script, times)
    occlusions = scenario.camera.occlusions
    occ_idx, _ = _windows([o.start_s for o in occlusions], [o.end_s for o in occlusions], times)
    if occlusions:  # intervals are half-open: the face is back at end_s
        occ_idx = np.where(times < np.asarray([o.end_s for o in occlusions])[occ_idx], occ_idx, -1)
    gain, contrast = _lighting(scenario, times)
    return Timeline(
        stamps_ns=stamps, times=times, fatigue=fatigue, kss=kss_of(fatigue), level=level_of(fatigue),
        time_awake_h=scenario.driver.time_awake_h + times / 3600.0, closure=closure, eyes_closed=eyes_closed,
        blink=(closure_idx >= 0) & ~is_microsleep, microsleep=is_microsleep & eyes_closed, mouth=mouth,
        yawn=mouth >= 0.5, pitch_deg=pitch, nod=nod_idx >= 0, face_visible=occ_idx < 0, occlusion=occ_idx,
        light_gain=gain, light_contrast=contrast,
    )


# --------------------------------------------------------------------------------- synthetic observations
def synthesize_observations(timeline: Timeline, seed: int,
                            config: PerceptionConfig | None = None) -> Iterator[FrameObservation]:
    """The FrameObservation of every frame as perception would report it from a perfect face mesh: measured
    EAR / MAR / pitch from the truth plus noise, through perception's own detectors (events included)."""
    config = config or PerceptionConfig()
    detectors = DriverStateDetectors(config)
    n = len(timeline)
    noise = np.random.default_rng([seed, OBSERVATION_STREAM]).standard_normal((5, n))
    ear_r = EAR_OPEN - (EAR_OPEN - EAR_CLOSED) * timeline.closure + EAR_NOISE * noise[0]
    ear_l = EAR_OPEN - (EAR_OPEN - EAR_CLOSED) * timeline.closure + EAR_NOISE * noise[1]
    mar = MAR_REST + (MAR_YAWN - MAR_REST) * timeline.mouth + MAR_NOISE * noise[2]
    pitch = np.radians(PITCH_GAIN * timeline.pitch_deg + PITCH_NOISE_DEG * noise[3])
    yaw = np.radians(0.5 * noise[4])
    for i in range(n):
        t = float(timeline.times[i])
        if not timeline.face_visible[i]:
            state = detectors.update(t, None)
            yield FrameObservation(t, False, ear_threshold=state.eye.ear_threshold,
                                   calibrated=state.eye.calibrated, events=state.events)
            continue
        ear = 0.5 * (float(ear_r[i]) + float(ear_l[i]))
        state = detectors.update(t, FaceMeasurement(ear, float(mar[i]), float(pitch[i])))
        eye = state.eye
        yield FrameObservation(
            timestamp_s=t, face_found=True, tracking_confidence=TRACKING_CONFIDENCE,
            ear_left=float(ear_l[i]), ear_right=float(ear_r[i]), ear=ear, ear_threshold=eye.ear_threshold,
            calibrated=eye.calibrated, eyes_closed=eye.eyes_closed, eye_closure=eye.eye_closure,
            closed_duration_s=eye.closed_duration_s, mar=float(mar[i]), yawning=state.yawning,
            pitch_rad=float(pitch[i]), yaw_rad=float(yaw[i]), roll_rad=0.0, events=state.events,
        )


# --------------------------------------------------------------------------------------------- images
class FrameRenderer:
    """Camera frames of the drive: driver_video's FaceRenderer, then occlusion, resize, lighting and noise.

    Construction runs MediaPipe once (FaceRenderer); raises RuntimeError if it finds no face in the base image.
    """

    HAND_BGR = (52, 68, 96)    # a hand in shadow (our choice)

    def __init__(self, scenario: Scenario, script: DriverScript) -> None:
        import cv2

        from fatigue_llm.sim.driver_video import FaceRenderer

        self._cv2 = cv2
        self.scenario = scenario
        self.script = script
        self.face = FaceRenderer()
        mesh = self.face.mesh[:, :2]
        self._face_box = (mesh.min(axis=0), mesh.max(axis=0))
        cv2.setRNGSeed(scenario.seed)

    def _occlude(self, image: np.ndarray, kind: str) -> np.ndarray:
        cv2 = self._cv2
        if kind == "out_of_view":  # the driver leans away: the head leaves the image, the seat edge stays
            h, w = image.shape[:2]
            shift = np.float32([[1, 0, 0.85 * w], [0, 1, 0]])
            return cv2.warpAffine(image, shift, (w, h), borderMode=cv2.BORDER_REPLICATE)
        (x0, y0), (x1, y1) = self._face_box
        centre = (int((x0 + x1) / 2), int(y0 + 0.55 * (y1 - y0)))
        axes = (int(0.62 * (x1 - x0)), int(0.5 * (y1 - y0)))
        out = image.copy()
        cv2.ellipse(out, centre, axes, 0, 0, 360, self.HAND_BGR, thickness=-1, lineType=cv2.LINE_AA)
        return out

    def render(self, timeline: Timeline, i: int) -> np.ndarray:
        """Frame ``i`` as HxWx3 uint8 BGR at the scenario's resolution. Call in frame order (pixel noise)."""
        cv2 = self._cv2
        image = self.face.render(float(timeline.closure[i]), float(timeline.mouth[i]), float(timeline.pitch_deg[i]))
        occlusion = int(timeline.occlusion[i])
        if occlusion >= 0:
            image = self._occlude(image, self.scenario.camera.occlusions[occlusion].kind)
        camera = self.scenario.camera
        if (image.shape[1], image.shape[0]) != (camera.width, camera.height):
            image = cv2.resize(image, (camera.width, camera.height), interpolation=cv2.INTER_AREA)
        out = image.astype(np.float32)
        contrast = float(timeline.light_contrast[i])
        if contrast != 1.0:
            out = (out - 128.0) * contrast + 128.0
        t = float(timeline.times[i])
        drift = 1.0 + self.script.drift * math.sin(2.0 * math.pi * t / self.script.drift_period_s)
        out *= drift * float(timeline.light_gain[i])
        if self.script.noise_sigma > 0:
            noise = np.empty_like(out)
            cv2.randn(noise, 0.0, self.script.noise_sigma)
            out += noise
        np.clip(out, 0, 255, out=out)
        return out.astype(np.uint8)


# ------------------------------------------------------------------------------------------- messages
class _Messages:
    """Typestore message builders (rosbags objects, no rclpy)."""

    def __init__(self, typestore: Any) -> None:
        self.t = typestore.types

    def stamp(self, ns: int) -> Any:
        total = START_NS + int(ns)
        return self.t["builtin_interfaces/msg/Time"](sec=total // 1_000_000_000, nanosec=total % 1_000_000_000)

    def header(self, ns: int, frame_id: str) -> Any:
        return self.t["std_msgs/msg/Header"](stamp=self.stamp(ns), frame_id=frame_id)

    def vehicle(self, ns: int, sample: Any) -> Any:
        return self.t["fatigue_msgs/msg/VehicleSignals"](
            header=self.header(ns, VEHICLE_FRAME), speed=float(sample.speed),
            steering_angle=float(sample.steering_angle), yaw_rate=float(sample.yaw_rate),
            lateral_offset=float(sample.lateral_offset), time_driving=float(sample.time_driving))

    def truth(self, tl: Timeline, i: int) -> Any:
        return self.t["fatigue_msgs/msg/FatigueTruth"](
            header=self.header(int(tl.stamps_ns[i]), CAMERA_FRAME), level=int(tl.level[i]),
            fatigue=float(tl.fatigue[i]), kss=float(tl.kss[i]), time_awake=float(tl.time_awake_h[i]),
            eyes_closed=bool(tl.eyes_closed[i]), blink=bool(tl.blink[i]), microsleep=bool(tl.microsleep[i]),
            yawn=bool(tl.yawn[i]), nod=bool(tl.nod[i]), face_visible=bool(tl.face_visible[i]))

    def observation(self, ns: int, obs: FrameObservation) -> Any:
        events = [self.t["fatigue_msgs/msg/DriverEvent"](
            type=int(e.type), start=self.stamp(round(e.start_s * 1e9)), duration=float(e.duration_s),
            magnitude=float(e.magnitude)) for e in obs.events]
        return self.t["fatigue_msgs/msg/DriverObservation"](
            header=self.header(ns, CAMERA_FRAME), face_found=obs.face_found,
            tracking_confidence=float(obs.tracking_confidence), ear_left=float(obs.ear_left),
            ear_right=float(obs.ear_right), ear=float(obs.ear), ear_threshold=float(obs.ear_threshold),
            calibrated=obs.calibrated, eyes_closed=obs.eyes_closed, eye_closure=float(obs.eye_closure),
            closed_duration=float(obs.closed_duration_s), blink=bool(obs.blink), mar=float(obs.mar),
            yawning=obs.yawning, head_pitch=float(obs.pitch_rad), head_yaw=float(obs.yaw_rad),
            head_roll=float(obs.roll_rad), events=events)

    def image(self, ns: int, frame: np.ndarray) -> Any:
        h, w = frame.shape[:2]
        return self.t["sensor_msgs/msg/Image"](
            header=self.header(ns, CAMERA_FRAME), height=h, width=w, encoding="bgr8", is_bigendian=0,
            step=w * 3, data=np.ascontiguousarray(frame).reshape(-1))


# ------------------------------------------------------------------------------------------ simulation
@dataclass(frozen=True)
class SimulationResult:
    counts: dict[str, int]              # messages per topic
    duration_s: float
    level_seconds: dict[str, float]     # time at each truth level
    events: dict[str, int]              # scripted + drawn events by kind
    camera: bool


Stream = Iterator[tuple[int, int, str, Any]]   # (stamp ns from the start, topic order, topic, message)


def _vehicle_stream(m: _Messages, samples: Sequence[VehicleSample]) -> Stream:
    for sample in samples:
        ns = round(sample.timestamp_s * 1e9)
        yield ns, 0, VEHICLE_SIGNALS, m.vehicle(ns, sample)


def _truth_stream(m: _Messages, timeline: Timeline) -> Stream:
    for i, ns in enumerate(timeline.stamps_ns.tolist()):
        yield ns, 1, TRUTH_TOPIC, m.truth(timeline, i)


def _image_stream(m: _Messages, timeline: Timeline, renderer: FrameRenderer) -> Stream:
    for i, ns in enumerate(timeline.stamps_ns.tolist()):  # rendered one frame ahead of the writer, in order
        yield ns, 2, IMAGE_TOPIC, m.image(ns, renderer.render(timeline, i))


def _observation_stream(m: _Messages, timeline: Timeline, seed: int) -> Stream:
    observations = synthesize_observations(timeline, seed)
    for ns, observation in zip(timeline.stamps_ns.tolist(), observations, strict=True):
        yield ns, 2, DRIVER_OBSERVATION, m.observation(ns, observation)


def closure_kind(duration_s: float) -> str:
    """blink / slow_blink / microsleep by the closure's time at >= 80 % closed (perception's defaults)."""
    if duration_s >= MICROSLEEP_MIN_S:
        return "microsleep"
    return "slow_blink" if duration_s > SLOW_BLINK_S else "blink"


def microsleep_lapses(script: DriverScript) -> list[tuple[float, float]]:
    """(start s, duration s) of every microsleep: the steering wheel is held while the eyes are closed."""
    return [(c.start_s, c.duration_s) for c in script.closures if c.duration_s >= MICROSLEEP_MIN_S]


def script_events(script: DriverScript) -> list[tuple[float, float, str]]:
    """(start s, end s, event) of every eye closure (its >= 80 % closed interval), yawn and nod, by start."""
    rows = [(c.start_s, c.start_s + c.duration_s, closure_kind(c.duration_s)) for c in script.closures]
    rows += [(y.start_s, y.start_s + y.duration_s, "yawn") for y in script.yawns]
    rows += [(n.start_s, n.start_s + n.duration_s, "nod") for n in script.nods]
    return sorted(rows)


def level_periods(timeline: Timeline, duration_s: float) -> list[tuple[float, float, str]]:
    """(start s, end s, level name) of every run of equal truth level, at frame resolution."""
    periods: list[tuple[float, float, str]] = []
    levels = timeline.level.tolist()
    start = 0
    for i in range(1, len(levels) + 1):
        if i == len(levels) or levels[i] != levels[start]:
            end = float(timeline.times[i]) if i < len(levels) else duration_s
            periods.append((float(timeline.times[start]), end, LEVEL_NAMES[levels[start]]))
            start = i
    return periods


def simulate(scenario: Scenario, out: str | Path, storage: str = "mcap", *, progress: bool = True,
             labels_csv: str | Path | None = None, events_csv: str | Path | None = None) -> SimulationResult:
    """Write the scenario's drive as a bag at ``out`` (must not exist). The camera is rendered when
    ``scenario.camera.enabled``, else driver/observation is synthesised.

    Raises ScenarioError / DriveSimError for an unusable scenario, BagError when the bag cannot be written,
    OSError for the CSV files, RuntimeError when the face renderer cannot start.
    """
    from fatigue_llm.bags.writer import BagWriter

    script = driver_script(scenario)
    timeline = build_timeline(scenario, script)
    drive = simulate_drive(scenario.duration_s, scenario.vehicle.rate_hz, scenario.keyframes, scenario.seed,
                           time_driving_at_start=scenario.driver.time_driving_h * 3600.0,
                           forced_lapses=microsleep_lapses(script))
    camera = scenario.camera.enabled
    renderer = FrameRenderer(scenario, script) if camera else None
    with BagWriter(out, storage=storage) as writer:
        m = _Messages(writer.typestore)
        writer.add_topic(VEHICLE_SIGNALS, "fatigue_msgs/msg/VehicleSignals", qos="reliable")
        writer.add_topic(TRUTH_TOPIC, "fatigue_msgs/msg/FatigueTruth", qos="reliable")
        streams = [_vehicle_stream(m, drive.samples), _truth_stream(m, timeline)]
        if renderer is not None:
            writer.add_topic(IMAGE_TOPIC, "sensor_msgs/msg/Image", qos="sensor_data")
            streams.append(_image_stream(m, timeline, renderer))
        else:
            writer.add_topic(DRIVER_OBSERVATION, "fatigue_msgs/msg/DriverObservation", qos="reliable")
            streams.append(_observation_stream(m, timeline, scenario.seed))
        counts: Counter[str] = Counter()
        total = len(drive.samples) + 2 * len(timeline)
        bar = _progress(total, scenario.name, progress)
        for ns, _, topic, message in heapq.merge(*streams):  # in time order; ties: vehicle, truth, driver
            writer.write(topic, START_NS + ns, message)
            counts[topic] += 1
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    frame_s = 1.0 / scenario.camera.fps
    level_seconds = {name: float(np.sum(timeline.level == k)) * frame_s for k, name in enumerate(LEVEL_NAMES)}
    events = script_events(script)
    if labels_csv is not None:
        _write_csv(Path(labels_csv), ("start_s", "end_s", "level"), level_periods(timeline, scenario.duration_s))
    if events_csv is not None:
        _write_csv(Path(events_csv), ("start_s", "end_s", "event"), events)
    return SimulationResult(dict(counts), scenario.duration_s, level_seconds,
                            dict(Counter(kind for _, _, kind in events)), camera)


def _progress(total: int, name: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"simulate {name}", unit="msg", file=sys.stderr, disable=None,
                mininterval=0.5, leave=False)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[tuple[float, float, str]]) -> None:
    """Atomic CSV of (start_s, end_s, label) rows, times with millisecond resolution."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="") as fh:
            out = csv.writer(fh, lineterminator="\n")
            out.writerow(header)
            out.writerows([f"{start:.3f}", f"{end:.3f}", label] for start, end, label in rows)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------------------- command line
def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fatigue-llm simulate",
        description="Simulate a labelled drive from a scenario YAML into a rosbag2 bag: vehicle/signals, "
                    "truth/fatigue and camera/image_raw (or, with --no-camera, driver/observation).")
    parser.add_argument("--scenario", required=True, metavar="S.yaml", help="scenario file (configs/scenarios/)")
    parser.add_argument("--out", required=True, metavar="BAG", help="bag folder to create (must not exist)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="bag storage (default mcap)")
    camera = parser.add_mutually_exclusive_group()
    camera.add_argument("--no-camera", dest="camera", action="store_false", default=None,
                        help="no images: synthesise driver/observation from the truth (fast, for long drives)")
    camera.add_argument("--camera", dest="camera", action="store_true",
                        help="render camera/image_raw even when the scenario has camera.enabled: false")
    parser.add_argument("--seed", type=_seed, metavar="N", help="random seed (default: the scenario's)")
    parser.add_argument("--duration", type=positive_number, metavar="S", help="length in s (default: the scenario's)")
    parser.add_argument("--labels-csv", metavar="PATH", help="also write start_s,end_s,level truth level periods")
    parser.add_argument("--events-csv", metavar="PATH", help="also write start_s,end_s,event driver events")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``fatigue-llm simulate``: 0 on success, 2 for bad input (scenario, arguments, existing bag), 1 when a
    file cannot be written."""
    args = _parser().parse_args(argv)
    try:
        scenario = load_scenario(args.scenario).with_overrides(
            seed=args.seed, duration_s=args.duration, camera=args.camera)
        for name in ("labels_csv", "events_csv"):
            path = getattr(args, name)
            if path is not None and not Path(path).resolve().parent.is_dir():
                raise ScenarioError(f"--{name.replace('_', '-')} {path}: folder does not exist")
        result = simulate(scenario, args.out, args.storage, progress=not args.quiet,
                          labels_csv=args.labels_csv, events_csv=args.events_csv)
    except (ScenarioError, DriveSimError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BagError as error:  # an existing bag, an unknown storage, a bag that cannot be created
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    levels = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.level_seconds.items() if seconds)
    events = ", ".join(f"{count} {kind}" for kind, count in sorted(result.events.items())) or "no events"
    topics = ", ".join(f"{topic} {count}" for topic, count in result.counts.items())
    print(f"wrote {args.out} ({args.storage}, {result.duration_s:g} s, seed {scenario.seed}): {topics}; "
          f"truth {levels}; {events}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
