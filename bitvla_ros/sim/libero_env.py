"""One LIBERO task as the published BitVLA eval runs it (docs/libero.md), minus the model.

`reset(i)` loads LIBERO's i-th init state and runs the protocol's 10 settle steps (no motion,
gripper open); the observation after them is what a policy sees first. `step(a)` takes an env-convention
action (−1 = open, +1 = close) and returns the next observation and whether the task is solved
(the env's done flag, as the eval counts success). Images are rotated 180° to upright, as the eval
feeds them to the model; the proprio is the eval's 8-D state.

Rendering is offscreen with EGL unless MUJOCO_GL is already set; `cameras=False` skips rendering
entirely, which is ~15x faster (docs/libero.md) and what the scripted expert needs.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass

import numpy as np

from bitvla_ros.sim.gripper import quat_xyzw_to_axis_angle

# Must be set before mujoco/robosuite are imported anywhere in the process.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

# Max policy steps per episode after the settle steps.
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
SETTLE_STEPS = 10
SETTLE_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)  # no motion, gripper open
CAMERAS = ("agentview", "robot0_eye_in_hand")


@dataclass(frozen=True)
class Observation:
    agentview: np.ndarray | None     # (H, W, 3) uint8 RGB, upright (rotated 180°); None with cameras off
    wrist: np.ndarray | None         # (H, W, 3) uint8 RGB, upright; None with cameras off
    proprio: np.ndarray              # (8,) eef pos 3, eef axis-angle 3, gripper qpos 2
    eef_pos: np.ndarray              # (3,) world frame, the grip site between the finger pads
    eef_quat: np.ndarray             # (4,) xyzw (robosuite convention)
    gripper_qpos: np.ndarray         # (2,) [q, −q]; q ≈ 0.04 fully open


def observation_from(raw: dict, cameras: bool) -> Observation:
    """The wrapper's Observation from a robosuite observation dict."""
    eef_pos = np.asarray(raw["robot0_eef_pos"], dtype=np.float64).copy()
    eef_quat = np.asarray(raw["robot0_eef_quat"], dtype=np.float64).copy()
    gripper_qpos = np.asarray(raw["robot0_gripper_qpos"], dtype=np.float64).copy()
    proprio = np.concatenate([eef_pos, quat_xyzw_to_axis_angle(eef_quat), gripper_qpos])
    agentview = wrist = None
    if cameras:
        # Offscreen renders come out upside down; the eval flips both axes (a 180° rotation).
        agentview = np.ascontiguousarray(raw["agentview_image"][::-1, ::-1])
        wrist = np.ascontiguousarray(raw["robot0_eye_in_hand_image"][::-1, ::-1])
    return Observation(agentview, wrist, proprio, eef_pos, eef_quat, gripper_qpos)


@contextlib.contextmanager
def numpy_seed(seed: int):
    """Seed numpy's global RNG (LIBERO samples layouts from it) and restore its state afterwards, so
    the rest of the process sees no change."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


class LiberoEnv:
    def __init__(self, suite: str, task_id: int, image_size: int = 128, cameras: bool = True, seed: int = 0):
        from libero.libero import benchmark
        from libero.libero.envs import OffScreenRenderEnv

        suites = benchmark.get_benchmark_dict()
        if suite not in suites or suite not in MAX_STEPS:
            raise ValueError(f"expected a LIBERO suite among {sorted(MAX_STEPS)}, got {suite!r}")
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its task order on creation
            bench = suites[suite]()
        if not 0 <= task_id < bench.get_num_tasks():
            raise ValueError(f"expected a task id in 0..{bench.get_num_tasks() - 1} for {suite}, got {task_id}")
        self.suite, self.task_id, self.cameras = suite, task_id, cameras
        self.instruction: str = bench.get_task(task_id).language
        self._init_states = bench.get_task_init_states(task_id)
        # hard_reset=False: reset() keeps the compiled MuJoCo model (0.02 s instead of 1.5 s); the
        # init state then overwrites qpos/qvel (reset() handles what it does not cover).
        self.seed = seed
        with numpy_seed(seed):  # creation samples a layout too
            self._env = OffScreenRenderEnv(
                bddl_file_name=bench.get_task_bddl_file_path(task_id),
                use_camera_obs=cameras,
                camera_names=list(CAMERAS),
                camera_heights=image_size,
                camera_widths=image_size,
                hard_reset=False,
            )
        self.steps = 0  # policy steps since the last reset, settle steps not counted

    @property
    def num_init_states(self) -> int:
        return len(self._init_states)

    @property
    def max_steps(self) -> int:
        """Policy steps the eval allows after the settle steps."""
        return MAX_STEPS[self.suite]

    @property
    def env(self):
        """LIBERO's OffScreenRenderEnv (ControlEnv): `check_success`, `get_sim_state`, `set_state`."""
        return self._env

    @property
    def domain(self):
        """The BDDL task env underneath: `sim`, `parsed_problem`, `obj_body_id`, `objects_dict`, ..."""
        return self._env.env

    @property
    def sim(self):
        return self._env.sim

    def reset(self, init_state: int) -> Observation:
        """Load init state `init_state` and run the 10 settle steps; return the observation after them.

        LIBERO's init states are not at rest with this mujoco build (objects start inside the floor or
        above their support), and the eval waits 10 no-op steps with the gripper open before the
        policy's first step; those steps are run here and not counted in `steps`.

        The init states hold the movable objects and the robot, not the fixtures (cabinet, stove, rack):
        LIBERO places those at random on every reset, from numpy's global RNG (two draws seen here
        differed by about a centimetre). Here that draw is seeded from (seed, init_state), so an
        episode does not depend on the ones before it (the eval's draws depend on the episode order).
        """
        if not 0 <= init_state < self.num_init_states:
            raise ValueError(f"expected an init state in 0..{self.num_init_states - 1}, got {init_state}")
        with numpy_seed(int(np.random.SeedSequence([self.seed, init_state]).generate_state(1)[0])):
            self._env.reset()
        # A soft reset keeps the gripper model, and with it the gripper's ramped command from the last
        # episode, so the settle steps would open the fingers at a speed that depends on how that
        # episode ended. A hard reset (what the eval does) builds a new gripper with the command at 0.
        for robot in self.domain.robots:
            robot.gripper.current_action = np.zeros(robot.gripper.dof)
        self._env.set_init_state(self._init_states[init_state])
        for _ in range(SETTLE_STEPS):
            raw, _, _, _ = self._env.step(SETTLE_ACTION)
        self.steps = 0
        return observation_from(raw, self.cameras)

    def step(self, env_action) -> tuple[Observation, bool]:
        """One 20 Hz control step with [dpos 3, drot 3, gripper] in env convention; (obs, success)."""
        action = np.asarray(env_action, dtype=np.float64)
        if action.shape != (7,) or not np.all(np.isfinite(action)):
            raise ValueError(f"expected a finite 7-vector env action, got shape {action.shape}: {action}")
        raw, _, done, _ = self._env.step(action)
        self.steps += 1
        return observation_from(raw, self.cameras), bool(done)

    def sim_state(self) -> np.ndarray:
        """The flattened MuJoCo state (for recording now and rendering later)."""
        return self._env.get_sim_state()

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def __enter__(self) -> LiberoEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
