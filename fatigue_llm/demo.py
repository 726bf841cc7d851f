"""``fatigue-llm demo``: the three nodes on the bundled sample drive, interventions printed live."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from fatigue_llm.config import ConfigError
from fatigue_llm.ros.environment import apply_local_dds_defaults
from fatigue_llm.ros.launcher import Launcher, NodeExit
from fatigue_llm.sim.driver_video import ensure_sample_video

LEVELS = ("INFO", "ADVISORY", "WARNING", "CRITICAL")


def video_duration_s(path: Path) -> float:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        frames = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        fps = capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    if not frames or not fps:
        raise ConfigError(f"{path}: cannot read frame count / fps")
    return frames / fps


class NodeLogFilter:
    """Passes node warnings/errors and launcher lines; the interventions are printed by the demo."""

    def __init__(self, out) -> None:
        self.out = out

    # MediaPipe/TFLite print start-up notices through absl before logging is set up
    NOISE = ("[INFO]", "INFO:", "] W0000 ", "] I0000 ", "absl::InitializeLog")

    def write(self, text: str) -> None:
        # launcher reports pass whole: a death report's last lines include the node's INFO lines
        if text.startswith("[launch] ") or not any(marker in text for marker in self.NOISE):
            self.out.write(text)

    def flush(self) -> None:
        self.out.flush()


def _format(msg, started: float) -> str:
    follow = f" (follows {msg.follows_id[:8]})" if msg.follows_id else ""
    return (f"[demo] {time.monotonic() - started:6.1f} s  {LEVELS[msg.level]:<8} {msg.source:<9} "
            f"{msg.action:<18} conf={msg.confidence:.2f}{' escalated' if msg.escalated else ''}{follow}\n"
            f"         \"{msg.message}\"\n         why: {msg.explanation}")


LLM_READY_TIMEOUT_S = 180.0  # model load on a busy 2-core machine; alerts do not wait for it


def _wait_for_llm(node, launcher: Launcher, timeout_s: float) -> float | None:
    """Spin until the llm node serves Advise (seconds waited), or None after ``timeout_s``."""
    import rclpy
    from fatigue_msgs.action import Advise
    from rclpy.action import ActionClient

    from fatigue_llm import topics

    client = ActionClient(node, Advise, "/" + topics.ADVISE_ACTION)
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout_s and launcher.poll() and not _fatal(launcher):
            if client.server_is_ready():
                return time.monotonic() - started
            rclpy.spin_once(node, timeout_sec=0.1)
        return None
    finally:
        client.destroy()


def run_demo(video: str | None, params_file: str | None, grace_s: float = 20.0) -> int:
    import rclpy
    from fatigue_msgs.msg import Intervention
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    video_path = Path(video) if video else ensure_sample_video()
    arguments = {"video": str(video_path), "loop": "false"}
    duration = video_duration_s(video_path)
    apply_local_dds_defaults()
    launcher = Launcher("vehicle", Path(params_file) if params_file else None, arguments,
                        out=NodeLogFilter(sys.stdout))
    received: list = []
    rclpy.init(args=[])
    node = rclpy.create_node("fatigue_llm_demo")
    started = time.monotonic()

    def on_intervention(msg: Intervention) -> None:
        received.append(msg)
        print(_format(msg, started), flush=True)

    node.create_subscription(Intervention, "/intervention", on_intervention,
                             QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    print(f"[demo] playing {video_path} ({duration:.0f} s) through perception -> features -> intervention",
          flush=True)
    try:
        # the camera starts once the LLM serves advice, so the short sample drive shows both paths
        # (on a vehicle nothing waits: alerts flow from the first frame, advice joins when ready)
        launcher.start(hold=("perception",))
        waited = _wait_for_llm(node, launcher, LLM_READY_TIMEOUT_S)
        print(f"[demo] llm node ready after {waited:.1f} s" if waited is not None else
              f"[demo] llm node not ready after {LLM_READY_TIMEOUT_S:.0f} s: rule alerts only", flush=True)
        launcher.release("perception")
        started = time.monotonic()
        deadline = time.monotonic() + duration + grace_s
        # poll() reports deaths (with their last lines) and respawns; a node that stays dead ends the demo
        while time.monotonic() < deadline and launcher.poll() and not _fatal(launcher):
            rclpy.spin_once(node, timeout_sec=0.1)
    except KeyboardInterrupt:
        print("[demo] interrupted", flush=True)
    finally:
        launcher.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    counts = {name: sum(1 for m in received if LEVELS[m.level] == name) for name in LEVELS}
    sources = sorted({m.source for m in received})
    print(f"[demo] {len(received)} interventions: "
          + ", ".join(f"{n} {name}" for name, n in counts.items() if n) + f"; sources: {', '.join(sources)}")
    respawned = [record for record in launcher.failures if record.respawn]
    if respawned:
        restarts = ", ".join(f"{name} {n}" for name, n in launcher.restarts.items() if n) or "none yet"
        print(f"[demo] restarts: {restarts}; deaths: " + "; ".join(r.describe() for r in respawned), flush=True)
    fatal = _fatal(launcher)
    if fatal:
        print(f"[demo] FAILED: {fatal[0].describe()}", flush=True)
        return 1
    if not counts["CRITICAL"]:
        print(f"[demo] FAILED: no CRITICAL intervention arrived ({len(received)} interventions)", flush=True)
        return 1
    followups = sum(1 for m in received if m.source == "local_llm")
    if not followups:
        deaths = "; ".join(r.describe() for r in respawned) or "it never answered"
        print(f"[demo] FAILED: no local_llm follow-up arrived ({deaths})", flush=True)
        return 1
    print(f"[demo] OK: the sample drive's microsleeps raised a CRITICAL rule alert at once, and the on-device "
          f"LLM followed up {followups} alert(s)", flush=True)
    return 0


def _fatal(launcher: Launcher) -> list[NodeExit]:
    """Nodes that failed and stay dead (a respawning node that came back is not a demo failure)."""
    return [record for record in launcher.failures if not record.respawn]
