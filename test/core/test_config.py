"""Typed configs load from the same ROS 2 parameter file the nodes use, with clear errors."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from fatigue_llm.config import ConfigError, load_config, read_parameter_file
from fatigue_llm.features.config import FeatureConfig
from fatigue_llm.intervention.config import InterventionConfig
from fatigue_llm.nodeset import VEHICLE_NODES
from fatigue_llm.perception.config import PerceptionConfig


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_vehicle_yaml_loads_every_node_and_overrides_defaults(repo):
    params = repo / "config" / "vehicle.yaml"
    features = load_config(FeatureConfig, params, "feature_processor")
    intervention = load_config(InterventionConfig, params, "intervention")
    perception = load_config(PerceptionConfig, params, "perception")
    assert features.perclos_window == 60.0
    assert intervention.critical_perclos == 0.30
    assert perception.microsleep_duration == 1.0
    # every key in the file is a real parameter of its node (a typo would silently do nothing)
    for spec in VEHICLE_NODES:  # each node's own config class, as the launcher validates it
        module, _, name = spec.config.partition(":")
        config_class = getattr(importlib.import_module(module), name)
        names = set(read_parameter_file(params, spec.name))
        known = set(config_class.__dataclass_fields__)
        assert names <= known, f"{spec.name}: unknown parameters {sorted(names - known)}"


def test_sections_apply_in_ros_precedence(tmp_path):
    path = write(tmp_path, """
/**:
  ros__parameters: {publish_period: 5.0, perclos_window: 30.0}
/**/feature_processor:
  ros__parameters: {publish_period: 2.0}
""")
    config = load_config(FeatureConfig, path, "feature_processor")
    assert (config.publish_period, config.perclos_window) == (2.0, 30.0)
    assert load_config(FeatureConfig, path, "other_node").publish_period == 5.0


def test_integer_is_accepted_for_float_but_string_is_not(tmp_path):
    ok = write(tmp_path, "/**:\n  ros__parameters: {perclos_window: 45}\n")
    assert load_config(FeatureConfig, ok, "x").perclos_window == 45.0
    bad = write(tmp_path, "/**:\n  ros__parameters: {perclos_window: 'long'}\n")
    with pytest.raises(ConfigError, match=r"params.yaml.*'perclos_window'.*'long'"):
        load_config(FeatureConfig, bad, "x")


def test_malformed_files_name_the_file_and_problem(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(FeatureConfig, write(tmp_path, "/**: [unclosed"), "x")
    with pytest.raises(ConfigError, match="ros__parameters"):
        load_config(FeatureConfig, write(tmp_path, "/**:\n  params: {}\n"), "x")
    with pytest.raises(ConfigError, match="cannot read parameter file"):
        load_config(FeatureConfig, tmp_path / "missing.yaml", "x")


def test_validation_rejects_inconsistent_values(tmp_path):
    path = write(tmp_path, "/**:\n  ros__parameters: {warning_perclos: 0.5, critical_perclos: 0.3}\n")
    with pytest.raises(ConfigError, match="critical_perclos"):
        load_config(InterventionConfig, path, "intervention")
    path = write(tmp_path, "/**:\n  ros__parameters: {video_path: a.mp4, image_folder: frames}\n")
    with pytest.raises(ConfigError, match="at most one of"):
        load_config(PerceptionConfig, path, "perception")
