"""launch/bitvla.launch.py: imports and describes the nodes where launch_ros is installed (a ROS
install); on a pip-only machine it is skipped. The executables and parameter files it starts are
exercised as processes everywhere (test_policy_node.py)."""

import importlib.util
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parent.parent / "launch" / "bitvla.launch.py"


def _load():
    spec = importlib.util.spec_from_file_location("bitvla_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overrides_keep_only_given_arguments():
    pytest.importorskip("launch_ros")
    assert _load().overrides({"model_path": "", "dataset_dir": "/d"}) == {"dataset_dir": "/d"}


def test_launch_describes_policy_and_optional_recorder(monkeypatch):
    pytest.importorskip("launch_ros")
    from launch import LaunchContext

    module = _load()
    monkeypatch.setattr(module, "get_package_share_directory", lambda name: str(LAUNCH.parent.parent))
    description = module.generate_launch_description()
    context = LaunchContext()
    for action in description.entities:
        if type(action).__name__ == "DeclareLaunchArgument":
            context.launch_configurations[action.name] = action.default_value[0].text
    assert [n.node_executable for n in module.nodes(context)] == ["policy_node"]
    context.launch_configurations["record"] = "true"
    assert [n.node_executable for n in module.nodes(context)] == ["policy_node", "recorder_node"]
    context.launch_configurations["managed"] = "true"
    assert [n.node_executable for n in module.nodes(context)] == ["policy_lifecycle_node", "recorder_node"]


@pytest.mark.parametrize("params_file,module,node", [("policy.yaml", "policy_node", "bitvla_policy"),
                                                     ("recorder.yaml", "recorder_node", "bitvla_recorder"),
                                                     ("sim.yaml", "sim_node", "bitvla_sim")])
def test_params_files_set_only_declared_parameters_with_their_types(params_file, module, node):
    """ROS ignores a key the node does not declare (a typo would silently keep the default) and
    refuses a value of another type than the default's (1 for a double): check both."""
    import importlib

    import yaml

    pytest.importorskip("rclpy")
    declared = {p.name: p.default for p in importlib.import_module(f"bitvla_ros.ros.{module}").PARAMS}
    values = yaml.safe_load((LAUNCH.parent.parent / "config" / params_file).read_text())[node]["ros__parameters"]
    assert set(values) <= set(declared), set(values) - set(declared)
    for name, value in values.items():
        default = declared[name]
        assert type(value) is type(default), (name, value, default)
        if isinstance(default, list) and default:
            assert all(type(v) is type(default[0]) for v in value), (name, value, default)
