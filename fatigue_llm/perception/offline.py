"""Offline perception: a video file or image folder -> per-frame CSV, eye-closure CSV and a summary JSON.

`fatigue-llm perceive INPUT --frames-csv FRAMES.csv [--blinks-csv BLINKS.csv] [--summary-json S.json]`
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fatigue_llm.config import ConfigError, load_config
from fatigue_llm.perception.config import PerceptionConfig
from fatigue_llm.perception.detectors import EyeClosureRecord
from fatigue_llm.perception.pipeline import FrameError, PerceptionPipeline
from fatigue_llm.perception.sources import FrameSource, ImageFolderSource, SourceError, VideoFileSource
from fatigue_llm.perception.types import EventType, FrameObservation

# Column names are an interface (tests and users read them): only ever append.
FRAME_COLUMNS = ("frame", "timestamp_s", "face_found", "ear", "eyes_closed", "mar", "yawn", "pitch_deg",
                 "ear_left", "ear_right", "ear_threshold", "eye_closure", "closed_duration_s", "yaw_deg",
                 "roll_deg", "tracking_confidence", "events", "blink")
BLINK_COLUMNS = ("start_frame", "end_frame", "duration_ms", "kind", "start_s")
P80_CLOSURE = 0.8  # PERCLOS P80: lids cover >= 80 % of the eye (Wierwille et al. 1994; Dinges & Grace 1998)


@dataclass(frozen=True)
class _Closure:
    start_frame: int
    end_frame: int     # last closed frame (inclusive)
    record: EyeClosureRecord


def _fmt(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else ""


def _deg(rad: float) -> str:
    return _fmt(math.degrees(rad), 2) if math.isfinite(rad) else ""


def _frame_row(index: int, obs: FrameObservation) -> list[object]:
    events = ";".join(e.type.name for e in obs.events)
    return [index, f"{obs.timestamp_s:.6f}", int(obs.face_found), _fmt(obs.ear), int(obs.eyes_closed),
            _fmt(obs.mar), int(obs.yawning), _deg(obs.pitch_rad), _fmt(obs.ear_left), _fmt(obs.ear_right),
            _fmt(obs.ear_threshold), _fmt(obs.eye_closure, 3), _fmt(obs.closed_duration_s, 3),
            _deg(obs.yaw_rad), _deg(obs.roll_rad), _fmt(obs.tracking_confidence, 3), events, 0]


def write_csv_atomic(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Write a CSV through a temporary file and os.replace, so readers never see a partial file.

    Raises OSError naming the file when it cannot be written.
    """
    _write_atomic(Path(path), lambda fh: _write_rows(fh, header, rows))


def _write_rows(fh, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    writer = csv.writer(fh)
    writer.writerow(header)
    writer.writerows(rows)


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="") as fh:
            write(fh)
        os.replace(tmp, path)
    except OSError as error:
        raise OSError(f"{path}: cannot write ({error.strerror or error})") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _open(input_path: Path, config: PerceptionConfig) -> tuple[FrameSource, bool]:
    """(source, still_images) for a video file or image folder; raises SourceError."""
    if input_path.is_dir():
        return ImageFolderSource(input_path, config.folder_frame_rate), True
    return VideoFileSource(input_path), False


def summarize(observations: Sequence[FrameObservation], closures: Sequence[_Closure]) -> dict:
    """Summary statistics of a run (see `perceive`)."""
    n = len(observations)
    face = [o for o in observations if o.face_found]
    closed = sum(1 for o in face if (o.eye_closure >= P80_CLOSURE if math.isfinite(o.eye_closure)
                                     else o.eyes_closed))
    events = [e for o in observations for e in o.events]
    counts = {kind: sum(1 for e in events if e.type == kind) for kind in EventType}
    blinks = [c.record for c in closures if c.record.kind in (EventType.BLINK, EventType.SLOW_BLINK)]
    times = [o.timestamp_s for o in observations]
    steps = sorted(b - a for a, b in zip(times, times[1:], strict=False))
    duration = (times[-1] - times[0] + steps[len(steps) // 2]) if steps else 0.0
    return {
        "frames": n,
        "face_found_frames": len(face),
        "duration_s": round(duration, 4),
        "perclos": round(closed / len(face), 4) if face else None,
        "blink_count": counts[EventType.BLINK] + counts[EventType.SLOW_BLINK],
        "slow_blink_count": counts[EventType.SLOW_BLINK],
        "blink_rate_per_min": round(60.0 * len(blinks) / duration, 3) if duration > 0 else None,
        "mean_blink_duration_ms": round(1000 * sum(b.duration_s for b in blinks) / len(blinks), 1)
        if blinks else None,
        "microsleep_count": counts[EventType.MICROSLEEP],
        "longest_closure_s": round(max((c.record.duration_s for c in closures), default=0.0), 3),
        "nod_count": counts[EventType.NOD],
        "yawn_count": counts[EventType.YAWN],
        "face_lost_count": counts[EventType.FACE_LOST],
    }


def perceive(input_path: str | Path, frames_csv: str | Path, blinks_csv: str | Path | None = None,
             summary_json: str | Path | None = None, config: PerceptionConfig | None = None) -> dict:
    """Run the perception pipeline over a video file or a folder of images and write the results.

    * FRAMES.csv: one row per input frame, FRAME_COLUMNS (eyes_closed, yawn, face_found as 0/1; values
      that could not be measured are empty). `eyes_closed` is PERCLOS's "lid >= 80 % closed"; `blink` is 1
      on every frame of a detected blink or slow blink from the first frame the lid falls to the last frame
      it is still rising (perception/blinks.py; decided when the blink ends, so a blink still in progress at
      the end of the input is not marked; microsleeps are not blinks);
    * BLINKS.csv: one row per finished eye closure, BLINK_COLUMNS (kind BLINK, SLOW_BLINK or MICROSLEEP;
      end_frame is the last closed frame; a closure still open at the end of the input is not listed);
    * summary JSON (also returned): perclos (P80 over face frames), blink_rate_per_min and
      mean_blink_duration_ms (blinks + slow blinks), microsleep/nod/yawn counts, frames, face_found_frames,
      and stopped_early: where a video stopped decoding before the frame count its container declares (or null).

    An image folder runs in still-image mode (every image detected on its own; yawns decided per image) at
    `config.folder_frame_rate`. Raises SourceError for a missing, empty or corrupt input (naming the file)
    and OSError for an output that cannot be written. Outputs are written atomically.
    """
    config = config or PerceptionConfig()
    source, still = _open(Path(input_path), config)
    observations: list[FrameObservation] = []
    rows: list[list[object]] = []
    closures: list[_Closure] = []
    frame_of: dict[float, int] = {}
    with source, PerceptionPipeline(config, still_images=still) as pipeline:
        for index, (t, frame) in enumerate(source):
            try:
                obs = pipeline.process(frame, t)
            except FrameError as error:
                raise SourceError(f"{source.name}: frame {index}: {error}") from None
            frame_of[obs.timestamp_s] = index
            finished = pipeline.last_closure
            if finished is not None:
                closures.append(_Closure(frame_of[finished.start_s], index - 1, finished))
            observations.append(obs)
            rows.append(_frame_row(index, obs))
            blink = pipeline.last_blink   # ended at the previous frame: mark its frames
            if blink is not None and blink.kind != EventType.MICROSLEEP:
                for row in rows[frame_of[blink.start_s]:index]:
                    row[-1] = 1
    summary = {"input": str(input_path), **summarize(observations, closures),
               "stopped_early": getattr(source, "stopped_early", None)}
    write_csv_atomic(frames_csv, FRAME_COLUMNS, rows)
    if blinks_csv is not None:
        write_csv_atomic(blinks_csv, BLINK_COLUMNS, [
            [c.start_frame, c.end_frame, round(1000 * c.record.duration_s, 1), c.record.kind.name,
             f"{c.record.start_s:.6f}"] for c in closures])
    if summary_json is not None:
        _write_atomic(Path(summary_json), lambda fh: fh.write(json.dumps(summary, indent=2) + "\n"))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """`fatigue-llm perceive`: 0 on success, 1 when a video stopped decoding before its end (what was read is
    written and the summary's ``stopped_early`` says where), 2 on bad input or unwritable output (message names
    the file)."""
    parser = argparse.ArgumentParser(prog="fatigue-llm perceive",
                                     description="Run driver perception on a video file or an image folder.")
    parser.add_argument("input", help="video file, or folder of images (sorted by name)")
    parser.add_argument("--frames-csv", required=True, help="per-frame output CSV")
    parser.add_argument("--blinks-csv", help="eye-closure (blink / slow blink / microsleep) output CSV")
    parser.add_argument("--summary-json", help="summary statistics output JSON")
    parser.add_argument("--params", help="ROS 2 parameter file; its /**/perception section sets the config")
    args = parser.parse_args(argv)
    try:
        config = PerceptionConfig()
        if args.params:
            config = load_config(PerceptionConfig, args.params, "perception")
        summary = perceive(args.input, args.frames_csv, args.blinks_csv, args.summary_json, config)
    except (SourceError, ConfigError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    if summary["stopped_early"]:  # the frames up to the cut are written; the input was not whole
        print(f"error: {summary['stopped_early']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
