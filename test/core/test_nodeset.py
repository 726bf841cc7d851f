"""One node-set description feeds setup.py, the launch file and our launcher."""

from __future__ import annotations

import ast
import importlib.util
import sys
from importlib.metadata import entry_points

import pytest

from fatigue_llm.nodeset import LAUNCHES, VEHICLE_NODES, NodeSpec, console_scripts, parameter_overrides
from fatigue_llm.ros.launcher import node_command


def test_installed_console_scripts_cover_every_node():
    installed = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    for spec in VEHICLE_NODES:
        assert installed.get(spec.executable) == f"{spec.module}:main", spec.executable
        module = importlib.import_module(spec.module)
        assert callable(module.main)
    assert installed.get("fatigue-llm") == "fatigue_llm.cli:main"
    assert len(console_scripts()) == len(VEHICLE_NODES) + 1


def test_launch_file_is_valid_python_with_generate_launch_description(repo):
    source = (repo / "launch" / "vehicle.launch.py").read_text()
    tree = ast.parse(source)
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    # it takes the nodes from the shared description, not from a list of its own
    assert "LAUNCHES" in source and "executable=spec.executable" in source


def test_launch_file_builds_with_launch_ros_when_available(repo):
    pytest.importorskip("launch_ros", reason="launch_ros is not installable from PyPI here")
    spec = importlib.util.spec_from_file_location("vehicle_launch", repo / "launch" / "vehicle.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert description.entities


def test_our_launcher_uses_the_same_nodes_and_overrides(tmp_path):
    specs, arguments = LAUNCHES["vehicle"]
    assert {a.name for a in arguments} >= {"params_file", "video", "namespace"}
    assert all(a.description for a in arguments)
    perception = specs[0]
    overrides = parameter_overrides(perception, {"video": "/tmp/v.mp4", "image_topic": ""})
    assert overrides == {"video_path": "/tmp/v.mp4"}
    command = node_command(perception, tmp_path / "p.yaml", overrides, "car1")
    assert command[:3] == [sys.executable, "-m", perception.module]
    assert "__node:=perception" in command and "__ns:=/car1" in command
    assert "video_path:=/tmp/v.mp4" in command


def test_launcher_plays_the_sample_drive_only_when_no_camera_input_is_named(repo, tmp_path, monkeypatch):
    from fatigue_llm.ros.launcher import Launcher

    monkeypatch.chdir(tmp_path)  # the sample is generated under ./build/sample
    params = repo / "config" / "vehicle.yaml"
    named = Launcher("vehicle", params, {"image_topic": "/cam"})
    named._default_to_sample_drive()
    assert "video" not in named.arguments
    bare = Launcher("vehicle", params, {})
    bare._default_to_sample_drive()
    video = tmp_path / bare.arguments["video"]
    assert video.is_file() and video.stat().st_size > 100_000
    assert bare.arguments["loop"] == "true"
    overrides = parameter_overrides(VEHICLE_NODES[0], bare.arguments)
    assert overrides["video_path"] == bare.arguments["video"] and overrides["loop"] == "true"


def test_node_specs_respawn_fields_default_off_and_the_launch_file_passes_them(repo):
    plain = NodeSpec(name="n", executable="n_node", module="m", config="m:C")
    assert (plain.respawn, plain.respawn_delay) == (False, 0.0)
    llm = NodeSpec(name="llm", executable="llm_node", module="m", config="m:C", respawn=True, respawn_delay=2.0)
    assert (llm.respawn, llm.respawn_delay) == (True, 2.0)
    with pytest.raises(ValueError, match="respawn_delay"):
        NodeSpec(name="n", executable="n_node", module="m", config="m:C", respawn_delay=-1.0)
    source = (repo / "launch" / "vehicle.launch.py").read_text()
    node_call = next(node for node in ast.walk(ast.parse(source))
                     if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Node")
    keywords = {kw.arg: ast.unparse(kw.value) for kw in node_call.keywords}
    assert keywords["respawn"] == "spec.respawn" and keywords["respawn_delay"] == "spec.respawn_delay"


def test_our_launcher_takes_explicit_specs_and_keeps_the_named_launch(repo):
    from fatigue_llm.ros.launcher import Launcher

    params = repo / "config" / "vehicle.yaml"
    specs = (NodeSpec(name="llm", executable="llm_node", module="m", config="m:C", respawn=True, respawn_delay=2.0),)
    explicit = Launcher("test", params, {}, specs=specs)
    assert explicit.specs == specs and explicit.restarts == {"llm": 0} and explicit.failures == []
    named = Launcher("vehicle", params, {})
    assert named.specs == LAUNCHES["vehicle"][0]
    explicit._default_to_sample_drive()  # no node takes a video: nothing to default
    assert "video" not in explicit.arguments
