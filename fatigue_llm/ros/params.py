"""Bridge between typed config dataclasses and ROS 2 parameters."""

from __future__ import annotations

import dataclasses
import typing
from typing import TypeVar

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from fatigue_llm.config import config_from_mapping, parameter_items

T = TypeVar("T")


def declare_config(node: Node, cls: type[T]) -> T:
    """Declare every field of ``cls`` as a node parameter and return the validated config.

    Values come from ``--params-file`` / ``-p`` overrides, defaults from the dataclass.
    Raises fatigue_llm.config.ConfigError naming the parameter and value when invalid.
    """
    hints = typing.get_type_hints(cls)
    comments = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
    for name, default in parameter_items(cls):
        descriptor = ParameterDescriptor(description=comments.get(name, ""), read_only=True)
        if hints[name] is float:
            # accept "30" for a float parameter instead of failing on the int type
            descriptor.dynamic_typing = True
        node.declare_parameter(name, default, descriptor)
    values = {name: node.get_parameter(name).value for name, _ in parameter_items(cls)}
    return config_from_mapping(cls, values, source=f"node '{node.get_fully_qualified_name()}'")
