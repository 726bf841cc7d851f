"""Synthetic driver video with exact per-frame ground truth, rendered from a real face photograph.

The face is `skimage.data.astronaut()` (NASA portrait of Eileen Collins, public domain), cropped and scaled to
a 640x480 driver-camera framing. MediaPipe's face mesh is run ONCE on that base image to locate the eyelids,
lips and the 3-D shape of the face; every frame is then rendered from the base image:

* eyelids: the eye opening is painted with eyelid skin (colour of the lid above the eye) from the upper lid
  down, with a dark lash line at the lid edge; `closure` 0 = open, 1 = lid on the lower lid;
* yawn: the jaw (mesh points below the lips) rotates open about the jaw joint, the lips narrow, and the gap
  between the upper and lower teeth is painted as the dark mouth cavity;
* talking: syllable-rate jaw motion (`Talk`, 4-6 Hz, openings 20-60 % of a full yawn's); smiling (`Smile`):
  the mouth corners move out and up and the lips part slightly;
* nod: the whole head (mesh plus points extrapolated over the hair) rotates about a neck pivot by `pitch`
  (positive = chin down); the image follows the mesh by a piecewise-linear warp (background pinned);
* light per-pixel noise and a slow sinusoidal brightness drift.

What MediaPipe measures on these frames (our measurement, base image, video-mode tracking): EAR ~0.29 open,
~0.14 with the lids closed; outer-lip MAR ~0.35 at rest, ~0.78 at full yawn; solvePnP pitch rises ~16 deg
for a 20-deg rendered nod.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import Delaunay

from fatigue_llm.perception.landmarks import FaceMeshDetector

WIDTH, HEIGHT = 640, 480
_CROP = (slice(19, 229), slice(85, 365))  # rows, cols of astronaut() holding the face, 4:3

# Eyelid contours (MediaPipe face mesh), from one eye corner to the other; upper[i] sits above lower[i].
_EYES = (
    ((33, 246, 161, 160, 159, 158, 157, 173, 133), (33, 7, 163, 144, 145, 153, 154, 155, 133)),
    ((263, 466, 388, 387, 386, 385, 384, 398, 362), (263, 249, 390, 373, 374, 380, 381, 382, 362)),
)
_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
_FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
              152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)

# Rendering constants, tuned on the base image so that MediaPipe follows the motion (see module docstring).
P80 = 0.8                 # ground truth "eyes closed": lid covers >= 80 % of the eye (PERCLOS P80)
# Lid strokes: blinks close faster than they reopen (Schleicher et al. 2008 analyse both phases); the
# values are our choice and give a ~150 ms alert blink at P80 with these constants.
LID_CLOSE_S = 0.075       # s lid down-stroke
LID_OPEN_S = 0.10         # s lid up-stroke
JAW_MAX_DEG = 22.0        # jaw rotation at full yawn; MediaPipe stops following wider openings of this face
LIP_NARROWING = 0.2       # lips move 20 % towards the mouth centre at full yawn (rounded yawning mouth)
YAWN_RAMP_S = 0.6         # s to open / close the mouth
# Talking and smiling (our choices): speech moves the jaw once per syllable, 4-6 syllables/s in running speech;
# a smile pulls the mouth corners out and up (zygomaticus major) and parts the lips a little.
SMILE_WIDEN = 0.22        # mouth corners move out by 22 % of the half mouth width at a full smile
SMILE_LIFT = 0.18         # ... and up by 18 % of the half mouth width
SMILE_LIPS_APART = 0.08   # jaw opening (yawn units) at a full smile: lips slightly apart
SMILE_RAMP_S = 0.4        # s to reach / leave the full smile
CAVITY_BGR = np.array([30.0, 25.0, 55.0], np.float32)
LASH_BGR = np.array([35.0, 45.0, 70.0], np.float32)


# ------------------------------------------------------------------------------------------- the script
@dataclass(frozen=True)
class EyeClosure:
    """One blink / slow blink / microsleep: lids cover >= 80 % of the eye for `duration_s`."""

    start_s: float      # the lids reach 80 % closed
    duration_s: float


@dataclass(frozen=True)
class HeadNod:
    """Head dips chin-down and back (raised-cosine pitch profile)."""

    start_s: float
    duration_s: float
    peak_deg: float = 20.0  # our measurement: MediaPipe's pitch rises ~16 deg, above the 12-deg nod threshold


@dataclass(frozen=True)
class Yawn:
    """Mouth opens over YAWN_RAMP_S, stays open, closes over YAWN_RAMP_S; `duration_s` includes the ramps."""

    start_s: float
    duration_s: float
    peak: float = 1.0   # mouth opening at the top of the yawn, 0..1
    head_back_deg: float = 0.0  # the head tilts back (chin up) by this much at the top of the yawn


@dataclass(frozen=True)
class Talk:
    """Speech: the jaw opens and closes once per syllable at ~`rate_hz`; each syllable's opening is drawn
    from [`low`, `high`] (fractions of a full yawn's jaw opening), syllable lengths vary +-30 %."""

    start_s: float
    duration_s: float
    rate_hz: float = 5.0
    low: float = 0.2
    high: float = 0.6
    seed: int = 0


@dataclass(frozen=True)
class Smile:
    """A smile: corners out and up, lips slightly apart; raised-cosine ramps of SMILE_RAMP_S."""

    start_s: float
    duration_s: float
    peak: float = 1.0   # smile strength at the top, 0..1


@dataclass(frozen=True)
class DriverScript:
    """A timeline of eye closures, nods, yawns, talking and smiles to render."""

    duration_s: float = 20.0
    fps: float = 15.0
    closures: tuple[EyeClosure, ...] = ()
    nods: tuple[HeadNod, ...] = ()
    yawns: tuple[Yawn, ...] = ()
    noise_sigma: float = 2.0        # grey levels of per-pixel Gaussian noise (our choice: a clean sensor)
    drift: float = 0.08             # +-8 % brightness, like slow auto-exposure changes (our choice)
    drift_period_s: float = 12.0    # s, one sinusoid
    seed: int = 0
    talks: tuple[Talk, ...] = ()
    smiles: tuple[Smile, ...] = ()

    def __post_init__(self) -> None:
        if not (self.duration_s > 0 and self.fps > 0):
            raise ValueError(f"duration_s and fps must be > 0, got {self.duration_s}, {self.fps}")

    @property
    def frame_count(self) -> int:
        return int(round(self.duration_s * self.fps))


def lid_closure(script: DriverScript, t: float) -> tuple[float, int]:
    """(closure 0..1, index of the EyeClosure in progress or -1) at time t."""
    for i, ev in enumerate(script.closures):
        # linear strokes; the 80 %-closed interval is [start_s, start_s + duration_s]
        down0 = ev.start_s - P80 * LID_CLOSE_S
        up_end = ev.start_s + ev.duration_s + P80 * LID_OPEN_S
        full0 = down0 + LID_CLOSE_S
        full1 = up_end - LID_OPEN_S
        if down0 <= t <= up_end:
            if t < full0:
                return (t - down0) / LID_CLOSE_S, i
            if t > full1:
                return (up_end - t) / LID_OPEN_S, i
            return 1.0, i
    return 0.0, -1


def head_pitch(script: DriverScript, t: float) -> tuple[float, int]:
    """(pitch in degrees, chin down positive; index of the HeadNod in progress or -1) at time t."""
    for i, nod in enumerate(script.nods):
        if nod.start_s <= t <= nod.start_s + nod.duration_s:
            phase = (t - nod.start_s) / nod.duration_s
            return nod.peak_deg * 0.5 * (1.0 - math.cos(2.0 * math.pi * phase)), i
    return 0.0, -1


def _ramped(episodes, ramp_s: float, t: float) -> tuple[float, int]:
    """(level, index of the episode in progress or -1) at time t for episodes with start_s, duration_s and
    peak: raised-cosine ramps of ``ramp_s`` (at most half the episode) up to the peak and back."""
    for i, episode in enumerate(episodes):
        end = episode.start_s + episode.duration_s
        if episode.start_s <= t <= end:
            ramp = min(ramp_s, episode.duration_s / 2)
            level = min(1.0, (t - episode.start_s) / ramp, (end - t) / ramp)
            return episode.peak * 0.5 * (1.0 - math.cos(math.pi * level)), i
    return 0.0, -1


def mouth_opening(script: DriverScript, t: float) -> tuple[float, int]:
    """(mouth opening 0..1, index of the Yawn in progress or -1) at time t."""
    return _ramped(script.yawns, YAWN_RAMP_S, t)


@lru_cache(maxsize=64)
def _syllables(talk: Talk) -> tuple[tuple[float, float, float], ...]:
    """(start, end, opening) of each syllable of `talk`, deterministic in talk.seed."""
    rng = np.random.default_rng(talk.seed)
    out, t = [], talk.start_s
    end = talk.start_s + talk.duration_s
    while t < end:
        length = rng.uniform(0.7, 1.3) / talk.rate_hz
        out.append((t, min(t + length, end), float(rng.uniform(talk.low, talk.high))))
        t += length
    return tuple(out)


def talk_opening(script: DriverScript, t: float) -> tuple[float, int]:
    """(jaw opening 0..1 from speech, index of the Talk in progress or -1) at time t: one sin^2 pulse per
    syllable (closed between syllables)."""
    for i, talk in enumerate(script.talks):
        if talk.start_s <= t <= talk.start_s + talk.duration_s:
            for start, end, opening in _syllables(talk):
                if start <= t <= end:
                    return opening * math.sin(math.pi * (t - start) / (end - start)) ** 2, i
            return 0.0, i
    return 0.0, -1


def smile_level(script: DriverScript, t: float) -> tuple[float, int]:
    """(smile 0..1, index of the Smile in progress or -1) at time t."""
    return _ramped(script.smiles, SMILE_RAMP_S, t)


def yawn_head_tilt(script: DriverScript, t: float) -> float:
    """Head tilt back (deg, positive = chin up) of the yawn in progress at time t, following its opening."""
    opening, i = mouth_opening(script, t)
    if i < 0 or script.yawns[i].peak <= 0:
        return 0.0
    return script.yawns[i].head_back_deg * opening / script.yawns[i].peak


# ------------------------------------------------------------------------------------------ ground truth
@dataclass(frozen=True)
class FrameTruth:
    frame: int
    timestamp_s: float
    closure: float          # 0 open .. 1 closed (lid position as rendered)
    eyes_closed: bool       # closure >= P80 (lid at least 80 % down): on [start_s, start_s + duration_s]
    closure_id: int         # index into script.closures while eyes_closed, else -1
    mouth_open: float       # 0 .. 1
    yawn: bool              # mouth_open >= 0.5
    yawn_id: int            # index into script.yawns while the mouth moves, else -1
    pitch_deg: float        # rendered head pitch, chin down positive
    nod: bool
    nod_id: int             # index into script.nods during the nod, else -1
    brightness: float       # multiplicative gain of the frame
    talking: bool = False   # inside a Talk (mouth_open then includes the speech jaw motion)
    smile: float = 0.0      # 0 .. 1


TRUTH_COLUMNS = ("frame", "timestamp_s", "eyes_closed", "closure", "closure_id", "yawn", "mouth_open",
                 "yawn_id", "nod", "pitch_deg", "nod_id", "brightness", "talking", "smile")


@dataclass(frozen=True)
class GroundTruth:
    script: DriverScript
    frames: tuple[FrameTruth, ...] = field(default_factory=tuple)

    def closed_runs(self) -> list[tuple[int, int]]:
        """Inclusive (first, last) frame of every run of eyes-closed frames, in order."""
        runs: list[tuple[int, int]] = []
        start = -1
        for f in self.frames:
            if f.eyes_closed and start < 0:
                start = f.frame
            elif not f.eyes_closed and start >= 0:
                runs.append((start, f.frame - 1))
                start = -1
        if start >= 0:
            runs.append((start, self.frames[-1].frame))
        return runs

    def write_csv(self, path: str | Path) -> None:
        """Write one row per frame (TRUTH_COLUMNS) atomically; raises OSError if it cannot be written."""
        rows = [[f.frame, f"{f.timestamp_s:.6f}", int(f.eyes_closed), f"{f.closure:.4f}", f.closure_id,
                 int(f.yawn), f"{f.mouth_open:.4f}", f.yawn_id, int(f.nod), f"{f.pitch_deg:.3f}", f.nod_id,
                 f"{f.brightness:.4f}", int(f.talking), f"{f.smile:.4f}"] for f in self.frames]
        _atomic_write_rows(Path(path), TRUTH_COLUMNS, rows)


def frame_truth(script: DriverScript, frame: int) -> FrameTruth:
    t = frame / script.fps
    closure, closure_id = lid_closure(script, t)
    opening, yawn_id = mouth_opening(script, t)
    pitch, nod_id = head_pitch(script, t)
    closed = closure >= P80 - 1e-9
    gain = 1.0 + script.drift * math.sin(2.0 * math.pi * t / script.drift_period_s)
    yawn = opening >= 0.5           # only a Yawn is a yawn; talking and smiling open the jaw too
    talk, talk_id = talk_opening(script, t) if script.talks else (0.0, -1)
    smile, _ = smile_level(script, t) if script.smiles else (0.0, -1)
    if script.yawns:
        pitch -= yawn_head_tilt(script, t)
    jaw = max(opening, talk, SMILE_LIPS_APART * smile)
    return FrameTruth(frame, t, closure, closed, closure_id if closed else -1, jaw, yawn,
                      yawn_id, pitch, nod_id >= 0, nod_id, gain, talk_id >= 0, smile)


def _atomic_write_rows(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ---------------------------------------------------------------------------------------------- renderer
def base_face_image() -> np.ndarray:
    """The astronaut portrait cropped to the face and scaled to 640x480 BGR."""
    from skimage import data  # imported here: only the generator needs scikit-image

    rgb = data.astronaut()[_CROP]
    return cv2.resize(np.ascontiguousarray(rgb[:, :, ::-1]), (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)


def _rotate_x(points: np.ndarray, pivot: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotate (N, 3) points about the x axis through `pivot`; positive angle moves points in front of the
    pivot (smaller z, towards the camera) downwards, i.e. chin down."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    rel = points - pivot
    out = points.copy()
    out[:, 1] = rel[:, 1] * c - rel[:, 2] * s + pivot[1]
    out[:, 2] = rel[:, 1] * s + rel[:, 2] * c + pivot[2]
    return out


def _scalp_points(mesh: np.ndarray) -> np.ndarray:
    """Points over the hair (the upper face oval pushed outwards, slightly further back), so the hair moves
    with the head when it nods."""
    centre = mesh[:, :2].mean(axis=0)
    oval = mesh[list(_FACE_OVAL)]
    upper = oval[oval[:, 1] < mesh[1, 1]]   # above the nose tip
    rings = [np.column_stack([centre + (upper[:, :2] - centre) * k, upper[:, 2] + dz])
             for k, dz in ((1.22, 10.0), (1.5, 20.0))]
    return np.concatenate(rings)


def _anchor_points(mesh: np.ndarray, width: int, height: int) -> np.ndarray:
    """Points that never move: a ring well outside the head and the image border."""
    centre = mesh[:, :2].mean(axis=0)
    half = (mesh[:, :2].max(axis=0) - mesh[:, :2].min(axis=0)) / 2
    angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    ring = centre + np.column_stack([np.cos(angles), np.sin(angles)]) * half * 2.3
    w, h = width - 1, height - 1
    border = [(0, 0), (w, 0), (0, h), (w, h), (w / 2, 0), (w / 2, h), (0, h / 2), (w, h / 2)]
    return np.concatenate([ring, np.array(border, dtype=np.float64)])


@dataclass(frozen=True)
class _Eye:
    upper: np.ndarray       # (9, 2) px
    lower: np.ndarray       # (9, 2) px
    colour: np.ndarray      # BGR float32, lid skin
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 region painted


class FaceRenderer:
    """Renders the base face with given eyelid closure, mouth opening and head pitch.

    Construction runs MediaPipe once on the base image; raises RuntimeError if it finds no face there.
    """

    def __init__(self, base: np.ndarray | None = None) -> None:
        self.base = base_face_image() if base is None else base
        with FaceMeshDetector(still_images=True) as detector:
            face = detector.detect(self.base)
        if face is None:
            raise RuntimeError("MediaPipe found no face in the base image of the driver-video generator")
        self.mesh = face.points.astype(np.float64)
        self._eyes = tuple(self._eye(up, lo) for up, lo in _EYES)
        self._setup_head()
        self._warp_cache: dict[tuple[float, float, float], tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}

    # -- set-up ---------------------------------------------------------------------------------------
    def _eye(self, upper_idx: Sequence[int], lower_idx: Sequence[int]) -> _Eye:
        upper = self.mesh[list(upper_idx), :2]
        lower = self.mesh[list(lower_idx), :2]
        height = float(np.mean(lower[:, 1] - upper[:, 1]))
        xs = np.sort(upper[[2, -3], 0]).astype(int)
        top = int(upper[:, 1].min())
        # lid skin: the band between the upper lid crease and the brow
        patch = self.base[int(top - 1.0 * height):int(top - 0.4 * height), xs[0]:xs[1]]
        colour = np.median(patch.reshape(-1, 3), axis=0).astype(np.float32)
        pad = 4
        x0, y0 = np.floor(np.minimum(upper.min(0), lower.min(0)) - pad).astype(int)
        x1, y1 = np.ceil(np.maximum(upper.max(0), lower.max(0)) + pad).astype(int)
        return _Eye(upper, lower, colour, (int(x0), int(y0 - pad), int(x1), int(y1)))

    def _setup_head(self) -> None:
        m = self.mesh
        face_h = float(m[152, 1] - m[10, 1])
        # teeth edges: the inner-lip midline, once fixed to the skull (upper teeth), once to the jaw
        midline = (m[list(_INNER_UPPER[1:-1])] + m[list(_INNER_LOWER[1:-1])]) / 2
        self._points = np.concatenate([m, _scalp_points(m), midline, midline])
        n = len(self._points)
        self._upper_teeth = np.arange(n - 2 * len(midline), n - len(midline))
        self._lower_teeth = self._upper_teeth + len(midline)
        self._mouth_centre = (m[61, :2] + m[291, :2]) / 2
        self._mouth_half_width = abs(m[291, 0] - m[61, 0]) / 2
        self._jaw_weight = self._jaw_weights(midline, face_h)
        self._lips = self._mask(_INNER_UPPER + _INNER_LOWER + _OUTER_UPPER + _OUTER_LOWER, teeth=True)
        self._lower_lip = self._mask(_INNER_LOWER + _OUTER_LOWER, teeth=False)
        self._lower_lip[self._lower_teeth] = True
        # pivots: the jaw joint (below the eyes, behind the face) and the neck (behind the nose tip)
        self._jaw_pivot = np.array([0.0, m[33, 1] + 0.1 * face_h, m[:, 2].mean() + 0.5 * face_h])
        self._neck_pivot = np.array([0.0, m[1, 1], m[:, 2].mean() + 0.5 * face_h])
        self._anchors = _anchor_points(m, self.base.shape[1], self.base.shape[0])
        self._smile_shift = self._smile_field(face_h)

    def _smile_field(self, face_h: float) -> np.ndarray:
        """(N, 2) px shift of every point at a full smile: the mouth corners out by SMILE_WIDEN and up by
        SMILE_LIFT of the half mouth width, the lips between them following (u = 0 at the centre, +-1 at
        the corners), the cheeks beside the mouth following with a smooth fall-off."""
        pts = self._points[:, :2]
        half = self._mouth_half_width
        u = (pts[:, 0] - self._mouth_centre[0]) / half
        reach = np.where(np.abs(u) <= 1.0, 1.0, np.exp(-((np.abs(u) - 1.0) / 0.5) ** 2))
        falloff = np.exp(-((pts[:, 1] - self._mouth_centre[1]) / (0.12 * face_h)) ** 2) * reach
        shift = np.column_stack([SMILE_WIDEN * half * np.clip(u, -1, 1), -SMILE_LIFT * half * np.clip(u, -1, 1) ** 2])
        shift *= falloff[:, None]
        shift[len(self.mesh):self._upper_teeth[0]] = 0.0  # scalp
        return shift

    def _mask(self, mesh_indices: Sequence[int], teeth: bool) -> np.ndarray:
        mask = np.zeros(len(self._points), bool)
        mask[list(mesh_indices)] = True
        if teeth:
            mask[self._upper_teeth] = mask[self._lower_teeth] = True
        return mask

    def _jaw_weights(self, midline: np.ndarray, face_h: float) -> np.ndarray:
        """How much each point follows the jaw (0..1): everything below the lip midline, with the cheeks
        beside the mouth following gradually so the skin stretches instead of tearing."""
        pts = self._points
        order = np.argsort(midline[:, 0])
        mouth_line = np.interp(pts[:, 0], midline[order, 0], midline[order, 1])
        jaw = pts[:, 1] > mouth_line + 0.5
        jaw[list(_INNER_UPPER)] = False
        jaw[list(_INNER_LOWER)] = True
        jaw[[78, 308]] = False                       # inner mouth corners stay
        jaw[len(self.mesh):self._upper_teeth[0]] = False  # scalp
        jaw[self._upper_teeth] = False
        jaw[self._lower_teeth] = True
        beside = np.abs(pts[:, 0] - self._mouth_centre[0]) > self._mouth_half_width
        ramp = np.clip((pts[:, 1] - mouth_line) / (0.12 * face_h), 0, 1)
        return np.where(beside, ramp, 1.0) * jaw

    # -- geometry ------------------------------------------------------------------------------------
    def _moved_points(self, mouth: float, pitch_deg: float, smile: float = 0.0) -> np.ndarray:
        pts = self._points
        out = pts.copy()
        if smile > 0:
            out[:, :2] += self._smile_shift * smile
        if mouth > 0:
            jaw = _rotate_x(pts, self._jaw_pivot, math.radians(JAW_MAX_DEG * mouth))
            out += (jaw - pts) * self._jaw_weight[:, None]
            dx = -(pts[:, 0] - self._mouth_centre[0]) * LIP_NARROWING * mouth
            out[self._lips, 0] += dx[self._lips]
            # the lower lip stays closer to the corners than at the centre: a rounded opening
            u = np.clip(np.abs(pts[:, 0] - self._mouth_centre[0]) / self._mouth_half_width, 0, 1.2)
            low = self._lower_lip
            out[low, 1] -= (out[low, 1] - pts[low, 1]) * u[low] ** 2 * 0.6
        if pitch_deg != 0:
            out = _rotate_x(out, self._neck_pivot, math.radians(pitch_deg))
        return out

    def _warp(self, mouth: float, pitch_deg: float, smile: float = 0.0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Backward maps (x, y) for cv2.remap and the mouth-cavity polygon (or None) of one pose."""
        key = (round(mouth, 3), round(pitch_deg, 2), round(smile, 3))
        cached = self._warp_cache.get(key)
        if cached is not None:
            return cached
        moved = self._moved_points(mouth, pitch_deg, smile)
        keep = np.ones(len(moved), bool)
        if mouth <= 0:
            keep[self._lower_teeth] = False  # coincide with the upper teeth when the mouth is closed
        src = np.concatenate([self._points[keep, :2], self._anchors])
        dst = np.concatenate([moved[keep, :2], self._anchors])
        map_x, map_y = piecewise_affine_maps(src, dst, self.base.shape[1], self.base.shape[0])
        cavity = None
        if mouth > 0:
            teeth_gap = np.concatenate([moved[self._upper_teeth, :2], moved[self._lower_teeth, :2][::-1]])
            cavity = np.concatenate([moved[[78], :2], teeth_gap[: len(self._upper_teeth)],
                                     moved[[308], :2], teeth_gap[len(self._upper_teeth):]])
        if len(self._warp_cache) > 256:
            self._warp_cache.clear()
        self._warp_cache[key] = (map_x, map_y, cavity)
        return map_x, map_y, cavity

    # -- painting ------------------------------------------------------------------------------------
    def _paint_eyelid(self, image: np.ndarray, eye: _Eye, closure: float) -> None:
        x0, y0, x1, y1 = eye.box
        roi = image[y0:y1, x0:x1].astype(np.float32)
        offset = np.array([x0, y0], np.float64)
        upper, lower = eye.upper - offset, eye.lower - offset
        edge = upper + closure * (lower - upper)
        height = float(np.mean(lower[:, 1] - upper[:, 1]))
        raised = upper.copy()
        raised[1:-1, 1] -= 0.15 * height  # cover the upper lash line too
        mask = np.zeros(roi.shape[:2], np.float32)
        cv2.fillPoly(mask, [_fixed(np.concatenate([raised, edge[::-1]]))], 1.0, cv2.LINE_AA, shift=4)
        mask = cv2.GaussianBlur(mask, (3, 3), 0)[..., None]
        rows = np.arange(roi.shape[0], dtype=np.float32)[:, None, None]
        top, bottom = float(upper[:, 1].min()), float(edge[:, 1].mean())
        shade = 1.0 - 0.12 * np.clip((rows - top) / max(bottom - top, 1.0), 0, 1)  # lids darken to the edge
        roi = roi * (1 - mask) + (eye.colour * shade) * mask
        if closure > 0.3:
            lash = np.zeros(roi.shape[:2], np.float32)
            cv2.polylines(lash, [_fixed(edge)], False, 1.0, thickness=2, lineType=cv2.LINE_AA, shift=4)
            alpha = cv2.GaussianBlur(lash, (3, 3), 0)[..., None] * min(1.0, (closure - 0.3) / 0.5) * 0.85
            roi = roi * (1 - alpha) + LASH_BGR * alpha
        image[y0:y1, x0:x1] = np.clip(roi, 0, 255).astype(np.uint8)

    def render(self, closure: float = 0.0, mouth: float = 0.0, pitch_deg: float = 0.0,
               smile: float = 0.0) -> np.ndarray:
        """A noise-free 640x480 BGR frame with the lids `closure` (0..1) closed, the mouth `mouth` (0..1)
        open, the head pitched `pitch_deg` degrees chin-down and a smile of `smile` (0..1; it parts the
        lips by SMILE_LIPS_APART unless the mouth is open wider)."""
        if smile > 0:
            mouth = max(mouth, SMILE_LIPS_APART * min(smile, 1.0))
        image = self.base.copy()
        if closure > 0:
            for eye in self._eyes:
                self._paint_eyelid(image, eye, min(closure, 1.0))
        if mouth <= 0 and pitch_deg == 0 and smile <= 0:
            return image
        map_x, map_y, cavity = self._warp(min(mouth, 1.0), pitch_deg, min(max(smile, 0.0), 1.0))
        image = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if cavity is not None:
            mask = np.zeros(image.shape[:2], np.float32)
            cv2.fillPoly(mask, [_fixed(cavity)], 1.0, cv2.LINE_AA, shift=4)
            mask = cv2.GaussianBlur(mask, (3, 3), 0)[..., None] * min(1.0, mouth / 0.15)
            image = np.clip(image * (1 - mask) + CAVITY_BGR * mask, 0, 255).astype(np.uint8)
        return image


def piecewise_affine_maps(src: np.ndarray, dst: np.ndarray, width: int, height: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps that move the image points `src` (N, 2) to `dst` (N, 2), affinely inside each triangle
    of the Delaunay triangulation of `dst`; pixels outside every triangle stay where they are.

    Plain numpy on purpose: scipy's LinearNDInterpolator computes its barycentric transforms with LAPACK,
    which on a loaded machine with a threaded OpenBLAS took seconds per call instead of milliseconds.
    """
    triangles = Delaunay(dst).simplices                                  # (T, 3) vertex indices
    ids = np.full((height, width), -1, np.int32)
    for k, tri in enumerate(triangles):
        cv2.fillConvexPoly(ids, _fixed(dst[tri]), int(k), lineType=cv2.LINE_8, shift=4)
    d, s = dst[triangles], src[triangles]                                # (T, 3, 2)
    # affine A (T, 2, 3) with s_i = A @ [d_i, 1]: solve in barycentric form, 2x2 inverses written out
    e1, e2 = d[:, 1] - d[:, 0], d[:, 2] - d[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    det = np.where(np.abs(det) > 1e-12, det, np.inf)                     # degenerate: maps to vertex 0
    inv = np.stack([np.stack([e2[:, 1], -e2[:, 0]], 1), np.stack([-e1[:, 1], e1[:, 0]], 1)], 1)
    inv /= det[:, None, None]                                             # rows: inverse of [e1 e2]
    f1, f2 = s[:, 1] - s[:, 0], s[:, 2] - s[:, 0]
    linear = np.einsum("tik,tkj->tij", np.stack([f1, f2], 2), inv)        # (T, 2, 2), no BLAS
    offset = s[:, 0] - np.einsum("tij,tj->ti", linear, d[:, 0])
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    inside = ids >= 0
    k = ids[inside]
    px, py = grid_x[inside], grid_y[inside]
    map_x, map_y = grid_x.copy(), grid_y.copy()
    map_x[inside] = linear[k, 0, 0] * px + linear[k, 0, 1] * py + offset[k, 0]
    map_y[inside] = linear[k, 1, 0] * px + linear[k, 1, 1] * py + offset[k, 1]
    return map_x, map_y


def _fixed(points: np.ndarray) -> np.ndarray:
    """Polygon vertices in cv2's 4-bit fixed point (shift=4) for sub-pixel drawing."""
    return np.round(points * 16).astype(np.int32)


def _add_noise(image: np.ndarray, gain: float, sigma: float) -> np.ndarray:
    """Brightness gain plus Gaussian pixel noise from OpenCV's RNG (seed it with cv2.setRNGSeed; ~2x faster
    than numpy's generator at 640x480)."""
    out = image.astype(np.float32)
    out *= gain
    if sigma > 0:
        noise = np.empty_like(out)
        cv2.randn(noise, 0.0, sigma)
        out += noise
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


# ----------------------------------------------------------------------------------------------- writing
def _fourcc(path: Path) -> int:
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        return cv2.VideoWriter_fourcc(*"mp4v")
    if suffix == ".avi":
        return cv2.VideoWriter_fourcc(*"MJPG")
    raise ValueError(f"{path}: unsupported video extension '{suffix}' (use .mp4 or .avi)")


def write_frames_atomic(path: str | Path, fps: float, size: tuple[int, int], frames: Iterable[np.ndarray]) -> None:
    """Write ``frames`` (w x h = ``size``) to ``path`` (.mp4 mp4v or .avi MJPG) through a temporary file, so a
    failed render never leaves a half video at ``path``. ValueError for another extension, OSError when the
    video cannot be written."""
    path = Path(path)
    fourcc = _fourcc(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    writer = cv2.VideoWriter(str(tmp), fourcc, fps, size)
    if not writer.isOpened():
        raise OSError(f"{path}: cannot open a video writer for this file")
    try:
        for frame in frames:
            writer.write(frame)
        writer.release()
        os.replace(tmp, path)
    finally:
        writer.release()
        if tmp.exists():
            tmp.unlink()


def render_video(script: DriverScript, path: str | Path, truth_csv: str | Path | None = None,
                 renderer: FaceRenderer | None = None) -> GroundTruth:
    """Render `script` to a video file (.mp4 mp4v or .avi MJPG) and return its per-frame ground truth.

    Raises ValueError for an unsupported extension and OSError when the video cannot be written.
    """
    _fourcc(Path(path))  # an unsupported extension fails before anything renders
    renderer = renderer or FaceRenderer()
    cv2.setRNGSeed(script.seed)
    h, w = renderer.base.shape[:2]
    frames: list[FrameTruth] = []

    def rendered() -> Iterator[np.ndarray]:
        for i in range(script.frame_count):
            truth = frame_truth(script, i)
            frames.append(truth)
            image = renderer.render(truth.closure, truth.mouth_open, truth.pitch_deg, truth.smile)
            yield _add_noise(image, truth.brightness, script.noise_sigma)

    write_frames_atomic(path, script.fps, (w, h), rendered())
    ground_truth = GroundTruth(script, tuple(frames))
    if truth_csv is not None:
        ground_truth.write_csv(truth_csv)
    return ground_truth


def sample_script() -> DriverScript:
    """~20 s at 15 fps: alert blinks, then ever slower blinks and a yawn, then two microsleeps and a nod.

    Alert blinks last ~150 ms; the later ones grow to 350-700 ms (beyond slow_blink_duration, 0.3 s), as
    blink duration grows with sleepiness (Schleicher et al. 2008); the microsleeps are lid closures of
    1.7-1.8 s in the last third.
    """
    alert = tuple(EyeClosure(t, 0.15) for t in (1.0, 2.6, 4.2, 5.6, 7.0))
    slow = (EyeClosure(8.2, 0.35), EyeClosure(9.4, 0.5), EyeClosure(10.6, 0.7))
    microsleeps = (EyeClosure(14.3, 1.8), EyeClosure(18.0, 1.7))
    return DriverScript(
        duration_s=20.0,
        fps=15.0,
        closures=alert + slow + microsleeps,
        nods=(HeadNod(16.6, 1.0, 24.0),),
        yawns=(Yawn(11.4, 2.6),),
    )


def make_sample_video(path: str | Path, truth_csv: str | Path | None = None) -> GroundTruth:
    """Write the demo video (`sample_script()`) to `path` and return its ground truth."""
    return render_video(sample_script(), path, truth_csv)


SAMPLE_VIDEO = Path("build/sample/driver_sample.mp4")


def ensure_sample_video(path: Path = SAMPLE_VIDEO) -> Path:
    """The demo's sample drive, generated once by our own code (never committed)."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating the sample driver video {path} ...", flush=True)
        make_sample_video(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """`fatigue-llm sample-video OUT.mp4 [--truth T.csv]`: write the demo driver video."""
    parser = argparse.ArgumentParser(prog="fatigue-llm sample-video",
                                     description="Render the synthetic ~20 s driver video with ground truth.")
    parser.add_argument("output", help="video file to write (.mp4 or .avi)")
    parser.add_argument("--truth", help="CSV file for the per-frame ground truth")
    args = parser.parse_args(argv)
    try:
        truth = make_sample_video(args.output, args.truth)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {len(truth.frames)} frames, {len(truth.closed_runs())} eye closures")
    return 0


__all__ = ["DriverScript", "EyeClosure", "FaceRenderer", "FrameTruth", "GroundTruth", "HeadNod", "Smile", "Talk",
           "Yawn", "make_sample_video", "render_video", "sample_script", "main"]
