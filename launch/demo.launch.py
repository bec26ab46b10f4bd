"""LIBERO in simulation with the BitVLA policy (and optionally the recorder), all on sim time.

    ros2 launch bitvla_ros demo.launch.py                    # the shipped default model
    ros2 launch bitvla_ros demo.launch.py task_id:=4 model_path:=/path/to/model
    ros2 launch bitvla_ros demo.launch.py expert:=true record:=true dataset_dir:=~/datasets/goal

Enable the policy with `ros2 service call /bitvla_policy/enable std_srvs/srv/SetBool "{data: true}"`
(`bitvla demo` / `bitvla eval` do all of this from one command, without ros2 launch).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node


def nodes(context):
    arg = lambda name: context.launch_configurations[name]  # noqa: E731
    share = get_package_share_directory("bitvla_ros")
    expert = arg("expert").lower() == "true"
    sim = Node(package="bitvla_ros", executable="sim_node", name="bitvla_sim", output="screen",
               parameters=[os.path.join(share, "config", "sim.yaml"),
                           {"task_id": int(arg("task_id")), "init_state": int(arg("init_state")), "expert": expert}])
    out = [sim]
    if not expert:
        model = arg("model_path") or os.path.join(share, "models", "bitvla-libero-goal-demo")
        out.append(Node(package="bitvla_ros", executable="policy_node", name="bitvla_policy", output="screen",
                        parameters=[os.path.join(share, "config", "policy.yaml"),
                                    {"model_path": model, "use_sim_time": True, "max_observation_age_s": 0.025}]))
    if arg("record").lower() == "true":
        recorder = {"use_sim_time": True, "sample_mode": "action" if expert else "rate"}
        if arg("dataset_dir"):
            recorder["dataset_dir"] = arg("dataset_dir")
        out.append(Node(package="bitvla_ros", executable="recorder_node", name="bitvla_recorder", output="screen",
                        parameters=[os.path.join(share, "config", "recorder.yaml"), recorder]))
    return out


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("task_id", default_value="1", description="libero_goal task"),
        DeclareLaunchArgument("init_state", default_value="40", description="LIBERO init state"),
        DeclareLaunchArgument("model_path", default_value="", description="model folder ('' = the shipped one)"),
        DeclareLaunchArgument("expert", default_value="false", description="the scripted expert drives instead"),
        DeclareLaunchArgument("record", default_value="false", description="also run the recorder"),
        DeclareLaunchArgument("dataset_dir", default_value="", description="recorder output"),
        OpaqueFunction(function=nodes),
    ])
