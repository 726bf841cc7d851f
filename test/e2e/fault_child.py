"""A stand-in node for the launcher fault tests: plain Python, no ROS.

Run by the launcher as ``python -m test.e2e.fault_child --ros-args -r __node:=NAME --params-file F ...``;
it reads its behaviour from its section of the parameter file (like a real node) and ignores the
other ROS arguments. Each start appends its pid to ``starts_file``; the first ``crashes`` starts
print ``lines`` lines and then ``fail`` ("SIGSEGV", "SIGILL", ... or an exit code); later starts
print "ready" and run until signalled.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fatigue_llm.config import load_config


@dataclass(frozen=True)
class FaultConfig:
    lines: int = 3
    fail: str = "SIGSEGV"     # a signal name, or an exit code such as "3"
    crashes: int = 1          # how many starts fail; -1: every start
    starts_file: str = ""


def _ros_arg(argv: list[str], flag: str, prefix: str = "") -> str:
    for i, value in enumerate(argv[:-1]):
        if value == flag and argv[i + 1].startswith(prefix):
            return argv[i + 1][len(prefix):]
    raise SystemExit(f"fault_child: no {flag} {prefix}... in {argv}")


def main(argv: list[str]) -> int:
    name = _ros_arg(argv, "-r", "__node:=")
    config = load_config(FaultConfig, _ros_arg(argv, "--params-file"), name)
    starts = Path(config.starts_file)
    with starts.open("a") as file:
        file.write(f"{os.getpid()}\n")
    start = len(starts.read_text().split())
    if config.crashes < 0 or start <= config.crashes:
        for i in range(1, config.lines + 1):
            print(f"[INFO] {name} start {start} line {i}", flush=True)
        if config.fail.lstrip("-").isdigit():
            return int(config.fail)
        os.kill(os.getpid(), signal.Signals[config.fail])
        time.sleep(5)  # a signal that does not kill: fall through to a distinct code
        return 99
    print(f"{name} start {start} ready", flush=True)
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    while True:
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
