"""A scripted pick-and-place expert for LIBERO, driven by privileged simulator state.

It reads the goal (On/In(A, B)) from the task's BDDL, plans a grasp of A from its collision boxes and a
release point over B, then runs a fixed sequence of phases, each a P-controller towards a target:

    approach → pregrasp → descend → close → lift → carry → lower → release → retreat → idle

- approach/pregrasp/descend: above the grasp point at a safe height, 3 cm above the grasp height
  (orientation settled first), then the grasp height, slowly.
- close: gripper closes for 12 steps while holding position.
- lift: straight up to a carry height at which A's bottom clears what lies near the straight path to
  B (an obstacle further from the path counts lower, so the height varies smoothly with the scene).
- carry/lower: A's body origin (what LIBERO's predicates test) is servoed to the goal xy (B's origin;
  for a level region, its point nearest the robot that still holds all of A), then A's bottom is
  lowered to 1 cm above the support (3 cm above a container's floor for In). Both read A's pose
  from the sim every step, so the object-to-gripper offset is corrected continuously.
- release: gripper opens for 10 steps; retreat: 8 cm straight up; idle: no motion, gripper open.

A phase ends when its target is reached, when a contact phase stalls, or at its timeout. There is no
randomness, so every init state gets the same strategy (the demonstrations are meant to be imitated).
One recovery: when the object is no longer held during lift, carry or lower (it moved more than
LOST_GRASP away from where it sat in the hand at the end of `close`, e.g. it slipped under the
execution noise of DART-style recording, bitvla_ros/sim/dart.py), the expert plans again from the
scene as it now is and starts over from approach, at most MAX_REGRASPS times. `act()` only reads the
observation and the sim; the only state it changes is its own.

Facts used (docs/libero.md): OSC_POSE delta actions in the world frame (±1 = ±5 cm,
±0.5 rad), gripper −1 = open; fingers close along the gripper's local y axis; start pose points down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bitvla_ros.sim.gripper import quat_xyzw_to_matrix
from bitvla_ros.sim.libero_env import LiberoEnv, Observation
from bitvla_ros.sim.scene import Scene

OPEN, CLOSE = -1.0, 1.0
POS_GAIN, ROT_GAIN = 12.0, 2.0          # action per metre / per radian of error
SLOW = 0.5                              # position action cap near contact
DOWN = np.diag([1.0, -1.0, -1.0])       # gripper pointing down at yaw 0 (π about x)

# Grasp geometry (metres).
APPROACH_CLEARANCE = 0.08   # above the object's top before going down
PREGRASP_HEIGHT = 0.03      # above the grasp height
FINGER_REACH_BELOW = 0.012  # fingertips reach this far below the grip site: grasp no lower than bottom + this
GRASP_DEPTH = 0.035         # grip this far below an object's top
BOWL_RIM_RADIUS = 0.041     # rim grasp point from the bowl's centre
BOWL_RIM_DEPTH = 0.02       # rim grasp this far below the bowl's top
FINGER_HALF_OPEN = 0.04     # each finger's distance from the grip site when open
CARRY_CLEARANCE = 0.03      # A's bottom above anything near the carry path
CLEARANCE_SLOPE = 1.0       # an obstacle this much lower per metre further from the carry path counts
RELEASE_ON = 0.01           # A's bottom above B's support when released
RELEASE_IN = 0.03           # ... above a container's floor
RETREAT = 0.08
ROUND_FOOTPRINT = 1.3       # eigenvalue ratio under which a footprint has no narrow side
LOST_GRASP = 0.04           # object this far from its place in the hand: it is no longer held
MAX_REGRASPS = 2
HELD_PHASES = ("lift", "carry", "lower")


@dataclass(frozen=True)
class Plan:
    obj: str                 # A, the object to move
    grasp: np.ndarray        # grip-site position of the grasp (3,)
    yaw: float               # gripper yaw for the grasp and the carry
    safe_z: float            # approach height above the grasp point
    target_xy: np.ndarray    # where A's body origin goes (2,)
    release_bottom: float    # A's bottom height at release
    target_name: str


@dataclass(frozen=True)
class Phase:
    name: str
    gripper: float
    timeout: int             # steps
    tol: float = 0.008       # position tolerance (m)
    cap: float = 1.0         # position action cap
    steps: int = 0           # fixed duration (close/release), 0 = until reached


PHASES = (
    Phase("approach", OPEN, 80, tol=0.02),
    Phase("pregrasp", OPEN, 40, tol=0.01),
    Phase("descend", OPEN, 30, tol=0.005, cap=SLOW),
    Phase("close", CLOSE, 12, steps=12),
    Phase("lift", CLOSE, 50, tol=0.015),
    Phase("carry", CLOSE, 100, tol=0.007),
    Phase("lower", CLOSE, 60, tol=0.005),   # P-control slows it within ~8 cm of the release height
    Phase("release", OPEN, 10, steps=10),
    Phase("retreat", OPEN, 30, tol=0.01),
    Phase("idle", OPEN, 10**9, steps=10**9),
)


class ScriptedExpert:
    def __init__(self, env: LiberoEnv):
        self.env = env
        self.reset()

    def reset(self) -> None:
        """Forget the episode; the plan is made from the scene at the next `act()`."""
        self.plan: Plan | None = None
        self._scene: Scene | None = None     # built with the plan: a hard env reset replaces the sim
        self.regrasps = 0
        self._start_over()

    def _start_over(self) -> None:
        """Back to the first phase; the plan is made again at the next `act()`."""
        self.plan = None
        self._phase = 0
        self._t = 0                      # steps spent in the current phase
        self._hold: np.ndarray | None = None   # position held by fixed-duration phases
        self._carry_z = 0.0
        self._lift_xy = np.zeros(2)
        self._retreat_from = np.zeros(3)
        self._hang = 0.0                 # grip site height above A's bottom while held
        self._in_hand = np.zeros(3)      # A's origin relative to the grip site when grasped
        self._z_history: list[float] = []

    @property
    def phase(self) -> str:
        return PHASES[self._phase].name

    @property
    def done(self) -> bool:
        """The script has run to its end (placed, released and retreated)."""
        return self.phase == "idle"

    def act(self, obs: Observation) -> np.ndarray:
        """The next env action [dpos 3, drot 3, gripper] (env convention, −1 = open) for `obs`."""
        if self.plan is not None and PHASES[self._phase].name in HELD_PHASES and self.regrasps < MAX_REGRASPS \
                and self._lost(obs):
            self.regrasps += 1
            self._start_over()
        if self.plan is None:
            self._scene = self._scene or Scene(self.env.domain)
            self.plan = make_plan(self._scene, self.env.domain.parsed_problem["goal_state"], obs)
        scene = self._scene
        # A phase that ends now hands this same step to the next one, so no step is spent idle.
        for _ in range(len(PHASES)):
            phase = PHASES[self._phase]
            target, reached = self._target(phase, scene, obs)
            if not (reached or self._t >= phase.timeout):
                break
            self._next_phase(phase, scene, obs)
        self._t += 1
        self._z_history.append(float(obs.eef_pos[2]))
        return command(obs, target, self.plan.yaw, phase.gripper, phase.cap)

    # ---- phases ------------------------------------------------------------------------------

    def _target(self, phase: Phase, scene: Scene, obs: Observation) -> tuple[np.ndarray, bool]:
        """This step's grip-site target, and whether the phase has done its job."""
        plan, eef = self.plan, obs.eef_pos
        if phase.steps:
            if self._hold is None:
                self._hold = eef.copy()
            return self._hold, self._t >= phase.steps
        if phase.name == "approach":
            target = np.array([*plan.grasp[:2], plan.safe_z])
            return target, self._near(eef, target, phase.tol) and self._oriented(obs, 0.1)
        if phase.name == "pregrasp":
            target = plan.grasp + [0.0, 0.0, PREGRASP_HEIGHT]
            return target, self._near(eef, target, phase.tol) and self._oriented(obs, 0.05)
        if phase.name == "descend":
            return plan.grasp, self._near(eef, plan.grasp, phase.tol) or self._stalled()
        if phase.name == "lift":
            target = np.array([*self._lift_xy, self._carry_z])
            return target, self._near(eef, target, phase.tol)
        if phase.name in ("carry", "lower"):
            lo, _ = scene.extent(plan.obj)
            xy_error = plan.target_xy - scene.origin(plan.obj)[:2]
            z = self._carry_z if phase.name == "carry" else eef[2] + plan.release_bottom - lo[2]
            target = np.array([*(eef[:2] + xy_error), z])
            if phase.name == "carry":
                return target, np.linalg.norm(xy_error) < phase.tol and abs(z - eef[2]) < 0.02
            return target, abs(plan.release_bottom - lo[2]) < phase.tol or self._stalled()
        if phase.name == "retreat":
            target = self._retreat_from + [0.0, 0.0, RETREAT]
            return target, self._near(eef, target, phase.tol)
        raise AssertionError(f"no target rule for phase {phase.name!r}")

    def _next_phase(self, ended: Phase, scene: Scene, obs: Observation) -> None:
        plan, eef = self.plan, obs.eef_pos
        if ended.name == "close":
            # The object still rests on its support: measure how far it hangs below the grip site,
            # then lift high enough that its bottom clears everything near the path to the target.
            lo, hi = scene.extent(plan.obj)
            self._hang = eef[2] - lo[2]
            self._in_hand = scene.origin(plan.obj) - eef
            radius = 0.5 * float(np.linalg.norm(hi[:2] - lo[:2])) + 0.02
            clear = scene.clearance_height((lo[:2] + hi[:2]) / 2, plan.target_xy, radius, CLEARANCE_SLOPE,
                                           scene.other_geoms(plan.obj))
            bottom = max(plan.release_bottom, clear if clear is not None else -np.inf) + CARRY_CLEARANCE
            self._carry_z = max(bottom + self._hang, eef[2])
            self._lift_xy = eef[:2].copy()
        if ended.name == "release":
            self._retreat_from = eef.copy()
        self._phase += 1
        self._t = 0
        self._hold = None
        self._z_history = []

    # ---- tests -------------------------------------------------------------------------------

    @staticmethod
    def _near(eef: np.ndarray, target: np.ndarray, tol: float) -> bool:
        return bool(np.linalg.norm(target - eef) < tol)

    def _lost(self, obs: Observation) -> bool:
        """The object is not where it sat in the hand: it slipped or was never grasped."""
        drift = self._scene.origin(self.plan.obj) - obs.eef_pos - self._in_hand
        return bool(np.linalg.norm(drift) > LOST_GRASP)

    def _oriented(self, obs: Observation, tol: float) -> bool:
        return np.linalg.norm(rotation_error(obs, self.plan.yaw)) < tol

    def _stalled(self, window: int = 4, still: float = 0.0015) -> bool:
        """No height change over the last `window` steps (pressing on a contact), after a start-up."""
        h = self._z_history
        return len(h) >= 2 * window and abs(h[-1] - h[-window]) < still


# ---- control law ---------------------------------------------------------------------------------


def command(obs: Observation, target: np.ndarray, yaw: float, gripper: float, cap: float) -> np.ndarray:
    """P-control towards the target pose. The position step keeps its direction when capped (the
    largest component saturates), so moves are straight lines."""
    move = POS_GAIN * (np.asarray(target) - obs.eef_pos)
    largest = np.max(np.abs(move))
    if largest > cap:
        move *= cap / largest
    turn = np.clip(ROT_GAIN * rotation_error(obs, yaw), -1.0, 1.0)
    return np.concatenate([move, turn, [gripper]])


def target_rotation(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ DOWN


def rotation_error(obs: Observation, yaw: float) -> np.ndarray:
    """Axis-angle (world frame) of R_target · R_currentᵀ: the rotation still to do."""
    return rotation_vector(target_rotation(yaw) @ quat_xyzw_to_matrix(obs.eef_quat).T)


def rotation_vector(r: np.ndarray) -> np.ndarray:
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    angle = math.acos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if angle > math.pi - 1e-4:  # the skew part vanishes near π: take the axis from the diagonal
        axis = np.sqrt(np.maximum((np.diag(r) + 1.0) / 2.0, 0.0))
        return axis * angle
    return axis / (2.0 * math.sin(angle)) * angle


def gripper_yaw(obs: Observation) -> float:
    """Current yaw of the downward gripper: the angle of its local x axis in the world xy plane."""
    r = quat_xyzw_to_matrix(obs.eef_quat)
    return math.atan2(r[1, 0], r[0, 0])


def yaw_closing_along(direction, current_yaw: float) -> float:
    """Gripper yaw whose fingers close along the xy `direction`, the one nearest the current yaw.

    The fingers close along the gripper's local y axis, (sin yaw, −cos yaw) in the world.
    """
    base = math.atan2(direction[0], -direction[1])
    k = round((current_yaw - base) / math.pi)
    return base + k * math.pi


# ---- planning ------------------------------------------------------------------------------------


def make_plan(scene: Scene, goal_state, obs: Observation) -> Plan:
    if len(goal_state) != 1:
        raise NotImplementedError(f"expected a single-predicate goal, got {goal_state}")
    predicate = str(goal_state[0][0]).lower()
    if predicate not in ("on", "in") or len(goal_state[0]) != 3:
        raise NotImplementedError(f"expected an On or In goal (pick and place), got {goal_state[0]}")
    obj, target = goal_state[0][1], goal_state[0][2]
    grasp, yaw = plan_grasp(scene, obj, gripper_yaw(obs))
    _, hi = scene.extent(obj)
    target_xy, release_bottom = plan_release(scene, predicate, obj, target)
    # The arm never dips on its way to the object: approach at the start height or above.
    safe_z = max(hi[2] + APPROACH_CLEARANCE, float(obs.eef_pos[2]))
    return Plan(obj, grasp, yaw, safe_z, target_xy, release_bottom, target)


def plan_grasp(scene: Scene, obj: str, current_yaw: float) -> tuple[np.ndarray, float]:
    """Grip-site position and gripper yaw for picking `obj` from above."""
    lo, hi = scene.extent(obj)
    centre = (lo + hi) / 2
    if "bowl" in obj:
        # Wider than the 8 cm opening: pinch the rim wall, fingers closing along the radius.
        direction = rim_direction(scene, obj, centre, hi[2] - BOWL_RIM_DEPTH)
        grasp = np.array([*(centre[:2] + BOWL_RIM_RADIUS * direction), hi[2] - BOWL_RIM_DEPTH])
        return grasp, yaw_closing_along(direction, current_yaw)
    grasp = np.array([centre[0], centre[1], max(lo[2] + FINGER_REACH_BELOW, hi[2] - GRASP_DEPTH)])
    points = scene.footprint(obj)
    values, vectors = np.linalg.eigh(np.cov((points - points.mean(0)).T))
    if values[1] < ROUND_FOOTPRINT * values[0]:
        return grasp, current_yaw  # round: any yaw works, so do not turn
    return grasp, yaw_closing_along(vectors[:, 0], current_yaw)  # close across the narrow side


def rim_direction(scene: Scene, obj: str, centre: np.ndarray, grasp_z: float) -> np.ndarray:
    """Side of the bowl to grasp: ±y first (no wrist turn from the start pose), ±x only if both y sides
    are crowded; within a pair, the side whose outer finger has more free room."""
    others = scene.other_geoms(obj)
    lo, hi = scene.boxes(others)
    # Only geoms at the height of the fingers and the hand matter.
    level = (hi[:, 2] > grasp_z - 0.02) & (lo[:, 2] < grasp_z + 0.10)
    lo, hi = lo[level, :2], hi[level, :2]

    def room(direction):
        finger = centre[:2] + (BOWL_RIM_RADIUS + FINGER_HALF_OPEN) * np.asarray(direction)
        if len(lo) == 0:
            return np.inf
        gap = np.maximum(lo - finger, 0) + np.maximum(finger - hi, 0)
        return float(np.linalg.norm(gap, axis=1).min())

    for pair in (((0.0, 1.0), (0.0, -1.0)), ((1.0, 0.0), (-1.0, 0.0))):
        best = max(pair, key=room)
        if room(best) > 0.03:
            return np.array(best)
    return np.array(max(((0.0, 1.0), (0.0, -1.0), (1.0, 0.0), (-1.0, 0.0)), key=room))


def plan_release(scene: Scene, predicate: str, obj: str, target: str) -> tuple[np.ndarray, float]:
    """(xy for A's origin, height of A's bottom) at release."""
    if scene.is_site(target):
        pos, half = scene.site_pos(target), scene.site_half_size(target)
        xy = near_side_of_region(scene, obj, target, margin_extra=0.01 if predicate == "in" else 0.0)
        if predicate == "in":
            return xy, pos[2] - half[2] + RELEASE_IN
        support = pos[2] + half[2]
        parent = scene.site_parent(target)
        if parent is not None:
            top = scene.top_under(xy, scene.geoms(parent))
            support = max(support, top if top is not None else -np.inf)
        return xy, support + RELEASE_ON
    xy = scene.origin(target)[:2]
    top = scene.top_under(xy, scene.geoms(target))
    if top is None:
        raise ValueError(f"expected {target!r} to have geometry under its origin to place on, found none")
    return xy, top + (RELEASE_IN if predicate == "in" else RELEASE_ON)


def near_side_of_region(scene: Scene, obj: str, site: str, margin_extra: float) -> np.ndarray:
    """Point of a level goal region nearest the robot at which A still lies wholly inside it.

    The predicates accept A's origin anywhere in the region, and the far side of a large region (the
    cabinet top) is near the arm's reach, where it moves slowly. A tilted region (the wine rack's) is
    used at its centre.
    """
    centre, rot = scene.site_pos(site)[:2], scene.data.get_site_xmat(site)
    if abs(rot[2, 2]) < 0.99:
        return centre
    half = np.abs(rot[:2, :2]) @ scene.site_half_size(site)[:2]        # world-axis half extents
    lo, hi = scene.extent(obj)
    margin = 0.5 * float(np.max(hi[:2] - lo[:2])) + margin_extra
    reach = np.maximum(half - margin, 0.0)
    return np.clip(scene.robot_base_xy(), centre - reach, centre + reach)
