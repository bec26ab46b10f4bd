"""The ament_python package metadata: package.xml, setup.py's data_files, the resource marker."""

import ast
import os
import runpy
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from unittest import mock

import pytest

import bitvla_ros

REPO = Path(__file__).resolve().parent.parent

# Import name -> rosdep key, for the Python libraries the code imports. None: an optional extra
# that package.xml does not name (each one is pinned in requirements*.txt and imported only where
# it is used, with an actionable error or a fallback without it). Any other top-level import that
# is neither the standard library nor this package is a ROS package, named as it is imported.
PYTHON_KEYS = {
    "numpy": "python3-numpy", "yaml": "python3-yaml", "cv2": "python3-opencv", "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib", "PIL": "python3-pil", "jinja2": "python3-jinja2", "pytest": "python3-pytest",
    "torch": "python3-pytorch-pip", "transformers": "python3-transformers-pip", "safetensors": "python3-safetensors-pip",
    "tokenizers": "python3-tokenizers-pip", "pyarrow": "python3-pyarrow-pip", "bitsandbytes": "python3-bitsandbytes-pip",
    "av": "python3-av", "rosbags": "python3-rosbags-pip",
    "triton": None,  # the cuda backend (NVIDIA only; the registry skips it without triton)
    "simplejpeg": None,  # TensorFlow's JPEG decoding for the published LIBERO protocol (OpenCV otherwise)
    "libero": None,  # the simulation (requirements-sim.txt)
}  # fmt: skip


def imported_packages(*folders: str) -> dict[str, set[str]]:
    """Top-level third-party imports of the .py files under ``folders``, with the files importing them."""
    local = {"bitvla_ros"} | {p.stem for p in (REPO / "test").glob("*.py")} | {
        p.name for p in (REPO / "test").iterdir() if p.is_dir()}
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in local:
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def dependency_keys(imports: dict[str, set[str]]) -> dict[str, str]:
    """rosdep key -> a file that needs it."""
    keys = {}
    for name, files in imports.items():
        key = PYTHON_KEYS.get(name, name)  # a ROS package is its own key
        if key is not None:
            keys[key] = min(files)
    return keys
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


def test_package_xml_names_every_package_the_code_imports(package_xml):
    run = {e.text for tag in ("depend", "exec_depend") for e in package_xml.iter(tag)}
    tests = {e.text for e in package_xml.iter("test_depend")}
    needed = dependency_keys(imported_packages("bitvla_ros", "launch"))
    missing = {key: f for key, f in needed.items() if key not in run}
    assert not missing, f"add an <exec_depend> to package.xml for each (key: a file importing it): {missing}"
    for_tests = dependency_keys(imported_packages("test"))
    missing = {key: f for key, f in for_tests.items() if key not in run | tests}
    assert not missing, f"add a <test_depend> to package.xml for each (key: a file importing it): {missing}"
    unused = (run - set(needed)) | (tests - set(for_tests))
    assert not unused, f"package.xml names what no code imports; drop them or import them: {sorted(unused)}"


def test_import_scan_sees_ros_packages_and_maps_python_libraries():
    needed = dependency_keys(imported_packages("bitvla_ros"))
    assert {"rclpy", "rosgraph_msgs", "builtin_interfaces", "sensor_msgs"} <= set(needed)
    assert needed["python3-numpy"].startswith("bitvla_ros/")
    assert not {"os", "json", "bitvla_ros", "triton", "libero"} & set(needed)


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
