"""Pure-Python core of the policy node: observation assembly, chunk scheduling, safety (no rclpy)."""
