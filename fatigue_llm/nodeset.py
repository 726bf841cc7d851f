"""The one description of the vehicle node set.

Both ``launch/vehicle.launch.py`` (launch_ros, on a real ROS 2 install) and
``fatigue-llm launch vehicle`` (our process launcher) build their nodes from ``LAUNCHES``,
and ``setup.py`` builds the console scripts from it, so there is one list to keep.
This module must stay import-light: setup.py and launch files import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PACKAGE = "fatigue_llm"
DEFAULT_PARAMS = "config/vehicle.yaml"  # relative to the package share directory / repo root


@dataclass(frozen=True)
class NodeSpec:
    name: str            # ROS node name
    executable: str      # console script installed by setup.py (``ros2 run fatigue_llm <executable>``)
    module: str          # python module with ``main()``
    config: str          # "module:Class" of the node's typed config
    # launch argument -> node parameter it overrides (only when the argument is non-empty)
    argument_overrides: dict[str, str] = field(default_factory=dict)
    # launch_ros semantics: a process that exits on its own (not at shutdown) is started
    # again after respawn_delay seconds
    respawn: bool = False
    respawn_delay: float = 0.0

    def __post_init__(self) -> None:
        if self.respawn_delay < 0:
            raise ValueError(f"node {self.name}: respawn_delay must be >= 0, got {self.respawn_delay}")

    @property
    def entry_point(self) -> str:
        return f"{self.executable} = {self.module}:main"


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


VEHICLE_NODES: tuple[NodeSpec, ...] = (
    NodeSpec(
        name="perception",
        executable="perception_node",
        module="fatigue_llm.perception.node",
        config="fatigue_llm.perception.config:PerceptionConfig",
        argument_overrides={"video": "video_path", "image_topic": "image_topic", "vehicle_csv": "vehicle_csv",
                            "loop": "loop"},
    ),
    NodeSpec(
        name="feature_processor",
        executable="feature_processor_node",
        module="fatigue_llm.features.node",
        config="fatigue_llm.features.config:FeatureConfig",
    ),
    # The cabin microphone in its own process (never slows the camera path): idle unless `source` is set.
    NodeSpec(
        name="audio",
        executable="audio_node",
        module="fatigue_llm.audio.node",
        config="fatigue_llm.audio.config:AudioConfig",
    ),
    NodeSpec(
        name="intervention",
        executable="intervention_node",
        module="fatigue_llm.intervention.node",
        config="fatigue_llm.intervention.config:InterventionConfig",
    ),
    # The on-device LLM apart from the safety path: when its process dies (native crash, OOM kill,
    # watchdog exit on a hang), it is started again; the alerts never stopped meanwhile.
    NodeSpec(
        name="llm",
        executable="llm_node",
        module="fatigue_llm.llm.node",
        config="fatigue_llm.llm.config:LlmConfig",
        respawn=True,
        respawn_delay=2.0,
    ),
)

VEHICLE_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("params_file", "", "ROS 2 parameter file for all nodes (default: the package's "
                   "config/vehicle.yaml)"),
    LaunchArgument("video", "", "Video file to use as the driver camera (empty: subscribe to image_topic)"),
    LaunchArgument("image_topic", "", "sensor_msgs/Image topic of the driver camera (empty: the "
                   "parameter file's value)"),
    LaunchArgument("vehicle_csv", "", "CSV of vehicle signals to replay with the video (optional)"),
    LaunchArgument("loop", "", "Restart the video at its end: true/false (empty: the parameter file's value)"),
    LaunchArgument("namespace", "", "Namespace for all nodes and their topics"),
)

LAUNCHES: dict[str, tuple[tuple[NodeSpec, ...], tuple[LaunchArgument, ...]]] = {
    "vehicle": (VEHICLE_NODES, VEHICLE_ARGUMENTS),
}


def console_scripts() -> list[str]:
    """Entry points for setup.py: one per node plus the ``fatigue-llm`` tool."""
    nodes = [spec.entry_point for specs, _ in LAUNCHES.values() for spec in specs]
    return sorted(set(nodes)) + ["fatigue-llm = fatigue_llm.cli:main"]


def parameter_overrides(spec: NodeSpec, arguments: dict[str, str]) -> dict[str, str]:
    """Node parameters set by non-empty launch arguments."""
    return {param: arguments[arg] for arg, param in spec.argument_overrides.items() if arguments.get(arg)}
