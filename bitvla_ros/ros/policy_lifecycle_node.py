"""The managed (lifecycle) policy node: the same node as policy_node, driven by lifecycle transitions.

configure loads the model and warms it up (the transition ends when the policy can run); activate
lets it command; deactivate stops commanding and publishes the hold (`hold_command`); cleanup drops
the model and every subscription, publisher and timer. `~/reset` clears a fault while active; there
is no `~/enable`: activation is the enable. Parameters are declared at construction, so they can be
set before configure.
"""

from __future__ import annotations

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rcl_interfaces.msg import SetParametersResult

from bitvla_ros.ros.params import check
from bitvla_ros.ros.policy_node import PARAMS, SWAP_PARAMS, PolicyInterface, declare_policy_parameters
from bitvla_ros.ros.spin import make_executor, run


class PolicyLifecycleNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("bitvla_policy", **kwargs)
        self.values = declare_policy_parameters(self)
        self.policy: PolicyInterface | None = None
        self.add_on_set_parameters_callback(self._check_unconfigured)

    def _check_unconfigured(self, params) -> SetParametersResult:
        """Before configure (and after cleanup) only the parameter table's own limits apply."""
        if self.policy is not None:
            return SetParametersResult(successful=True)  # the interface validates
        try:
            check(PARAMS, {p.name: p.value for p in params})
        except ValueError as e:
            return SetParametersResult(successful=False, reason=str(e))
        self.values.update({p.name: p.value for p in params})
        return SetParametersResult(successful=True)

    def on_configure(self, state) -> TransitionCallbackReturn:
        if not self.values["model_path"]:
            self.get_logger().error("configure needs model_path (a model folder)")
            return TransitionCallbackReturn.FAILURE
        policy = None
        try:
            policy = PolicyInterface(self, self.values)
            policy.load({n: self.values[n] for n in SWAP_PARAMS})
        except Exception as e:  # noqa: BLE001 - any failure fails the transition (rclpy would not log it)
            self.get_logger().error(f"configure: could not load {self.values['model_path']!r}: "
                                    f"{type(e).__name__}: {e}")
            if policy is not None:
                policy.close()
            return TransitionCallbackReturn.FAILURE
        self.policy = policy
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self.policy.set_enabled(True)
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self.policy.set_enabled(False)
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._drop()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        if self.policy is not None and self.policy.runner.enabled:
            self.policy.set_enabled(False)
        self._drop()
        return TransitionCallbackReturn.SUCCESS

    def _drop(self) -> None:
        if self.policy is not None:
            self.policy.close()
            self.policy = None

    def make_executor(self):
        return make_executor(self.values["executor"])

    def destroy_node(self):
        self._drop()
        return super().destroy_node()


def main(args=None) -> None:
    run(PolicyLifecycleNode, args=args)


if __name__ == "__main__":
    main()
