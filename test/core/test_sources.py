"""Frame sources: video files, image folders, webcams, and what they say about bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fatigue_llm.perception.config import PerceptionConfig
from fatigue_llm.perception.sources import (
    ImageFolderSource,
    SourceError,
    VideoFileSource,
    WebcamSource,
    open_source,
    read_image,
)


def frame(value: int) -> np.ndarray:
    image = np.full((48, 64, 3), value, np.uint8)
    cv2.putText(image, str(value), (5, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    return image


def write_video(path: Path, count: int, fps: float) -> Path:
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (64, 48))
    assert writer.isOpened()
    for i in range(count):
        writer.write(frame(10 * i))
    writer.release()
    return path


@pytest.mark.parametrize("name, fps", [("clip.avi", 12.5), ("clip.mp4", 15.0)])
def test_video_frames_and_timestamps(tmp_path: Path, name: str, fps: float) -> None:
    path = write_video(tmp_path / name, 8, fps)
    with VideoFileSource(path) as source:
        items = list(source)
        assert source.fps == pytest.approx(fps)
    assert len(items) == 8
    stamps = [t for t, _ in items]
    assert stamps == pytest.approx([i / fps for i in range(8)], abs=1e-3)
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for _, f in items)
    assert [int(round(f[2, 60].mean() / 10)) for _, f in items] == list(range(8))  # in order, none skipped


def test_missing_video_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="nope.mp4: no such video file"):
        VideoFileSource(tmp_path / "nope.mp4")
    with pytest.raises(SourceError, match="no such video file"):
        VideoFileSource(tmp_path)  # a folder is not a video file


@pytest.mark.parametrize("content", [b"", b"this is not a video at all" * 100,
                                     bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8))])
def test_corrupt_video_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(SourceError, match="broken.mp4"):
        VideoFileSource(path)


def test_truncated_video_header_is_rejected(tmp_path: Path) -> None:
    good = write_video(tmp_path / "good.avi", 5, 10.0).read_bytes()
    path = tmp_path / "cut.avi"
    path.write_bytes(good[:200])
    with pytest.raises(SourceError, match="cut.avi"):
        VideoFileSource(path)


def write_folder(folder: Path, names: list[str]) -> Path:
    folder.mkdir()
    for i, name in enumerate(names):
        path = folder / name
        if path.suffix in (".png", ".jpg"):
            assert cv2.imwrite(str(path), frame(20 * i))
        else:
            path.write_text("notes, not an image")
    return folder


def test_folder_sorted_by_name_with_index_timestamps(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "imgs", ["b.png", "a.png", "readme.txt", "c.jpg", "data.csv"])
    source = ImageFolderSource(folder, frame_rate=4.0)
    assert [p.name for p in source.files] == ["a.png", "b.png", "c.jpg"]   # non-images ignored
    items = list(source)
    assert [t for t, _ in items] == [0.0, 0.25, 0.5]
    # a.png was written second (value 20), b.png first (value 0)
    assert [int(round(f[2, 60].mean())) for _, f in items[:2]] == [20, 0]


def test_empty_folder_and_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="empty: no image files"):
        ImageFolderSource(tmp_path / "empty", 10.0)
    folder = write_folder(tmp_path / "texts", ["a.txt", "b.json"])
    with pytest.raises(SourceError, match="texts: no image files"):
        ImageFolderSource(folder, 10.0)
    with pytest.raises(SourceError, match="missing: no such image folder"):
        ImageFolderSource(tmp_path / "missing", 10.0)


def test_corrupt_image_names_file_and_frame(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "imgs", ["a.png", "b.png", "c.png"])
    real = (folder / "b.png").read_bytes()
    (folder / "b.png").write_bytes(real[: len(real) // 2])   # truncated PNG
    source = ImageFolderSource(folder, 10.0)
    frames = iter(source)
    next(frames)
    with pytest.raises(SourceError, match=r"b\.png \(frame 1\): not a decodable image"):
        next(frames)
    (folder / "c.png").write_bytes(b"")
    with pytest.raises(SourceError, match="c.png"):
        read_image(folder / "c.png")


def test_open_source_picks_by_config(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 3, 10.0)
    folder = write_folder(tmp_path / "imgs", ["a.png"])
    with open_source(PerceptionConfig(video_path=str(video))) as source:
        assert isinstance(source, VideoFileSource)
    source = open_source(PerceptionConfig(image_folder=str(folder), folder_frame_rate=2.0))
    assert isinstance(source, ImageFolderSource) and source.frame_rate == 2.0
    with pytest.raises(SourceError, match="no frame source configured"):
        open_source(PerceptionConfig())


def test_missing_webcam_raises(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="webcam 97"):
        WebcamSource(97)
    with pytest.raises(SourceError, match="webcam 97"):
        open_source(PerceptionConfig(webcam_index=97))
