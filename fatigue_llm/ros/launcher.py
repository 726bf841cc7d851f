"""``fatigue-llm launch NAME``: start a node set as separate processes, like ``ros2 launch``.

Built from the same description as launch/vehicle.launch.py (fatigue_llm.nodeset), so both
start the same executables with the same parameters. Streams each node's output with a
``[name]`` prefix, reports a node that dies (exit code or signal, its last lines), restarts
it when its spec has ``respawn`` (as launch_ros does), and stops all nodes cleanly on
Ctrl-C / SIGTERM (SIGINT to each node, then SIGTERM, then SIGKILL for stragglers).
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
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


LAST_LINES = 20  # output lines kept per node for its death report


@dataclass
class RunningNode:
    spec: NodeSpec
    process: subprocess.Popen
    pump: threading.Thread
    lines: deque[str]            # the node's last output lines, filled by the pump thread
    reported: bool = False       # its exit has been handled (logged, maybe respawned)


@dataclass(frozen=True)
class NodeExit:
    """A node that exited on its own, not because the launcher stopped it."""

    name: str
    code: int                    # Popen returncode: negative when killed by a signal
    signal: str | None           # "SIGSEGV" when killed by a signal, else None
    last_lines: tuple[str, ...]
    at: float                    # time.time() when the exit was seen
    respawn: bool                # the node's spec restarts it

    @property
    def failed(self) -> bool:
        return self.code != 0

    @property
    def exit_status(self) -> int:
        """Shell-style status: the exit code, or 128 + the signal number."""
        return self.code if self.code >= 0 else 128 - self.code

    def describe(self) -> str:
        if self.signal:
            return f"{self.name} died: killed by signal {self.signal} ({self.code})"
        return f"{self.name} died: exit code {self.code}" if self.code else f"{self.name} exited: exit code 0"


def _signal_name(code: int) -> str | None:
    if code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _pump(name: str, stream, out: TextIO, lock: threading.Lock, lines: deque[str]) -> None:
    for line in stream:
        line = line.rstrip("\n")
        lines.append(line)
        with lock:
            out.write(f"[{name}] {line}\n")
            out.flush()


class Launcher:
    """Starts, watches (respawning where the spec says so) and stops one node set.

    ``poll()`` (called by ``wait()``, or by a caller's own loop) notices exits and performs
    due respawns; nothing restarts a node while no one polls.
    """

    def __init__(self, launch: str, params_file: Path | None = None, arguments: dict[str, str] | None = None,
                 out: TextIO = sys.stdout, env: dict[str, str] | None = None,
                 specs: tuple[NodeSpec, ...] | None = None) -> None:
        if specs is None:
            if launch not in LAUNCHES:
                raise ConfigError(f"unknown launch '{launch}'; available: {', '.join(sorted(LAUNCHES))}")
            specs, _ = LAUNCHES[launch]
        self.specs: tuple[NodeSpec, ...] = specs
        self.params_file = Path(params_file) if params_file else default_params_file()
        self.arguments = arguments or {}
        self.out = out
        self.env = ros_environment(env)
        self.nodes: list[RunningNode] = []          # the current process of each started node
        self.exits: list[NodeExit] = []             # every exit on its own, in order
        self.restarts: dict[str, int] = {spec.name: 0 for spec in self.specs}
        self._commands: dict[str, list[str]] = {}
        self._respawn_due: dict[str, float] = {}    # node name -> time.monotonic() of its restart
        self._stopping = False
        self._lock = threading.Lock()               # output
        self._state = threading.RLock()             # nodes / exits / respawns between poll() and stop()

    @property
    def failures(self) -> list[NodeExit]:
        """Exits on their own with a non-zero code or a signal."""
        return [record for record in self.exits if record.failed]

    def start(self, hold: tuple[str, ...] = ()) -> None:
        """Validate parameters and inputs, then start every node but those in ``hold`` (started later by
        ``release``). Raises ConfigError on bad input."""
        validate_parameters(self.specs, self.params_file)
        self._default_to_sample_drive()
        video = self.arguments.get("video")
        if video and not Path(video).is_file():
            raise ConfigError(f"video file not found: {video}")
        namespace = self.arguments.get("namespace", "")
        with self._state:
            for spec in self.specs:
                self._commands[spec.name] = node_command(spec, self.params_file,
                                                         parameter_overrides(spec, self.arguments), namespace)
                if spec.name not in hold:
                    self._spawn(spec)

    def release(self, name: str) -> None:
        """Start a node held back by ``start(hold=...)`` (e.g. the camera once the LLM is ready)."""
        with self._state:
            if self._stopping or any(node.spec.name == name for node in self.nodes):
                return
            self._spawn(next(spec for spec in self.specs if spec.name == name))

    def _spawn(self, spec: NodeSpec) -> None:
        process = subprocess.Popen(self._commands[spec.name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, env=self.env, start_new_session=True)
        lines: deque[str] = deque(maxlen=LAST_LINES)
        pump = threading.Thread(target=_pump, args=(spec.name, process.stdout, self.out, self._lock, lines),
                                daemon=True)
        pump.start()
        node = RunningNode(spec, process, pump, lines)
        # a respawned node replaces its dead predecessor
        self.nodes = [n for n in self.nodes if n.spec.name != spec.name] + [node]
        self.log(f"started {spec.name} (pid {process.pid})")

    def _default_to_sample_drive(self) -> None:
        """With no camera input named anywhere, play the bundled sample drive in a loop.

        This machine has no camera; on a vehicle name one with --image-topic (or use ros2 launch).
        """
        camera = next((spec for spec in self.specs if "video" in spec.argument_overrides), None)
        if camera is None or any(self.arguments.get(name) for name in ("video", "image_topic")):
            return
        perception = read_parameter_file(self.params_file, camera.name)
        if any(perception.get(name) for name in ("video_path", "image_folder")) or \
                perception.get("webcam_index", -1) >= 0:
            return
        from fatigue_llm.sim.driver_video import ensure_sample_video

        video = ensure_sample_video()
        self.arguments = {**self.arguments, "video": str(video), "loop": self.arguments.get("loop") or "true"}
        self.log(f"no camera input given: playing the sample drive {video} in a loop "
                 "(use --image-topic TOPIC or --video FILE for your own)")

    def log(self, text: str) -> None:
        # one write for a multi-line report, so output filters see it whole
        block = "".join(f"[launch] {line}\n" for line in text.split("\n"))
        with self._lock:
            self.out.write(block)
            self.out.flush()

    def running(self) -> list[RunningNode]:
        return [node for node in self.nodes if node.process.poll() is None]

    def poll(self) -> bool:
        """Report nodes that exited on their own, start due respawns. True while anything runs or will."""
        with self._state:
            if self._stopping:
                return False
            self._collect_exits(respawn=True)
            now = time.monotonic()
            for name, due in list(self._respawn_due.items()):
                if due <= now:
                    del self._respawn_due[name]
                    self.restarts[name] += 1
                    self._spawn(next(spec for spec in self.specs if spec.name == name))
            return bool(self.running() or self._respawn_due)

    def _collect_exits(self, respawn: bool) -> None:
        for node in self.nodes:
            if node.reported or node.process.poll() is None:
                continue
            node.reported = True
            node.pump.join(timeout=1.0)  # its last lines may still be in the pipe
            code = node.process.returncode
            record = NodeExit(node.spec.name, code, _signal_name(code), tuple(node.lines), time.time(),
                              node.spec.respawn)
            self.exits.append(record)
            report = record.describe()
            if record.failed and record.last_lines:
                report += f"\n  last {len(record.last_lines)} lines of {record.name}:"
                report += "".join(f"\n    {line}" for line in record.last_lines)
            self.log(report)
            if respawn and node.spec.respawn:
                delay = node.spec.respawn_delay
                self.log(f"respawning {record.name} in {delay:g} s (restart #{self.restarts[record.name] + 1})")
                self._respawn_due[record.name] = time.monotonic() + delay

    def wait(self, stop: threading.Event, poll_s: float = 0.2) -> None:
        """Block until ``stop`` is set or every node has exited for good, reporting exits as they happen."""
        while self.poll() and not stop.wait(poll_s):
            pass

    def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """Stop all nodes (cancelling pending respawns). Returns non-zero when a node failed.

        The status is the worst of: a non-respawning node that failed on its own (its code, or
        128 + signal number) and a node that exited non-zero when we stopped it.
        """
        with self._state:
            self._collect_exits(respawn=False)  # exits before now were the nodes' own
            self._stopping = True
            self._respawn_due.clear()
            stopped = [node for node in self.nodes if not node.reported]
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
        # an interrupted node exits 0 or -SIGINT; anything else positive is a real failure
        statuses = [code for node in stopped if (code := node.process.returncode or 0) > 0]
        statuses += [record.exit_status for record in self.failures if not record.respawn]
        self.log("all nodes stopped")
        return max(statuses, default=0)


def run_launcher(launcher: Launcher, duration_s: float | None = None) -> int:
    """Start, wait for Ctrl-C/SIGTERM (or ``duration_s``, or every node gone), stop. Returns the exit code."""
    stop = threading.Event()

    def request_stop(signum, _frame) -> None:
        launcher.log(f"received {signal.Signals(signum).name}, stopping nodes")
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    timer = threading.Timer(duration_s, stop.set) if duration_s is not None else None
    try:
        launcher.start()
        if timer is not None:
            timer.start()
        launcher.wait(stop)
    finally:
        if timer is not None:
            timer.cancel()
        code = launcher.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


def run_launch(launch: str, params_file: str | None, arguments: dict[str, str],
               duration_s: float | None = None) -> int:
    """CLI body of ``fatigue-llm launch``. Returns the exit code."""
    return run_launcher(Launcher(launch, Path(params_file) if params_file else None, arguments), duration_s)
