"""Face geometry from MediaPipe face-mesh landmarks: eye and mouth aspect ratios, head pose.

All functions take landmarks as a float array of shape (N, 2) or (N, 3) in pixel units, N >= 468
(the MediaPipe face mesh; 478 with the refined iris points). Only x and y are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

# Six points per eye in the order p1..p6 of Soukupová & Čech (2016), "Real-Time Eye Blink Detection using
# Facial Landmarks": p1/p4 the eye corners, p2/p3 on the upper lid, p6/p5 below them on the lower lid.
# Indices are MediaPipe face-mesh vertices (outer corner first).
RIGHT_EYE = (33, 160, 158, 133, 153, 144)   # the subject's right eye (image left in a frontal view)
LEFT_EYE = (263, 387, 385, 362, 380, 373)   # the subject's left eye (image right)

# Outer lip contour: the mouth corners and three vertical pairs (upper lip top, lower lip bottom), left to
# right in the image; the mesh equivalent of the outer-lip MAR used with 68-point landmarks (p51-p59, p52-p58,
# p53-p57 over p49-p55). The MAR uses the outer contour because MediaPipe tracks it more faithfully than the
# inner lips on a wide-open mouth (our measurement on the generated video: a three-pair inner-lip MAR saturates
# at ~0.55). Yawns are decided on the midline inner-lip opening (`inner_lip_opening`, 0.65-0.74 at full yawn
# there) with the MAR as a second gate: lip thickness dominates the MAR of a closed or talking mouth.
MOUTH_CORNERS = (61, 291)
MOUTH_PAIRS = ((37, 84), (0, 17), (267, 314))
# Inner lips: the midpoints of the upper and lower inner lip and the inner mouth corners. Their ratio measures
# the opening between the lips rather than lip thickness; the yawn detector (perception/yawns.py) uses it.
INNER_LIP_MIDPOINTS = (13, 14)
INNER_MOUTH_CORNERS = (78, 308)

# Landmarks used by the head-pose fit and their 3-D positions in MediaPipe's canonical face model
# (mediapipe/modules/face_geometry/data/canonical_face_model.obj, Apache-2.0; units ~cm), converted from the
# model's y-up/z-towards-viewer axes to OpenCV camera axes (x right, y down, z away from the camera), so a
# frontal face has rotation ~identity.
POSE_LANDMARKS = (1, 152, 33, 263, 133, 362, 61, 291)
_CANONICAL = np.array([
    (0.000000, -1.126865, 7.475604),    # 1 nose tip
    (0.000000, -9.403378, 4.264492),    # 152 chin
    (-4.445859, 2.663991, 3.173422),    # 33 right eye, outer corner
    (4.445859, 2.663991, 3.173422),     # 263 left eye, outer corner
    (-1.856432, 2.585245, 3.757904),    # 133 right eye, inner corner
    (1.856432, 2.585245, 3.757904),     # 362 left eye, inner corner
    (-2.456206, -4.342621, 4.283884),   # 61 mouth, right corner
    (2.456206, -4.342621, 4.283884),    # 291 mouth, left corner
])
FACE_MODEL_3D = _CANONICAL * np.array([1.0, -1.0, -1.0])

_RIGHT = np.array(RIGHT_EYE)
_LEFT = np.array(LEFT_EYE)
_BOTH_EYES = np.array([RIGHT_EYE, LEFT_EYE])
_PAIRS = np.array(MOUTH_PAIRS)
_POSE = np.array(POSE_LANDMARKS)


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.hypot(a[..., 0] - b[..., 0], a[..., 1] - b[..., 1])


def eye_aspect_ratio(points: np.ndarray) -> float:
    """EAR of one eye from its six points p1..p6 (shape (6, >=2)), Soukupová & Čech (2016) eq. 1.

    EAR = (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|); about 0.3 for an open eye, falling towards 0 as the
    lids close. Returns NaN for a degenerate eye (corners coincide).
    """
    p = np.asarray(points, dtype=np.float64)
    width = float(_dist(p[0], p[3]))
    if width <= 1e-9:
        return math.nan
    return float((_dist(p[1], p[5]) + _dist(p[2], p[4])) / (2.0 * width))


def eye_aspect_ratios(landmarks: np.ndarray) -> tuple[float, float]:
    """(right EAR, left EAR) of the subject from a face mesh (N >= 468 landmarks), both eyes at once."""
    p = landmarks[_BOTH_EYES, :2].astype(np.float64)          # (2 eyes, 6 points, xy)
    width = _dist(p[:, 0], p[:, 3])
    vertical = _dist(p[:, 1], p[:, 5]) + _dist(p[:, 2], p[:, 4])
    with np.errstate(divide="ignore", invalid="ignore"):
        ear = np.where(width > 1e-9, vertical / (2.0 * width), np.nan)
    return float(ear[0]), float(ear[1])


def mouth_aspect_ratio(landmarks: np.ndarray) -> float:
    """MAR: mean outer-lip height at three points divided by the mouth width (corner to corner).

    About 0.3-0.4 with the lips together (lip thickness), 0.6 and above for a wide-open, yawning mouth (our
    measurement on the generated video: 0.35 at rest, 0.75-0.8 at full yawn). Returns NaN when the mouth
    corners coincide.
    """
    width = float(_dist(landmarks[MOUTH_CORNERS[0]], landmarks[MOUTH_CORNERS[1]]))
    if width <= 1e-9:
        return math.nan
    opening = _dist(landmarks[_PAIRS[:, 0]], landmarks[_PAIRS[:, 1]])
    return float(opening.mean() / width)


def inner_lip_opening(landmarks: np.ndarray) -> float:
    """Inner-lip opening: the gap between the inner lips at the midline (landmarks 13/14) divided by the inner
    mouth width (78/308).

    About 0 with the lips together (0.17 on the generated face, whose base photo smiles with parted lips),
    0-0.57 while talking (our measurement on the 10 real GRID clips at 25 fps: median 0.14, 90th percentile
    0.33), 0.6-0.75 at the top of a yawn on the generated video. Smiling widens the mouth and so lowers it.
    Returns NaN when the inner corners coincide.
    """
    width = float(_dist(landmarks[INNER_MOUTH_CORNERS[0]], landmarks[INNER_MOUTH_CORNERS[1]]))
    if width <= 1e-9:
        return math.nan
    return float(_dist(landmarks[INNER_LIP_MIDPOINTS[0]], landmarks[INNER_LIP_MIDPOINTS[1]])) / width


def wrap_angle(angle: float) -> float:
    """The same angle in [-pi, pi)."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def euler_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in radians of a camera-frame rotation R = Rx(pitch) @ Ry(yaw) @ Rz(roll).

    Axes are OpenCV camera axes (x right, y down, z forward), so for a face model expressed in those axes,
    positive pitch turns the chin down (towards the chest), positive yaw turns the face towards image
    left and positive roll tilts it clockwise in the image. Angles are wrapped to [-pi, pi); yaw to
    [-pi/2, pi/2] by construction.
    """
    r = np.asarray(rotation, dtype=np.float64)
    yaw = math.asin(max(-1.0, min(1.0, r[0, 2])))
    if abs(r[0, 2]) < 1.0 - 1e-9:
        pitch = math.atan2(-r[1, 2], r[2, 2])
        roll = math.atan2(-r[0, 1], r[0, 0])
    else:  # gimbal lock: yaw = +-90 deg; put all the remaining rotation into pitch
        pitch = math.atan2(r[2, 1], r[1, 1])
        roll = 0.0
    return wrap_angle(pitch), yaw, wrap_angle(roll)


def unwrap_pose(pitch: float, yaw: float, roll: float) -> tuple[float, float, float]:
    """Resolve the Euler-angle ambiguity (pitch + pi, pi - yaw, roll + pi) towards a face seen from the front.

    Both triples describe the same rotation; a driver facing the camera has |pitch| < pi/2, so the triple
    with the smaller |pitch| is the physical one. Angles are returned wrapped to [-pi, pi).
    """
    if abs(pitch) <= math.pi / 2:
        return pitch, yaw, roll
    return wrap_angle(pitch + math.pi), wrap_angle(math.pi - yaw), wrap_angle(roll + math.pi)


@lru_cache(maxsize=8)
def camera_matrix(width: int, height: int) -> np.ndarray:
    """Pinhole intrinsics for an uncalibrated camera: focal length = image width (~53 deg horizontal field
    of view, typical of dashboard and laptop cameras), principal point at the image centre. Read-only."""
    f = float(width)
    matrix = np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])
    matrix.flags.writeable = False
    return matrix


@dataclass(frozen=True)
class HeadPose:
    pitch: float             # rad, positive = chin down
    yaw: float               # rad, positive = face turned towards image left
    roll: float              # rad, positive = clockwise in the image
    reprojection_rms: float  # px, RMS distance between the fitted face model and the landmarks


def head_pose(landmarks: np.ndarray, width: int, height: int) -> HeadPose | None:
    """Head pose from the face mesh: cv2.solvePnP (SQPnP, a globally optimal solver, so no initial guess
    and no state) of POSE_LANDMARKS against the canonical face model, in a `width` x `height` image.

    Returns None when the fit fails or puts the face behind the camera. Absolute angles carry the bias of
    an uncalibrated camera and of the driver's face shape (our measurement on the generated video: pitch
    ~13 deg for the frontal photo); detectors use changes relative to a per-driver baseline.
    """
    image_points = np.ascontiguousarray(landmarks[_POSE, :2], dtype=np.float64)
    camera = camera_matrix(width, height)
    ok, rvec, tvec = cv2.solvePnP(FACE_MODEL_3D, image_points, camera, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok or tvec[2, 0] <= 0:
        return None
    projected, _ = cv2.projectPoints(FACE_MODEL_3D, rvec, tvec, camera, None)
    rms = float(np.sqrt(np.mean(np.sum((projected[:, 0, :] - image_points) ** 2, axis=1))))
    rotation, _ = cv2.Rodrigues(rvec)
    pitch, yaw, roll = unwrap_pose(*euler_from_rotation(rotation))
    return HeadPose(pitch, yaw, roll, rms)
