"""bitvla_ros: BitVLA (ternary vision-language-action model) as a ROS 2 robot policy."""

__version__ = "0.1.0"
