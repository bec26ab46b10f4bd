"""ament_python build of bitvla_ros (colcon) and editable install into the dev venv (`make setup`)."""

import os
import xml.etree.ElementTree as ET

from setuptools import find_packages, setup

PACKAGE = "bitvla_ros"
HERE = os.path.dirname(os.path.abspath(__file__))
# Folders installed whole to share/bitvla_ros/<same path>, subfolders kept.
SHARED_FOLDERS = ("launch", "config", "models")


def shared_tree(folder):
    """data_files entries for every file under `folder` (paths relative to this file)."""
    entries = []
    for root, dirs, files in os.walk(os.path.join(HERE, folder)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        rel = os.path.relpath(root, HERE)
        if files:
            entries.append(
                (os.path.join("share", PACKAGE, rel), [os.path.join(rel, f) for f in sorted(files)])
            )
    return entries


setup(
    name=PACKAGE,
    # package.xml is the one place the version is written.
    version=ET.parse(os.path.join(HERE, "package.xml")).findtext("version"),
    description="BitVLA (ternary vision-language-action model) as a ROS 2 robot policy",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(exclude=["test", "test.*", "bench", "bench.*"]),
    # C++ sources of the cpu kernel backend, compiled on first use (bitvla_ros/kernels/cpu.py).
    package_data={"bitvla_ros.kernels": ["csrc/*.cpp", "csrc/*.h"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ]
    + [entry for folder in SHARED_FOLDERS for entry in shared_tree(folder)],
    # Empty on purpose (ROS convention): dependencies are declared in package.xml for rosdep and
    # pinned in requirements.txt for pip. Listing them here as well would let `pip install .`
    # resolve torch on its own and pull a multi-GB CUDA build instead of the pinned CPU wheel.
    install_requires=[],
    entry_points={
        "console_scripts": [
            "bitvla = bitvla_ros.cli:main",
            # `ros2 run bitvla_ros <name>`
            "policy_node = bitvla_ros.ros.policy_node:main",
            "policy_lifecycle_node = bitvla_ros.ros.policy_lifecycle_node:main",
            "recorder_node = bitvla_ros.ros.recorder_node:main",
            "sim_node = bitvla_ros.ros.sim_node:main",
        ],
    },
)
