"""Thin rclpy shells over the pure-Python core: policy, recorder and sim nodes."""
