"""Launch the fatigue_llm vehicle node set on a ROS 2 install (ros2 launch fatigue_llm vehicle.launch.py).

Nodes, parameters and arguments come from fatigue_llm.nodeset, the same description that
``fatigue-llm launch vehicle`` uses where launch_ros is not available.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from fatigue_llm.nodeset import DEFAULT_PARAMS, LAUNCHES, PACKAGE, parameter_overrides
from launch import LaunchDescription

NODES, ARGUMENTS = LAUNCHES["vehicle"]


def _nodes(context):
    values = {arg.name: LaunchConfiguration(arg.name).perform(context) for arg in ARGUMENTS}
    params_file = values["params_file"] or os.path.join(get_package_share_directory(PACKAGE), DEFAULT_PARAMS)
    return [
        Node(
            package=PACKAGE,
            executable=spec.executable,
            name=spec.name,
            namespace=values["namespace"],
            parameters=[params_file, parameter_overrides(spec, values)],
            output="screen",
            emulate_tty=True,
            respawn=spec.respawn,
            respawn_delay=spec.respawn_delay,  # launch waits only when > 0
        )
        for spec in NODES
    ]


def generate_launch_description():
    arguments = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
                 for a in ARGUMENTS]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
