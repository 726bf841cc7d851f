"""DDS settings for an in-vehicle computer where every node runs on one host.

Applied as defaults only: anything the user already set (a domain, a discovery range, their own
Fast DDS profile) wins. Import-light (no rclpy), because it must run before rclpy initialises.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

FASTDDS_PROFILE = "config/fastdds_local.xml"


def package_file(relative: str) -> Path | None:
    """A file of the package: in the source tree, or installed under <prefix>/share/fatigue_llm."""
    here = Path(__file__).resolve().parents[2]
    for candidate in (here / relative, Path(sys.prefix) / "share" / "fatigue_llm" / relative):
        if candidate.is_file():
            return candidate
    return None


def apply_local_dds_defaults(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Keep discovery on this host and carry camera-sized messages through shared memory."""
    env = os.environ if env is None else env
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    profile = package_file(FASTDDS_PROFILE)
    user_profile = "FASTRTPS_DEFAULT_PROFILES_FILE" in env or "FASTDDS_DEFAULT_PROFILES_FILE" in env
    if profile is not None and not user_profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    return env
