"""Typed node configuration loaded from the same YAML file that ROS parameters use.

Each node has one frozen dataclass of parameters. The parameter file follows the ROS 2
format (``/**: ros__parameters: {...}``); each node reads the flat parameters it declares,
named by dotted paths (``perception.perclos_window``). The same dataclass drives both
``declare_parameter`` in the node and plain-Python loading in tests and CLIs, so there is
one list of names, types and defaults.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

PARAMETER_KEY = "ros__parameters"


class ConfigError(ValueError):
    """A parameter file or value is invalid; the message names the file, field and value."""


def _field_types(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce_value(value: Any, expected: type, where: str) -> Any:
    """Check one parameter value against its declared type (ints are accepted for floats)."""
    origin = typing.get_origin(expected)
    if origin in (list, tuple):
        (item_type, *_) = typing.get_args(expected) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(coerce_value(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if math.isnan(float(value)):
            raise ConfigError(f"{where}: NaN is not allowed")
        return float(value)
    if expected is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported parameter type {expected!r}")


def parameter_items(cls: type) -> list[tuple[str, Any]]:
    """(parameter name, default) pairs of a config dataclass, for ``declare_parameter``."""
    items = []
    for field in dataclasses.fields(cls):
        default = field.default
        if default is dataclasses.MISSING:
            default = field.default_factory()  # type: ignore[misc]
        if isinstance(default, tuple):
            default = list(default)
        items.append((field.name, default))
    return items


def config_from_mapping(cls: type[T], values: dict[str, Any], source: str = "<parameters>") -> T:
    """Build a config dataclass from parameter values, validating every field.

    Unknown names are ignored: one parameter file serves every node, and each node takes
    only the names it declares (as rclpy does).
    """
    types = _field_types(cls)
    kwargs = {
        name: coerce_value(values[name], expected, f"{source}: parameter '{name}'")
        for name, expected in types.items()
        if name in values
    }
    config = cls(**kwargs)
    validate = getattr(config, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None
    return config


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def read_parameter_file(path: str | Path, node_name: str) -> dict[str, Any]:
    """Flat parameters for ``node_name`` from a ROS 2 parameter file.

    Sections apply in ROS order of precedence: ``/**`` first, then ``/**/<node>``, then
    ``<node>`` or ``/<node>``, the later overriding the earlier.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read parameter file ({error.strerror})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of node names to 'ros__parameters'")
    merged: dict[str, Any] = {}
    for section in ("/**", f"/**/{node_name}", node_name, f"/{node_name}"):
        body = document.get(section)
        if body is None:
            continue
        if not isinstance(body, dict) or PARAMETER_KEY not in body:
            raise ConfigError(f"{path}: section '{section}' has no '{PARAMETER_KEY}' mapping")
        params = body[PARAMETER_KEY]
        if not isinstance(params, dict):
            raise ConfigError(f"{path}: '{section}.{PARAMETER_KEY}' must be a mapping")
        merged.update(_flatten(params))
    return merged


def load_config(cls: type[T], path: str | Path, node_name: str) -> T:
    """Load the config dataclass of one node from a ROS 2 parameter file."""
    return config_from_mapping(cls, read_parameter_file(path, node_name), source=str(path))
