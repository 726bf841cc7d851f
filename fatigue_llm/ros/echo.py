"""``fatigue-llm echo TOPIC``: print messages as YAML, like ``ros2 topic echo``.

The message type is found in the ROS graph; the subscription's QoS follows the publishers'
(best effort if any publisher is best effort, so both kinds can be heard).
"""

from __future__ import annotations

import importlib
import math
import sys
import time
from typing import Any, TextIO

import rclpy
import yaml
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy


class EchoError(RuntimeError):
    """The topic or its type could not be resolved."""


def import_message_type(type_name: str) -> type:
    """'pkg/msg/Type' -> the Python message class. Raises EchoError if it cannot be imported."""
    parts = type_name.split("/")
    if len(parts) != 3:
        raise EchoError(f"not a message type name: {type_name!r} (expected pkg/msg/Type)")
    package, kind, name = parts
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as error:
        raise EchoError(f"cannot import message type {type_name}: {error}") from None


def message_to_data(msg: Any) -> Any:
    """A message as plain YAML-able data, fields in definition order."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {name: message_to_data(getattr(msg, name)) for name in msg.get_fields_and_field_types()}
    if isinstance(msg, (bytes, bytearray)):
        return list(msg)
    if hasattr(msg, "tolist"):  # numpy arrays of numeric fields
        return msg.tolist()
    if isinstance(msg, (list, tuple)):
        return [message_to_data(item) for item in msg]
    if isinstance(msg, float) and math.isnan(msg):
        return float("nan")
    return msg


def message_to_yaml(msg: Any) -> str:
    return yaml.safe_dump(message_to_data(msg), sort_keys=False, default_flow_style=False, width=120)


def _resolve_topic(node: Node, topic: str, deadline: float) -> tuple[str, type, QoSProfile]:
    while time.monotonic() < deadline:
        types = dict(node.get_topic_names_and_types()).get(topic)
        publishers = node.get_publishers_info_by_topic(topic)
        if types and publishers:
            best_effort = any(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers)
            reliability = ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE
            return types[0], import_message_type(types[0]), QoSProfile(depth=100, reliability=reliability)
        rclpy.spin_once(node, timeout_sec=0.1)
    raise EchoError(f"no publisher on {topic} appeared within the timeout")


def echo(topic: str, count: int | None, timeout_s: float | None, out: TextIO = sys.stdout) -> int:
    """Print messages until ``count`` arrived (0) or the timeout passed (1)."""
    if not topic.startswith("/"):
        topic = "/" + topic
    rclpy.init(args=[])
    node = rclpy.create_node(f"fatigue_llm_echo_{int(time.time() * 1000) % 10**9}")
    deadline = time.monotonic() + (timeout_s if timeout_s is not None else math.inf)
    received = 0

    def on_message(msg: Any) -> None:
        nonlocal received
        received += 1
        out.write(message_to_yaml(msg) + "---\n")
        out.flush()

    try:
        _, msg_type, qos = _resolve_topic(node, topic, deadline)
        node.create_subscription(msg_type, topic, on_message, qos)
        while (count is None or received < count) and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
    except EchoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    if count is not None and received < count:
        print(f"error: received {received} of {count} message(s) on {topic} before the timeout",
              file=sys.stderr)
        return 1
    return 0
