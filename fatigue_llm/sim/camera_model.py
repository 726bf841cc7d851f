"""A camera model for the synthetic driver video: continuous lid motion sampled by a real(istic) camera.

`driver_video.FaceRenderer` paints the eyelids from a closure value; this module decides *which* closure
a camera frame shows and what the camera does to it:

* **lid kinematics** (`Blink`): closing ~70-100 ms, closed ~40-60 ms, reopening ~150-200 ms for an alert
  blink (raised-cosine strokes; the reopening is the slower phase, Schleicher et al. 2008; Caffier et al.
  2003), slow blinks (closing ~150 ms, closed 0.15-0.45 s, reopening ~300 ms), microsleeps (closed 1-2 s),
  incomplete blinks (the lid stops at 55-90 %), and squints (`Squint`: the lid rests 20-35 % lower for
  seconds, ramps > 1 s) that move the open-eye level without being blinks;
* **shutter** (`Camera`): frames at 5-30 fps with a random phase between the blink timeline and the shutter,
  timing jitter, and a finite exposure: the image is the mean of the lid rendered at sub-exposure instants
  (`EXPOSURE_STEP_S` apart), i.e. the lid is motion-blurred;
* **head-pose drift**: smooth yaw / pitch / roll (a few degrees), translation and scale, applied as the
  perspective warp of the face plane rotated about its centre (a planar approximation: no self-occlusion);
* **lighting**: slow auto-exposure gain drift, a side-light gradient that comes and goes, and a dark
  underpass (gain steps to ~0.6 for 1-2 s) at random times;
* **sensor**: Gaussian read noise plus signal-dependent (shot-like) noise growing with the gain;
* **compression**: JPEG at a given quality (`cv2.imencode`), or mp4v when written with `write_video`.

The second face (`second_face`): a real different person when the GRID corpus clips are there
(`../shared/data/grid`, Cooke et al. 2006, CC BY 4.0: the first frame of a clip, cropped to the face and
scaled to 640x480 -- a soft, upscaled face like a cheap webcam), else a geometric variant of the astronaut
photo (`variant_face`: darker skin tone, narrower eyes by a vertical squash of the eye regions, a wider
face). Tests that want "a face the detector was not tuned on" use either.

Ground truth per frame (`CameraFrameTruth`): the closure at the exposure midpoint and the exposure-mean
closure the image shows; blink intervals as annotators mark them: the first frame whose image shows the
lid at least `VISIBLE_CLOSURE` down to the last such frame. A blink whose deepest frame shows less than
`MIN_VISIBLE_DEPTH` is not visible in the video at all (a 5-fps camera can fall between a short blink's
frames); it is listed as a "don't care" blink (`visible=False`): detecting it or not is neither a hit nor a
false alarm.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from fatigue_llm.sim.driver_video import HEIGHT, WIDTH, FaceRenderer, base_face_image, write_frames_atomic

VISIBLE_CLOSURE = 0.1      # an annotator sees the lid moving from ~10 % of its travel (our choice)
MIN_VISIBLE_DEPTH = 0.25   # a blink whose deepest frame shows less is invisible in the video (our choice)
EXPOSURE_STEP_S = 0.004    # s between sub-exposure renders (a 200 ms lid stroke gets 50 steps)
MAX_EXPOSURE_STEPS = 16
GRID_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "grid"


# ------------------------------------------------------------------------------------------- lid motion
def _raised_cosine(u: float) -> float:
    return 0.5 * (1.0 - math.cos(math.pi * min(1.0, max(0.0, u))))


@dataclass(frozen=True)
class Blink:
    """One lid movement: starts to fall at `start_s`, reaches `depth` after `close_s`, stays `hold_s`,
    back up after `open_s`."""

    start_s: float
    close_s: float = 0.085
    hold_s: float = 0.05
    open_s: float = 0.175
    depth: float = 1.0
    kind: str = "blink"    # blink | slow | microsleep | incomplete

    @property
    def end_s(self) -> float:
        return self.start_s + self.close_s + self.hold_s + self.open_s

    def closure(self, t: float) -> float:
        u = t - self.start_s
        if u <= 0 or t >= self.end_s:
            return 0.0
        if u < self.close_s:
            return self.depth * _raised_cosine(u / self.close_s)
        u -= self.close_s
        if u < self.hold_s:
            return self.depth
        return self.depth * (1.0 - _raised_cosine((u - self.hold_s) / self.open_s))


@dataclass(frozen=True)
class Squint:
    """The lids rest `level` lower from `start_s` for `duration_s` (ramps of `ramp_s` inside it)."""

    start_s: float
    duration_s: float
    level: float = 0.3
    ramp_s: float = 1.5

    def closure(self, t: float) -> float:
        u, end = t - self.start_s, self.start_s + self.duration_s
        if u <= 0 or t >= end:
            return 0.0
        ramp = min(self.ramp_s, self.duration_s / 2)
        return self.level * min(_raised_cosine(u / ramp), _raised_cosine((end - t) / ramp))


@dataclass(frozen=True)
class LidScript:
    duration_s: float
    blinks: tuple[Blink, ...] = ()
    squints: tuple[Squint, ...] = ()

    def blink_closure(self, t: float) -> tuple[float, int]:
        """(closure of the blink component 0..1, index of the blink in progress or -1)."""
        for i, b in enumerate(self.blinks):
            if b.start_s < t < b.end_s:
                return b.closure(t), i
        return 0.0, -1

    def squint_level(self, t: float) -> float:
        return max((s.closure(t) for s in self.squints), default=0.0)

    def lid(self, t: float) -> float:
        """Total lid closure: a blink closes the rest of the way from the squinted rest position."""
        rest = self.squint_level(t)
        blink, _ = self.blink_closure(t)
        return rest + (1.0 - rest) * blink


def random_lid_script(duration_s: float, rng: np.random.Generator, rate_per_min: float = 16.0,
                      slow_fraction: float = 0.12, microsleep_fraction: float = 0.04,
                      incomplete_fraction: float = 0.08, squints: int = 1, min_gap_s: float = 1.0,
                      start_s: float = 2.0) -> LidScript:
    """Blinks at `rate_per_min` (exponential gaps, at least `min_gap_s` between one blink's end and the next
    start) with realistic kinematics, some slow / incomplete blinks and microsleeps, and `squints` squints
    placed between blinks (no blink starts while the lid ramps)."""
    blinks: list[Blink] = []
    t = start_s
    mean_gap = 60.0 / rate_per_min
    while True:
        t += min_gap_s + rng.exponential(max(mean_gap - min_gap_s, 0.1))
        r = rng.random()
        if r < microsleep_fraction:
            b = Blink(t, rng.uniform(0.15, 0.25), rng.uniform(1.0, 2.0), rng.uniform(0.3, 0.45), 1.0, "microsleep")
        elif r < microsleep_fraction + slow_fraction:
            b = Blink(t, rng.uniform(0.12, 0.18), rng.uniform(0.15, 0.45), rng.uniform(0.25, 0.35), 1.0, "slow")
        elif r < microsleep_fraction + slow_fraction + incomplete_fraction:
            b = Blink(t, rng.uniform(0.06, 0.09), rng.uniform(0.0, 0.03), rng.uniform(0.13, 0.18),
                      rng.uniform(0.55, 0.9), "incomplete")
        else:
            b = Blink(t, rng.uniform(0.07, 0.10), rng.uniform(0.04, 0.06), rng.uniform(0.15, 0.20), 1.0, "blink")
        if b.end_s > duration_s - 1.0:
            break
        blinks.append(b)
        t = b.end_s
    sq: list[Squint] = []
    for _ in range(squints):
        length = rng.uniform(5.0, 9.0)
        s0 = rng.uniform(start_s + 3.0, max(start_s + 3.5, duration_s - length - 2.0))
        sq.append(Squint(s0, length, rng.uniform(0.2, 0.35), rng.uniform(1.2, 2.0)))
    # no blink during a squint's ramps (the ramp and the blink would both be the lid moving)
    def in_ramp(b: Blink) -> bool:
        return any(s.start_s - 0.3 < b.end_s and b.start_s < s.start_s + s.ramp_s + 0.3 or
                   s.start_s + s.duration_s - s.ramp_s - 0.3 < b.end_s and b.start_s < s.start_s + s.duration_s + 0.3
                   for s in sq)
    return LidScript(duration_s, tuple(b for b in blinks if not in_ramp(b)), tuple(sq))


# --------------------------------------------------------------------------------------------- camera
@dataclass(frozen=True)
class Camera:
    """How frames are taken. `phase_s` None = random in [0, 1/fps); all randomness from `seed`."""

    fps: float = 15.0
    exposure_s: float = 0.02
    phase_s: float | None = None
    jitter_s: float = 0.002           # std of the frame-time jitter (s)
    noise_sigma: float = 2.5          # read noise, grey levels
    shot_noise: float = 0.08          # extra noise sigma per sqrt(grey level) x gain
    jpeg_quality: int | None = 80     # None = no JPEG round trip
    head_yaw_deg: float = 6.0         # amplitudes of the smooth head-pose drift
    head_pitch_deg: float = 5.0
    head_roll_deg: float = 3.0
    head_shift_px: float = 15.0
    head_scale: float = 0.05
    gain_drift: float = 0.12          # +- slow auto-exposure gain
    side_light: float = 0.25          # peak strength of the left/right lighting gradient
    underpasses: int = 1              # dark stretches (gain ~0.6 for 1-2 s)
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.fps > 0 and 0 < self.exposure_s <= 1.0 / self.fps + 1e-9):
            raise ValueError(f"need fps > 0 and 0 < exposure_s <= 1/fps, got {self.fps}, {self.exposure_s}")


@dataclass(frozen=True)
class _Drift:
    """Sum of sinusoids with random phases and periods 4-25 s, scaled to +-1."""

    periods: np.ndarray
    phases: np.ndarray

    @classmethod
    def make(cls, rng: np.random.Generator, n: int = 3) -> _Drift:
        return cls(rng.uniform(4.0, 25.0, n), rng.uniform(0, 2 * np.pi, n))

    def __call__(self, t: float) -> float:
        return float(np.mean(np.sin(2 * np.pi * t / self.periods + self.phases)) * math.sqrt(2.0 / 1.0))


@dataclass(frozen=True)
class CameraFrameTruth:
    frame: int
    timestamp_s: float
    closure_mid: float        # total lid closure at the exposure midpoint
    closure_seen: float       # exposure-mean closure of the blink component (what the image shows)
    blink_id: int             # blink whose annotated interval holds this frame, else -1
    eyes_closed: bool         # closure_mid >= 0.8 (PERCLOS P80)
    yaw_deg: float
    pitch_deg: float
    gain: float


@dataclass(frozen=True)
class AnnotatedBlink:
    index: int                # into script.blinks
    start_frame: int
    end_frame: int            # inclusive
    visible: bool             # deepest frame shows >= MIN_VISIBLE_DEPTH (else "don't care")
    kind: str


@dataclass(frozen=True)
class CameraTruth:
    script: LidScript
    camera: Camera
    frames: tuple[CameraFrameTruth, ...] = field(default_factory=tuple)
    blinks: tuple[AnnotatedBlink, ...] = field(default_factory=tuple)

    def blink_frames(self) -> np.ndarray:
        """Per-frame 0/1: inside a visible annotated blink."""
        flags = np.zeros(len(self.frames), bool)
        for b in self.blinks:
            if b.visible:
                flags[b.start_frame:b.end_frame + 1] = True
        return flags


class CameraSimulator:
    """Renders a LidScript through a Camera: iterate for (timestamp_s, BGR frame); `truth()` afterwards.

    Head pose, lighting and noise come from `camera.seed`; the lids from the script.
    """

    def __init__(self, script: LidScript, camera: Camera, renderer: FaceRenderer | None = None) -> None:
        self.script = script
        self.camera = camera
        self.renderer = renderer or FaceRenderer()
        rng = np.random.default_rng(camera.seed)
        self._rng = rng
        self.phase = rng.uniform(0, 1.0 / camera.fps) if camera.phase_s is None else camera.phase_s
        self._drifts = [_Drift.make(rng) for _ in range(8)]
        self._underpass = [(rng.uniform(2.0, max(2.5, script.duration_s - 3.0)), rng.uniform(1.0, 2.0))
                           for _ in range(camera.underpasses)]
        h, w = self.renderer.base.shape[:2]
        self._size = (w, h)
        self._xgrad = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :, None]
        self._frames: list[CameraFrameTruth] = []

    @property
    def frame_count(self) -> int:
        return int((self.script.duration_s - self.phase) * self.camera.fps)

    def timestamps(self) -> np.ndarray:
        cam = self.camera
        rng = np.random.default_rng(cam.seed + 7919)
        n = self.frame_count
        t = self.phase + np.arange(n) / cam.fps + rng.normal(0.0, cam.jitter_s, n)
        t = np.maximum.accumulate(t)
        t[1:] = np.maximum(t[1:], t[:-1] + 1e-4)
        return t

    # -- what the camera sees ------------------------------------------------------------------------
    def _gain(self, t: float) -> float:
        g = 1.0 + self.camera.gain_drift * self._drifts[0](t)
        for start, length in self._underpass:
            ramp = 0.3
            if start - ramp < t < start + length + ramp:
                depth = min(1.0, (t - start + ramp) / ramp, (start + length + ramp - t) / ramp)
                g *= 1.0 - 0.4 * depth
        return g

    def _pose(self, t: float) -> tuple[float, float, float, float, float, float]:
        c, d = self.camera, self._drifts
        return (c.head_yaw_deg * d[1](t), c.head_pitch_deg * d[2](t), c.head_roll_deg * d[3](t),
                c.head_shift_px * d[4](t), c.head_shift_px * d[5](t), 1.0 + c.head_scale * d[6](t))

    def _homography(self, yaw: float, pitch: float, roll: float, dx: float, dy: float, s: float) -> np.ndarray:
        """Perspective image of the face plane rotated about its centre (focal length ~ image width)."""
        w, h = self._size
        f = float(w)
        cx, cy = w / 2.0, h / 2.0
        corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64) - (cx, cy)
        rot, _ = cv2.Rodrigues(np.radians([pitch, yaw, roll]))
        pts3 = np.column_stack([corners * s, np.zeros(4)]) @ rot.T + (0.0, 0.0, f)
        proj = pts3[:, :2] * f / pts3[:, 2:3] + (cx + dx, cy + dy)
        return cv2.getPerspectiveTransform((corners + (cx, cy)).astype(np.float32), proj.astype(np.float32))

    def render(self, t: float) -> tuple[np.ndarray, float, float]:
        """(frame, closure at the exposure midpoint, exposure-mean blink closure) at time t."""
        cam, script = self.camera, self.script
        steps = max(1, min(MAX_EXPOSURE_STEPS, int(math.ceil(cam.exposure_s / EXPOSURE_STEP_S))))
        instants = t + (np.arange(steps) + 0.5) / steps * cam.exposure_s - cam.exposure_s / 2
        lids = [script.lid(float(u)) for u in instants]
        seen = float(np.mean([script.blink_closure(float(u))[0] for u in instants]))
        unique = sorted(set(round(v, 3) for v in lids))
        if len(unique) == 1:
            image = self.renderer.render(unique[0]).astype(np.float32)
        else:   # motion blur: the mean of the lid over the exposure
            image = np.zeros((self._size[1], self._size[0], 3), np.float32)
            for v in lids:
                image += self.renderer.render(round(v, 3))
            image /= len(lids)
        pose = self._pose(t)
        image = cv2.warpPerspective(image, self._homography(*pose), self._size, flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
        gain = self._gain(t)
        side = cam.side_light * max(0.0, self._drifts[7](t))
        image *= gain * (1.0 + side * self._xgrad)
        sigma = np.sqrt(cam.noise_sigma ** 2 + (cam.shot_noise ** 2) * np.clip(image, 0, 255) * gain)
        image += self._rng.standard_normal(image.shape, dtype=np.float32) * sigma
        frame = np.clip(image, 0, 255).astype(np.uint8)
        if cam.jpeg_quality is not None:
            ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(cam.jpeg_quality)])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            frame = cv2.imdecode(data, cv2.IMREAD_COLOR)
        return frame, script.lid(t), seen

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        self._frames = []
        for i, t in enumerate(self.timestamps()):
            t = float(t)
            frame, mid, seen = self.render(t)
            pose = self._pose(t)
            self._frames.append(CameraFrameTruth(i, t, mid, seen, -1, mid >= 0.8 - 1e-9, pose[0], pose[1],
                                                 self._gain(t)))
            yield t, frame

    def truth(self) -> CameraTruth:
        """Ground truth of the frames iterated so far (annotated blink intervals included)."""
        return annotate(self.script, self.camera, self._frames)


def annotate(script: LidScript, camera: Camera, frames: Sequence[CameraFrameTruth]) -> CameraTruth:
    """Blink intervals as annotators mark them: first to last frame showing the blink's lid >= VISIBLE_CLOSURE
    (or, for a blink no frame shows that much, nothing: it is invisible)."""
    times = np.array([f.timestamp_s for f in frames])
    out_frames = list(frames)
    blinks: list[AnnotatedBlink] = []
    exposure = camera.exposure_s
    for i, b in enumerate(script.blinks):
        idx = np.nonzero((times + exposure / 2 > b.start_s) & (times - exposure / 2 < b.end_s))[0]
        if len(idx) == 0:
            continue
        seen = np.array([frames[k].closure_seen for k in idx])
        shown = idx[seen >= VISIBLE_CLOSURE]
        visible = bool(seen.max() >= MIN_VISIBLE_DEPTH)
        if len(shown) == 0:
            blinks.append(AnnotatedBlink(i, int(idx[0]), int(idx[-1]), False, b.kind))
            continue
        blinks.append(AnnotatedBlink(i, int(shown[0]), int(shown[-1]), visible, b.kind))
        for k in range(shown[0], shown[-1] + 1):
            out_frames[k] = replace(out_frames[k], blink_id=i)
    return CameraTruth(script, camera, tuple(out_frames), tuple(blinks))


# -------------------------------------------------------------------------------------------- the faces
def variant_face(base: np.ndarray | None = None) -> np.ndarray:
    """A geometric / tonal variant of the astronaut face: darker, warmer skin, eyes 25 % narrower
    (vertical squash of each eye region towards its centre line) and a 8 % wider face."""
    from fatigue_llm.perception.landmarks import FaceMeshDetector
    from fatigue_llm.sim.driver_video import _EYES, piecewise_affine_maps

    image = base_face_image() if base is None else base.copy()
    with FaceMeshDetector(still_images=True) as detector:
        face = detector.detect(image)
    if face is None:
        raise RuntimeError("no face in the base image")
    pts = face.points[:, :2].astype(np.float64)
    moved = pts.copy()
    for upper, lower in _EYES:
        ids = list(set(upper) | set(lower))
        centre = pts[ids, 1].mean()
        moved[ids, 1] = centre + (pts[ids, 1] - centre) * 0.75
    h, w = image.shape[:2]
    cx = pts[:, 0].mean()
    moved[:, 0] = cx + (moved[:, 0] - cx) * 1.08
    border = np.array([(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), (w / 2, 0), (w / 2, h - 1),
                       (0, h / 2), (w - 1, h / 2)], np.float64)
    map_x, map_y = piecewise_affine_maps(np.concatenate([pts, border]), np.concatenate([moved, border]), w, h)
    image = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    tone = np.array([0.62, 0.72, 0.85], np.float32)   # BGR gains: darker, warmer skin
    out = 255.0 * (image.astype(np.float32) / 255.0) ** 1.15 * tone
    return np.clip(out, 0, 255).astype(np.uint8)


def grid_face(clip: str | Path | None = None) -> np.ndarray | None:
    """The first frame of a GRID clip (a real person, 360x288) cropped to the face and scaled to 640x480,
    or None when the clips are not there."""
    path = Path(clip) if clip is not None else GRID_DIR / "bbaf2n.mpg"
    if not path.is_file():
        return None
    cap = cv2.VideoCapture(str(path))
    try:
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok:
        return None
    crop = frame[60:276, 9:297]     # 288x216 (4:3) around the face of these clips
    return cv2.resize(crop, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)


def second_face() -> tuple[np.ndarray, str]:
    """(base image, description): the GRID person if available, else the astronaut variant."""
    grid = grid_face()
    if grid is not None:
        return grid, "GRID bbaf2n (real person, Cooke et al. 2006, CC BY 4.0)"
    return variant_face(), "astronaut variant (darker skin, narrower eyes, wider face)"


# ------------------------------------------------------------------------------------------------ writing
def write_video(sim: CameraSimulator, path: str | Path) -> CameraTruth:
    """Write the simulated frames to an .mp4 (mp4v) at the camera's nominal fps; returns the truth.

    The container stores frame times as index / fps, so the camera's jitter is lost in the file."""
    write_frames_atomic(Path(path), sim.camera.fps, sim._size, (frame for _, frame in sim))
    return sim.truth()


__all__ = ["AnnotatedBlink", "Blink", "Camera", "CameraFrameTruth", "CameraSimulator", "CameraTruth", "LidScript",
           "Squint", "annotate", "grid_face", "random_lid_script", "run_perception", "score_blinks", "second_face",
           "variant_face", "write_video"]


# ------------------------------------------------------------------------------------------------ scoring
@dataclass(frozen=True)
class BlinkScore:
    tp: int
    fp: int
    fn: int
    frame_tp: int
    frame_fp: int
    frame_fn: int

    @property
    def event_f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else (1.0 if not self.fn + self.fp else 0.0)

    @property
    def frame_f1(self) -> float:
        tp, fp, fn = self.frame_tp, self.frame_fp, self.frame_fn
        return 2 * tp / (2 * tp + fp + fn) if tp else (1.0 if not fn + fp else 0.0)

    def __add__(self, other: BlinkScore) -> BlinkScore:
        return BlinkScore(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[int, ...]:
        return (self.tp, self.fp, self.fn, self.frame_tp, self.frame_fp, self.frame_fn)


def score_blinks(truth: CameraTruth, detected: Sequence[tuple[int, int]], tolerance: int = 2) -> BlinkScore:
    """Blink-event and blink-frame counts of `detected` (first, last frame; inclusive) against the
    annotated blinks. A detection matches a truth blink when their frame ranges overlap once widened by
    `tolerance` frames (the convention of issue 11), one-to-one (Hungarian, nearest centres first).
    Invisible blinks and microsleeps are "don't care": a detection matching one is neither a hit nor a
    false alarm, and their frames are left out of the frame score."""
    from scipy.optimize import linear_sum_assignment

    n = len(truth.frames)
    care = [b for b in truth.blinks if b.visible and b.kind != "microsleep"]
    dont = [b for b in truth.blinks if not (b.visible and b.kind != "microsleep")]

    def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
        return a[0] <= b[1] + tolerance and b[0] <= a[1] + tolerance

    spans = [(b.start_frame, b.end_frame) for b in care]
    cost = np.full((len(spans), len(detected)), 1e6)
    for i, s in enumerate(spans):
        for j, d in enumerate(detected):
            if overlaps(s, d):
                cost[i, j] = abs((s[0] + s[1]) - (d[0] + d[1]))
    matched_d: set[int] = set()
    tp = 0
    if spans and detected:
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols, strict=True):
            if cost[r, c] < 1e6:
                tp += 1
                matched_d.add(int(c))
    fp = sum(1 for j, d in enumerate(detected) if j not in matched_d
             and not any(overlaps((b.start_frame, b.end_frame), d) for b in dont))
    ignore = np.zeros(n, bool)
    for b in dont:
        ignore[b.start_frame:b.end_frame + 1] = True
    want = truth.blink_frames() & ~ignore
    got = np.zeros(n, bool)
    for d in detected:
        got[d[0]:d[1] + 1] = True
    got &= ~ignore
    return BlinkScore(tp, fp, len(spans) - tp, int((want & got).sum()), int((~want & got).sum()),
                      int((want & ~got).sum()))


def run_perception(sim: CameraSimulator, config: object | None = None) -> tuple[list, list[tuple[int, int]],
                                                                               list[tuple[int, int]]]:
    """Run the perception pipeline over the simulated frames: (observations, blink frame ranges from the
    blink detector, closed-eye run frame ranges of blinks / slow blinks from the closed threshold)."""
    from fatigue_llm.perception.config import PerceptionConfig
    from fatigue_llm.perception.pipeline import PerceptionPipeline
    from fatigue_llm.perception.types import EventType

    observations, blinks, closures, frame_of = [], [], [], {}
    with PerceptionPipeline(config or PerceptionConfig()) as pipeline:
        for index, (t, frame) in enumerate(sim):
            obs = pipeline.process(frame, t)
            frame_of[obs.timestamp_s] = index
            observations.append(obs)
            b = pipeline.last_blink
            if b is not None and b.kind != EventType.MICROSLEEP:
                blinks.append((frame_of[b.start_s], index - 1))
            c = pipeline.last_closure
            if c is not None and c.kind != EventType.MICROSLEEP:
                closures.append((frame_of[c.start_s], index - 1))
    return observations, blinks, closures
