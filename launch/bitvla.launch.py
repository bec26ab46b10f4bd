"""Run BitVLA on a robot: the policy node, and the demonstration recorder with record:=true.

    ros2 launch bitvla_ros bitvla.launch.py model_path:=/path/to/model
    ros2 launch bitvla_ros bitvla.launch.py record:=true run_policy:=false dataset_dir:=~/datasets/task
    ros2 launch bitvla_ros bitvla.launch.py model_path:=/path/to/model managed:=true   # lifecycle node

With managed:=true the policy is the lifecycle node (policy_lifecycle_node): it waits unconfigured
for a lifecycle manager or `ros2 lifecycle set /bitvla_policy configure`, then `activate`.

Every parameter lives in the params files (config/policy.yaml, config/recorder.yaml, each one
commented); the launch arguments below override the few that change from run to run.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node


def overrides(values: dict) -> dict:
    """Launch arguments that were given (non-empty) become parameter overrides."""
    return {name: value for name, value in values.items() if value != ""}


def nodes(context):
    arg = lambda name: context.launch_configurations[name]  # noqa: E731
    sim_time = {"use_sim_time": arg("use_sim_time").lower() == "true"}
    out = []
    if arg("run_policy").lower() == "true":
        executable = "policy_lifecycle_node" if arg("managed").lower() == "true" else "policy_node"
        out.append(Node(package="bitvla_ros", executable=executable, name="bitvla_policy", output="screen",
                        parameters=[arg("policy_params"), sim_time, overrides({"model_path": arg("model_path")})]))
    if arg("record").lower() == "true":
        out.append(Node(package="bitvla_ros", executable="recorder_node", name="bitvla_recorder", output="screen",
                        parameters=[arg("recorder_params"), sim_time, overrides({"dataset_dir": arg("dataset_dir")})]))
    return out


def generate_launch_description():
    share = get_package_share_directory("bitvla_ros")
    return LaunchDescription([
        DeclareLaunchArgument("policy_params", default_value=os.path.join(share, "config", "policy.yaml"),
                              description="parameter file of bitvla_policy"),
        DeclareLaunchArgument("recorder_params", default_value=os.path.join(share, "config", "recorder.yaml"),
                              description="parameter file of bitvla_recorder"),
        DeclareLaunchArgument("model_path", default_value="", description="model folder ('' = the params file's)"),
        DeclareLaunchArgument("run_policy", default_value="true", description="start the policy node"),
        DeclareLaunchArgument("managed", default_value="false",
                              description="run the lifecycle (managed) policy node instead of the plain one"),
        DeclareLaunchArgument("record", default_value="false", description="start the recorder node"),
        DeclareLaunchArgument("dataset_dir", default_value="", description="recorder output ('' = the params file's)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="follow /clock"),
        OpaqueFunction(function=nodes),
    ])
