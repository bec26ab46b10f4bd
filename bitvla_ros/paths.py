"""Where the package's shipped files are: the ROS install's share/ folder, or the source tree."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "bitvla-libero-goal-demo"


def share_dir() -> Path:
    """share/bitvla_ros of a ROS install (colcon), else the repository root (a pip/editable install
    does not install data files)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            share = Path(get_package_share_directory("bitvla_ros"))
            if (share / "models").is_dir():
                return share
        except (PackageNotFoundError, OSError):  # OSError: no ROS environment sourced (AMENT_PREFIX_PATH)
            pass
    except ImportError:
        pass
    return Path(__file__).resolve().parent.parent


def default_model() -> Path:
    return share_dir() / "models" / DEFAULT_MODEL
