"""``fatigue-llm launch NAME``: start a node set as separate processes, like ``ros2 launch``.

Built from the same description as launch/vehicle.launch.py (fatigue_llm.nodeset), so both
start the same executables with the same parameters. Streams each node's output with a
``[name]`` prefix and stops all nodes cleanly on Ctrl-C / SIGTERM (SIGINT to each node,
then SIGTERM, then SIGKILL for stragglers).
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from fatigue_llm.config import ConfigError, load_config, read_parameter_file
from fatigue_llm.nodeset import DEFAULT_PARAMS, LAUNCHES, NodeSpec, parameter_overrides
from fatigue_llm.ros.environment import apply_local_dds_defaults, package_file

STOP_GRACE_S = 10.0


def default_params_file() -> Path:
    """The package's config/vehicle.yaml: next to the source tree, or installed under share/."""
    path = package_file(DEFAULT_PARAMS)
    if path is None:
        raise ConfigError(f"no default parameter file {DEFAULT_PARAMS} in the source tree or {sys.prefix}/share")
    return path


def ros_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for node processes: local DDS defaults unless the user chose otherwise."""
    result = dict(os.environ if env is None else env)
    apply_local_dds_defaults(result)
    result.setdefault("PYTHONUNBUFFERED", "1")
    return result


def validate_parameters(specs: tuple[NodeSpec, ...], params_file: Path) -> None:
    """Load each node's typed config from the file now, so errors name the file before any start."""
    for spec in specs:
        module_name, class_name = spec.config.split(":")
        config_class = getattr(importlib.import_module(module_name), class_name)
        load_config(config_class, params_file, spec.name)


def node_command(spec: NodeSpec, params_file: Path, overrides: dict[str, str], namespace: str) -> list[str]:
    command = [sys.executable, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}",
               "--params-file", str(params_file)]
    if namespace:
        command += ["-r", f"__ns:=/{namespace.strip('/')}"]
    for name, value in overrides.items():
        command += ["-p", f"{name}:={value}"]
    return command


@dataclass
class RunningNode:
    spec: NodeSpec
    process: subprocess.Popen
    pump: threading.Thread


def _pump(name: str, stream, out: TextIO, lock: threading.Lock) -> None:
    for line in stream:
        with lock:
            out.write(f"[{name}] {line}" if line.endswith("\n") else f"[{name}] {line}\n")
            out.flush()


class Launcher:
    """Starts, watches and stops one node set."""

    def __init__(self, launch: str, params_file: Path | None = None, arguments: dict[str, str] | None = None,
                 out: TextIO = sys.stdout, env: dict[str, str] | None = None) -> None:
        if launch not in LAUNCHES:
            raise ConfigError(f"unknown launch '{launch}'; available: {', '.join(sorted(LAUNCHES))}")
        self.specs, _ = LAUNCHES[launch]
        self.params_file = Path(params_file) if params_file else default_params_file()
        self.arguments = arguments or {}
        self.out = out
        self.env = ros_environment(env)
        self.nodes: list[RunningNode] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Validate parameters and inputs, then start every node. Raises ConfigError on bad input."""
        validate_parameters(self.specs, self.params_file)
        self._default_to_sample_drive()
        video = self.arguments.get("video")
        if video and not Path(video).is_file():
            raise ConfigError(f"video file not found: {video}")
        namespace = self.arguments.get("namespace", "")
        for spec in self.specs:
            command = node_command(spec, self.params_file, parameter_overrides(spec, self.arguments), namespace)
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       env=self.env, start_new_session=True)
            pump = threading.Thread(target=_pump, args=(spec.name, process.stdout, self.out, self._lock),
                                    daemon=True)
            pump.start()
            self.nodes.append(RunningNode(spec, process, pump))
            self.log(f"started {spec.name} (pid {process.pid})")

    def _default_to_sample_drive(self) -> None:
        """With no camera input named anywhere, play the bundled sample drive in a loop.

        This machine has no camera; on a vehicle name one with --image-topic (or use ros2 launch).
        """
        if any(self.arguments.get(name) for name in ("video", "image_topic")):
            return
        perception = read_parameter_file(self.params_file, "perception")
        if any(perception.get(name) for name in ("video_path", "image_folder")) or \
                perception.get("webcam_index", -1) >= 0:
            return
        from fatigue_llm.sim.driver_video import ensure_sample_video

        video = ensure_sample_video()
        self.arguments = {**self.arguments, "video": str(video), "loop": self.arguments.get("loop") or "true"}
        self.log(f"no camera input given: playing the sample drive {video} in a loop "
                 "(use --image-topic TOPIC or --video FILE for your own)")

    def log(self, text: str) -> None:
        with self._lock:
            self.out.write(f"[launch] {text}\n")
            self.out.flush()

    def running(self) -> list[RunningNode]:
        return [node for node in self.nodes if node.process.poll() is None]

    def wait(self, stop: threading.Event, poll_s: float = 0.2) -> None:
        """Block until ``stop`` is set or every node has exited, reporting exits as they happen."""
        reported: set[int] = set()
        while not stop.wait(poll_s):
            for node in self.nodes:
                code = node.process.poll()
                if code is not None and node.process.pid not in reported:
                    reported.add(node.process.pid)
                    self.log(f"{node.spec.name} exited with code {code}")
            if not self.running():
                return

    def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """Stop all nodes; returns the worst exit code among nodes that failed on their own."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            alive = self.running()
            if not alive:
                break
            for node in alive:
                node.process.send_signal(sig)
            deadline = time.monotonic() + (grace_s if sig != signal.SIGKILL else 5.0)
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.05)
        for node in self.nodes:
            node.pump.join(timeout=2.0)
        codes = [node.process.returncode or 0 for node in self.nodes]
        # an interrupted node exits 0 or -SIGINT; anything else positive is a real failure
        failures = [code for code in codes if code > 0]
        self.log("all nodes stopped")
        return max(failures, default=0)


def run_launch(launch: str, params_file: str | None, arguments: dict[str, str],
               duration_s: float | None = None) -> int:
    """CLI body: start, wait for Ctrl-C/SIGTERM (or ``duration_s``), stop. Returns the exit code."""
    launcher = Launcher(launch, Path(params_file) if params_file else None, arguments)
    stop = threading.Event()

    def request_stop(signum, _frame) -> None:
        launcher.log(f"received {signal.Signals(signum).name}, stopping nodes")
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        launcher.start()
        if duration_s is not None:
            threading.Timer(duration_s, stop.set).start()
        launcher.wait(stop)
    finally:
        code = launcher.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
