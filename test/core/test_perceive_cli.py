"""`fatigue-llm perceive`: outputs for a video and an image folder, and errors that name the bad file."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fatigue_llm.perception.offline import BLINK_COLUMNS, FRAME_COLUMNS, main, perceive
from fatigue_llm.perception.sources import SourceError
from fatigue_llm.sim.driver_video import DriverScript, EyeClosure, FaceRenderer, render_video

REQUIRED = ["frame", "timestamp_s", "face_found", "ear", "eyes_closed", "mar", "yawn", "pitch_deg"]
SUMMARY_KEYS = {"perclos", "blink_rate_per_min", "mean_blink_duration_ms", "microsleep_count", "nod_count",
                "yawn_count", "frames", "face_found_frames"}


@pytest.fixture(scope="module")
def renderer() -> FaceRenderer:
    return FaceRenderer()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory, renderer: FaceRenderer) -> Path:
    """3 s at 10 fps with two blinks of 0.2 s and one slow blink of 0.5 s (frames 5-6, 12-13, 20-24)."""
    path = tmp_path_factory.mktemp("in") / "drive.avi"
    script = DriverScript(duration_s=3.0, fps=10.0,
                          closures=(EyeClosure(0.45, 0.2), EyeClosure(1.15, 0.2), EyeClosure(1.95, 0.5)))
    render_video(script, path, renderer=renderer)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_video_outputs(tmp_path: Path, video: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames, blinks, summary = tmp_path / "f.csv", tmp_path / "b.csv", tmp_path / "s.json"
    rc = main([str(video), "--frames-csv", str(frames), "--blinks-csv", str(blinks),
               "--summary-json", str(summary)])
    assert rc == 0
    header = frames.read_text().splitlines()[0].split(",")
    assert header[: len(REQUIRED)] == REQUIRED and header == list(FRAME_COLUMNS)
    rows = read_csv(frames)
    assert [int(r["frame"]) for r in rows] == list(range(30))
    assert [float(r["timestamp_s"]) for r in rows] == pytest.approx([i / 10 for i in range(30)], abs=1e-3)
    assert {r["eyes_closed"] for r in rows} == {"0", "1"} and {r["yawn"] for r in rows} == {"0"}
    assert all(r["face_found"] == "1" and float(r["ear"]) > 0 and r["pitch_deg"] for r in rows)
    closed = [int(r["eyes_closed"]) for r in rows]
    assert sum(closed) == 2 + 2 + 5
    assert [list(r.values()) for r in read_csv(blinks)] == [
        ["5", "6", "200.0", "BLINK", "0.500000"],
        ["12", "13", "200.0", "BLINK", "1.200000"],
        ["20", "24", "500.0", "SLOW_BLINK", "2.000000"],
    ]
    assert list(read_csv(blinks)[0]) == list(BLINK_COLUMNS)
    result = json.loads(summary.read_text())
    assert set(result) >= SUMMARY_KEYS
    assert (result["frames"], result["face_found_frames"], result["microsleep_count"]) == (30, 30, 0)
    assert result["blink_rate_per_min"] == pytest.approx(3 / 3.0 * 60)
    assert result["mean_blink_duration_ms"] == pytest.approx(300.0)
    assert result["perclos"] == pytest.approx(9 / 30, abs=0.04)
    assert json.loads(capsys.readouterr().out) == result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.csv", "f.csv", "s.json"]  # no temporary files


def test_image_folder_decides_yawns_per_image(tmp_path: Path, renderer: FaceRenderer) -> None:
    folder = tmp_path / "stills"
    folder.mkdir()
    images = {"1_neutral.png": renderer.render(), "2_closed.png": renderer.render(closure=1.0),
              "3_yawn.png": renderer.render(mouth=1.0), "notes.txt": None}
    for name, image in images.items():
        if image is None:
            (folder / name).write_text("not an image")
        else:
            cv2.imwrite(str(folder / name), image)
    summary = perceive(folder, tmp_path / "f.csv", summary_json=tmp_path / "s.json")
    rows = read_csv(tmp_path / "f.csv")
    assert [r["yawn"] for r in rows] == ["0", "0", "1"]
    assert [r["eyes_closed"] for r in rows] == ["0", "1", "0"]
    assert [float(r["timestamp_s"]) for r in rows] == [0.0, 0.1, 0.2]   # folder_frame_rate 10 Hz
    assert summary["frames"] == 3 and summary["yawn_count"] == 1


def test_params_file_sets_the_config(tmp_path: Path, renderer: FaceRenderer) -> None:
    folder = tmp_path / "stills"
    folder.mkdir()
    cv2.imwrite(str(folder / "yawn.png"), renderer.render(mouth=1.0))
    params = tmp_path / "p.yaml"
    params.write_text("/**/perception:\n  ros__parameters:\n    yawn_mar_threshold: 0.95\n")
    assert main([str(folder), "--frames-csv", str(tmp_path / "f.csv"), "--params", str(params)]) == 0
    assert read_csv(tmp_path / "f.csv")[0]["yawn"] == "0"
    params.write_text("/**/perception:\n  ros__parameters:\n    yawn_mar_threshold: high\n")
    assert main([str(folder), "--frames-csv", str(tmp_path / "f.csv"), "--params", str(params)]) == 2


def corrupt_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    corrupt_video = tmp_path / "corrupt.mp4"
    corrupt_video.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_folder = tmp_path / "bad_folder"
    bad_folder.mkdir()
    cv2.imwrite(str(bad_folder / "a.png"), np.zeros((48, 64, 3), np.uint8))
    (bad_folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    return {
        "missing": (tmp_path / "missing.mp4", "missing.mp4"),
        "corrupt": (corrupt_video, "corrupt.mp4"),
        "empty": (empty, "empty"),
        "bad image": (bad_folder, "b.jpg (frame 1)"),
    }


@pytest.mark.parametrize("case", ["missing", "corrupt", "empty", "bad image"])
def test_bad_input_exits_2_naming_the_file(tmp_path: Path, case: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path, named = corrupt_inputs(tmp_path)[case]
    frames = tmp_path / "out" / "f.csv"
    frames.parent.mkdir()
    assert main([str(path), "--frames-csv", str(frames)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err
    assert not frames.exists() and list(frames.parent.iterdir()) == []
    with pytest.raises(SourceError):
        perceive(path, frames)


def test_unwritable_output_exits_2_naming_it(tmp_path: Path, video: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "no_such_dir" / "f.csv"
    assert main([str(video), "--frames-csv", str(target)]) == 2
    assert str(target) in capsys.readouterr().err


def test_missing_required_option_is_a_usage_error(video: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main([str(video)])
    assert info.value.code == 2


def test_a_video_cut_short_is_read_up_to_the_cut_and_says_where_it_stopped(tmp_path):
    """Issue 11: a video cut in half used to give exit 0 and a summary that did not say the file ended early."""
    whole = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(40):
        writer.write(np.full((48, 64, 3), 5 * i, np.uint8))
    writer.release()
    cut = tmp_path / "cut.avi"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    for video, complete in ((whole, True), (cut, False)):
        done = subprocess.run([sys.executable, "-m", "fatigue_llm.cli", "perceive", str(video), "--frames-csv",
                               str(tmp_path / f"{video.stem}.csv")], capture_output=True, text=True, timeout=120)
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        if complete:
            assert done.returncode == 0 and summary["stopped_early"] is None, done.stderr
            continue
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "cut.avi: decoding stopped after frame" in summary["stopped_early"]
        assert "of the 40 frames the container declares" in done.stderr
        rows = (tmp_path / "cut.csv").read_text().splitlines()
        assert 2 <= len(rows) - 1 < 40 and summary["frames"] == len(rows) - 1  # what was read is written
