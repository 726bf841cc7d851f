"""Eye/mouth aspect ratios and head pose on hand-built landmark sets (no MediaPipe)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from fatigue_llm.perception import geometry as g

W, H = 640, 480


def _eye(x0: float, y0: float, width: float, half_height: float) -> np.ndarray:
    """p1..p6 of an eye: corners at y0, lids at 1/3 and 2/3 of the width."""
    return np.array([
        (x0, y0), (x0 + width / 3, y0 - half_height), (x0 + 2 * width / 3, y0 - half_height),
        (x0 + width, y0), (x0 + 2 * width / 3, y0 + half_height), (x0 + width / 3, y0 + half_height),
    ])


def _mesh() -> np.ndarray:
    return np.zeros((478, 3), np.float32)


def test_ear_follows_soukupova_formula() -> None:
    # (|p2-p6| + |p3-p5|) / (2 |p1-p4|) = (10 + 10) / 60
    assert g.eye_aspect_ratio(_eye(0, 0, 30, 5)) == pytest.approx(1 / 3)
    assert g.eye_aspect_ratio(_eye(100, 50, 30, 0)) == pytest.approx(0.0)
    assert math.isnan(g.eye_aspect_ratio(np.zeros((6, 2))))


def test_eye_aspect_ratios_reads_each_eye_from_the_mesh_and_is_scale_free() -> None:
    mesh = _mesh()
    mesh[list(g.RIGHT_EYE), :2] = _eye(200, 200, 40, 6)     # EAR 0.3
    mesh[list(g.LEFT_EYE), :2] = _eye(400, 200, 40, 2)      # EAR 0.1
    right, left = g.eye_aspect_ratios(mesh)
    assert (right, left) == (pytest.approx(0.3), pytest.approx(0.1))
    assert g.eye_aspect_ratios(mesh * 3) == (pytest.approx(0.3), pytest.approx(0.1))
    mesh[list(g.LEFT_EYE)] = 0
    assert math.isnan(g.eye_aspect_ratios(mesh)[1])


def test_mouth_aspect_ratio_is_mean_opening_over_width() -> None:
    mesh = _mesh()
    left, right = g.MOUTH_CORNERS
    mesh[left, :2], mesh[right, :2] = (300, 300), (360, 300)       # width 60
    for (upper, lower), opening in zip(g.MOUTH_PAIRS, (30, 48, 30), strict=True):
        mesh[upper, :2] = (330, 300 - opening / 2)
        mesh[lower, :2] = (330, 300 + opening / 2)
    assert g.mouth_aspect_ratio(mesh) == pytest.approx(36 / 60)
    mesh[right] = mesh[left]
    assert math.isnan(g.mouth_aspect_ratio(mesh))


def _rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = (math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw),
                              math.cos(roll), math.sin(roll))
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def _projected_face(pitch: float, yaw: float = 0.0, roll: float = 0.0, distance: float = 60.0) -> np.ndarray:
    rvec, _ = cv2.Rodrigues(_rotation(pitch, yaw, roll))
    image, _ = cv2.projectPoints(g.FACE_MODEL_3D, rvec, np.array([0.0, 0.0, distance]),
                                 g.camera_matrix(W, H), None)
    mesh = _mesh()
    mesh[list(g.POSE_LANDMARKS), :2] = image[:, 0, :]
    return mesh


@pytest.mark.parametrize("angles_deg", [(0, 0, 0), (20, 0, 0), (-15, 10, 5), (10, -25, -8)])
def test_head_pose_recovers_known_rotation(angles_deg: tuple[float, float, float]) -> None:
    pitch, yaw, roll = map(math.radians, angles_deg)
    pose = g.head_pose(_projected_face(pitch, yaw, roll), W, H)
    assert pose is not None
    assert math.degrees(pose.pitch) == pytest.approx(angles_deg[0], abs=0.5)
    assert math.degrees(pose.yaw) == pytest.approx(angles_deg[1], abs=0.5)
    assert math.degrees(pose.roll) == pytest.approx(angles_deg[2], abs=0.5)
    assert pose.reprojection_rms < 0.05


def test_positive_pitch_is_chin_down() -> None:
    """Chin down moves the nose tip down in the image relative to the eye corners; pitch must be > 0."""
    nose, _, right_eye, left_eye = g.POSE_LANDMARKS[:4]

    def nose_below_eyes(mesh: np.ndarray) -> float:
        return float(mesh[nose, 1] - (mesh[right_eye, 1] + mesh[left_eye, 1]) / 2)

    level, down = _projected_face(0.0), _projected_face(math.radians(15))
    assert nose_below_eyes(down) > nose_below_eyes(level)
    assert g.head_pose(down, W, H).pitch > math.radians(10)


def test_euler_round_trip_and_unwrap() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        angles = rng.uniform([-1.4, -1.4, -3.0], [1.4, 1.4, 3.0])
        recovered = g.euler_from_rotation(_rotation(*angles))
        assert np.allclose(recovered, angles, atol=1e-9)
        # the other Euler triple of the same rotation is mapped back to the frontal one
        other = (angles[0] + math.pi, math.pi - angles[1], angles[2] + math.pi)
        assert np.allclose(_rotation(*other), _rotation(*angles), atol=1e-9)
        assert np.allclose(g.unwrap_pose(*map(g.wrap_angle, other)), angles, atol=1e-9)


def test_wrap_angle() -> None:
    assert g.wrap_angle(3 * math.pi / 2) == pytest.approx(-math.pi / 2)
    assert g.wrap_angle(-3 * math.pi / 2) == pytest.approx(math.pi / 2)
    assert g.wrap_angle(0.25) == pytest.approx(0.25)


def test_camera_matrix_is_cached_and_read_only() -> None:
    k = g.camera_matrix(W, H)
    assert k[0, 0] == W and (k[0, 2], k[1, 2]) == (W / 2, H / 2)
    assert g.camera_matrix(W, H) is k
    with pytest.raises(ValueError):
        k[0, 0] = 1.0
