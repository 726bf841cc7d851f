"""Camera-frame sources for files and webcams: iterate `(timestamp_s, frame)` with BGR uint8 frames.

Timestamps are media time in seconds from the start of the source and strictly increase.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from fatigue_llm.perception.config import PerceptionConfig

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm",
                            ".pnm"})
DEFAULT_FPS = 30.0  # assumed when a video file states no frame rate (our choice: the usual camera rate)


class SourceError(ValueError):
    """Missing, unreadable or corrupt input; the message names the file (and frame number)."""


class FrameSource(ABC):
    """An iterable of `(timestamp_s, frame)`; iterate once. Close it (or use `with`) to release the input."""

    name: str = ""

    @abstractmethod
    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]: ...

    def close(self) -> None:  # noqa: B027 - sources without resources need no close
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _CaptureSource(FrameSource):
    """Shared reading loop of cv2.VideoCapture sources."""

    def __init__(self, capture: cv2.VideoCapture, name: str) -> None:
        self.name = name
        self._capture = capture
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS

    def _read(self) -> np.ndarray | None:
        ok, frame = self._capture.read()
        return frame if ok and frame is not None and frame.size else None

    def close(self) -> None:
        self._capture.release()


class VideoFileSource(_CaptureSource):
    """Frames of a video file; timestamps from CAP_PROP_POS_MSEC, or frame index / fps where the container
    gives none or a non-increasing one.

    Raises SourceError when the file is missing, cannot be opened as a video, or has no decodable frame.
    A file that stops decoding part-way ends there; ``stopped_early`` then says after which frame, against
    the frame count the container declares (a cut or damaged file; OpenCV gives no reason of its own).
    """

    COUNT_TOLERANCE = 2  # frames: containers round their declared count

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise SourceError(f"{path}: no such video file")
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"{path}: cannot open as a video (unsupported format or corrupt file)")
        super().__init__(capture, str(path))
        declared = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        self.declared_frames = int(declared) if math.isfinite(declared) and declared > 0 else 0
        self.frames_read = 0
        self._first = self._read()
        if self._first is None:
            self.close()
            raise SourceError(f"{path}: frame 0: no frame could be decoded (empty or corrupt video)")

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        frame, self._first = self._first, None
        index, last_t = 0, -math.inf
        while frame is not None:
            t = self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if not (math.isfinite(t) and t > last_t):
                t = index / self.fps if index / self.fps > last_t else last_t + 1.0 / self.fps
            yield t, frame
            last_t, index = t, index + 1
            self.frames_read = index
            frame = self._read()

    @property
    def stopped_early(self) -> str | None:
        """Where decoding stopped before the declared end, or None (read to the end, or no count declared)."""
        if not self.declared_frames or self.frames_read + self.COUNT_TOLERANCE >= self.declared_frames:
            return None
        return (f"{self.name}: decoding stopped after frame {self.frames_read - 1} ({self.frames_read} of the "
                f"{self.declared_frames} frames the container declares): the file is cut short or damaged there")


class WebcamSource(_CaptureSource):
    """Frames of a V4L2 / system camera; timestamps = monotonic time since the source opened.

    Raises SourceError when the camera cannot be opened. Iteration ends when the camera stops delivering.
    """

    def __init__(self, index: int) -> None:
        capture = cv2.VideoCapture(index)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"webcam {index}: cannot open the camera")
        super().__init__(capture, f"webcam {index}")
        self._start = time.monotonic()

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        last_t = -math.inf
        while (frame := self._read()) is not None:
            t = max(time.monotonic() - self._start, math.nextafter(last_t, math.inf))
            yield t, frame
            last_t = t


class ImageFolderSource(FrameSource):
    """Still images of a folder, sorted by file name; timestamps = index / frame_rate.

    Files without an image suffix (IMAGE_SUFFIXES) are ignored. Raises SourceError when the folder is
    missing or holds no image, and, while iterating, when an image file cannot be decoded (naming the file
    and its frame number).
    """

    def __init__(self, folder: str | Path, frame_rate: float) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise SourceError(f"{folder}: no such image folder")
        if not frame_rate > 0:
            raise SourceError(f"{folder}: frame rate must be > 0, got {frame_rate}")
        self.name = str(folder)
        self.frame_rate = frame_rate
        self.files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        for index, path in enumerate(self.files):
            yield index / self.frame_rate, read_image(path, index)


def read_image(path: Path, index: int | None = None) -> np.ndarray:
    """One image file as BGR uint8; raises SourceError naming the file (and frame number) if unreadable."""
    where = f"{path}" if index is None else f"{path} (frame {index})"
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise SourceError(f"{where}: cannot read ({error.strerror})") from None
    frame = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if frame is None:
        raise SourceError(f"{where}: not a decodable image (corrupt or unsupported)")
    return frame


def open_source(config: PerceptionConfig) -> FrameSource:
    """The file or camera source the config names (video_path, image_folder or webcam_index).

    Raises SourceError if the config names none or the input cannot be opened.
    """
    if config.video_path:
        return VideoFileSource(config.video_path)
    if config.image_folder:
        return ImageFolderSource(config.image_folder, config.folder_frame_rate)
    if config.webcam_index >= 0:
        return WebcamSource(config.webcam_index)
    raise SourceError("no frame source configured: set video_path, image_folder or webcam_index")
