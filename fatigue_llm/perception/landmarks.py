"""MediaPipe face-mesh wrapper: one BGR or grey frame in, 478 pixel-space landmarks out.

MediaPipe's face-mesh solution reports no per-frame score: this module only says whether a face was found,
and the pipeline derives `tracking_confidence` from how rigidly the mesh fits a face
(`fatigue_llm.perception.pipeline.rigidity_confidence`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import mediapipe as mp
import numpy as np

MESH_POINTS = 478  # 468 face-mesh vertices + 10 iris points (refine_landmarks=True)

# Wire format of one NormalizedLandmark{x, y, z} message inside a serialised NormalizedLandmarkList: field 1
# (landmark, length 15) holding fields 1-3 as little-endian float32. A coordinate of exactly 0.0 is omitted
# by protobuf, so the fast path checks every tag and falls back to attribute access when one differs.
_WIRE = np.dtype([("tag", "u1"), ("len", "u1"), ("tx", "u1"), ("x", "<f4"),
                  ("ty", "u1"), ("y", "<f4"), ("tz", "u1"), ("z", "<f4")])
_TAG_OFFSETS = [0, 1, 2, 7, 12]                                       # byte offsets of the tags above
_TAG_VALUES = np.array([0x0A, 0x0F, 0x0D, 0x15, 0x1D], np.uint8)     # field 1 len 15, fields 1-3 float


def _normalized_xyz(landmark_list) -> np.ndarray:
    """(N, 3) float32 normalised coordinates of a NormalizedLandmarkList, without a per-point Python loop
    in the common case."""
    raw = landmark_list.SerializeToString()
    if len(raw) % _WIRE.itemsize == 0:
        tags = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _WIRE.itemsize)[:, _TAG_OFFSETS]
        if np.array_equal(tags, np.broadcast_to(_TAG_VALUES, tags.shape)):
            rec = np.frombuffer(raw, dtype=_WIRE)
            return np.stack([rec["x"], rec["y"], rec["z"]], axis=1)
    return np.array([(p.x, p.y, p.z) for p in landmark_list.landmark], dtype=np.float32)


@dataclass(frozen=True)
class FaceLandmarks:
    """One detected face: `points` (N, 3) float32, x/y in pixels, z in pixels relative to the face centre
    (MediaPipe's depth, same scale as x; smaller = nearer the camera)."""

    points: np.ndarray
    width: int
    height: int


class FaceMeshDetector:
    """MediaPipe face mesh (`mp.solutions.face_mesh`), one face, refined eye/iris landmarks.

    `still_images=False` (video): the face is detected once and then tracked from frame to frame, the mode
    for a camera or video file. `still_images=True`: every frame is detected from scratch, for unrelated
    images. Not thread-safe; call `close()` (or use `with`) to release the graph.
    """

    def __init__(self, still_images: bool = False, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5) -> None:
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=still_images,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )

    def detect(self, frame: np.ndarray) -> FaceLandmarks | None:
        """Landmarks of the face in an HxWx3 BGR or HxW grey uint8 frame, or None when no face is found.

        The frame is assumed valid (the pipeline checks it); it is not modified.
        """
        code = cv2.COLOR_GRAY2RGB if frame.ndim == 2 else cv2.COLOR_BGR2RGB
        rgb = cv2.cvtColor(frame, code)
        rgb.flags.writeable = False  # lets MediaPipe wrap the buffer without copying it
        result = self._mesh.process(rgb)
        faces = result.multi_face_landmarks
        if not faces:
            return None
        height, width = frame.shape[:2]
        points = _normalized_xyz(faces[0])
        points *= np.array([width, height, width], dtype=np.float32)
        return FaceLandmarks(points, width, height)

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceMeshDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
