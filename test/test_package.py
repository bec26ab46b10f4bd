"""The ament_python package metadata: package.xml, setup.py's data_files, the resource marker."""

import os
import runpy
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from unittest import mock

import pytest

import bitvla_ros

REPO = Path(__file__).resolve().parent.parent
RUN_DEPENDS = {
    "rclpy", "sensor_msgs", "std_msgs", "trajectory_msgs", "diagnostic_msgs", "std_srvs",
    "launch", "launch_ros",
    "python3-numpy", "python3-yaml", "python3-opencv", "python3-tqdm",
    "python3-pytorch-pip", "python3-transformers-pip", "python3-safetensors-pip",
    "python3-bitsandbytes-pip",
}  # fmt: skip


def run_setup_py(root: Path) -> dict:
    """The keyword arguments root/setup.py passes to setuptools.setup(), without building."""
    old = Path.cwd()
    os.chdir(root)  # as pip and colcon run it: packages and data_files are relative to the cwd
    try:
        with mock.patch("setuptools.setup") as setup:
            runpy.run_path("setup.py", run_name="__main__")
    finally:
        os.chdir(old)
    (kwargs,) = [c.kwargs for c in setup.call_args_list]
    return kwargs


@pytest.fixture(scope="module")
def package_xml():
    return ET.parse(REPO / "package.xml").getroot()


def test_package_xml_is_format_3_ament_python(package_xml):
    assert package_xml.get("format") == "3"
    assert package_xml.findtext("name") == "bitvla_ros"
    assert package_xml.findtext("license") == "Apache-2.0"
    assert package_xml.findtext("maintainer") == "bitvla_ros maintainers"
    assert package_xml.findtext("export/build_type") == "ament_python"


def test_package_xml_names_every_dependency(package_xml):
    run = {e.text for tag in ("depend", "exec_depend") for e in package_xml.iter(tag)}
    assert RUN_DEPENDS <= run, f"missing: {sorted(RUN_DEPENDS - run)}"
    assert "python3-pytest" in {e.text for e in package_xml.iter("test_depend")}


def test_versions_agree(package_xml):
    assert bitvla_ros.__version__ == package_xml.findtext("version")
    assert run_setup_py(REPO)["version"] == package_xml.findtext("version")


def test_resource_marker_exists():
    assert (REPO / "resource" / "bitvla_ros").is_file()


def test_setup_installs_marker_manifest_and_shared_folders():
    kwargs = run_setup_py(REPO)
    data_files = {dest: list(files) for dest, files in kwargs["data_files"]}
    assert data_files["share/ament_index/resource_index/packages"] == ["resource/bitvla_ros"]
    assert data_files["share/bitvla_ros"] == ["package.xml"]
    for folder in ("launch", "config", "models"):
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                rel = path.relative_to(REPO)
                assert str(rel) in data_files.get(f"share/bitvla_ros/{rel.parent}", []), rel
    assert "bitvla = bitvla_ros.cli:main" in kwargs["entry_points"]["console_scripts"]
    assert "bitvla_ros" in kwargs["packages"]
    assert not any(p.split(".")[0] in ("test", "bench") for p in kwargs["packages"])


def test_setup_keeps_subfolders_of_shared_folders(tmp_path):
    for name in ("setup.py", "package.xml"):
        shutil.copy(REPO / name, tmp_path / name)
    for rel in ("launch/demo.launch.py", "config/policy.yaml", "models/tiny/config.json",
                "models/tiny/tokenizer/tokenizer.json"):  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    data_files = dict(run_setup_py(tmp_path)["data_files"])
    assert data_files["share/bitvla_ros/launch"] == ["launch/demo.launch.py"]
    assert data_files["share/bitvla_ros/config"] == ["config/policy.yaml"]
    assert data_files["share/bitvla_ros/models/tiny"] == ["models/tiny/config.json"]
    assert data_files["share/bitvla_ros/models/tiny/tokenizer"] == [
        "models/tiny/tokenizer/tokenizer.json"
    ]
    assert "share/bitvla_ros/models" not in data_files  # no entry for a folder without files
