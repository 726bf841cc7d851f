"""ament_python package fatigue_llm (the repository root). Nodes come from fatigue_llm.nodeset."""

import importlib.util
import sys
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "fatigue_llm"


def _nodeset():
    # load the node-set description without importing the package (no dependencies needed)
    spec = importlib.util.spec_from_file_location("_nodeset", Path(__file__).parent / PACKAGE / "nodeset.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["intervention/data/*.csv", "llm/data/*.gguf", "llm/data/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="fatigue_llm developers",
    maintainer_email="dev@fatigue-llm.invalid",
    description="Driver-fatigue perception, features and on-device LLM interventions for ROS 2",
    license="Apache-2.0",
    entry_points={"console_scripts": _nodeset().console_scripts()},
)
