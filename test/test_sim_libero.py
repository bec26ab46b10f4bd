"""LIBERO wrapper and scripted expert, in a live simulation (skipped where LIBERO is not installed).

Run with the simulation venv: /work/simvenv/bin/python -m pytest -q test/test_sim_libero.py
"""

import numpy as np
import pytest

pytest.importorskip("libero")

# Third-party warnings raised while robosuite/LIBERO import and build scenes (pytest.ini makes
# warnings errors): robosuite's logger calls the deprecated Logger.warn.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning"),
]

from bitvla_ros.sim.expert import ScriptedExpert  # noqa: E402
from bitvla_ros.sim.libero_env import LiberoEnv  # noqa: E402
from bitvla_ros.sim.rollout import run_episode  # noqa: E402
from bitvla_ros.sim.scene import Scene  # noqa: E402

SIZE = 128
BOWL = "akita_black_bowl_1"


@pytest.fixture(scope="module")
def camera_env():
    with LiberoEnv("libero_goal", 1, image_size=SIZE, cameras=True) as env:
        yield env


@pytest.fixture(scope="module")
def blind_env():
    with LiberoEnv("libero_goal", 1, cameras=False) as env:
        yield env


def project(env, camera: str, point) -> np.ndarray:
    """(row, col) of a world point in an upright, unmirrored pinhole image of the camera."""
    m, d = env.sim.model, env.sim.data
    cam = m.camera_name2id(camera)
    rel = d.cam_xmat[cam].reshape(3, 3).T @ (np.asarray(point) - d.cam_xpos[cam])  # camera frame, looks along −z
    f = 0.5 * SIZE / np.tan(np.deg2rad(m.cam_fovy[cam]) / 2)
    return np.array([SIZE / 2 - f * rel[1] / -rel[2], SIZE / 2 + f * rel[0] / -rel[2]])


def test_reset_gives_upright_images_and_8d_proprio(camera_env):
    env = camera_env
    assert env.instruction == "put the bowl on the stove"
    assert env.max_steps == 300 and env.num_init_states == 50
    obs = env.reset(0)

    for image in (obs.agentview, obs.wrist):
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert obs.proprio.shape == (8,) and obs.proprio.dtype == np.float64
    np.testing.assert_array_equal(obs.proprio[:3], obs.eef_pos)
    np.testing.assert_array_equal(obs.proprio[6:], obs.gripper_qpos)
    assert obs.gripper_qpos[0] > 0.035, "the settle steps should leave the gripper open"
    # Start pose points down: π about x, so the axis-angle is about (±π, 0, 0).
    assert abs(abs(obs.proprio[3]) - np.pi) < 0.1 and np.all(np.abs(obs.proprio[4:6]) < 0.2)

    # The image is MuJoCo's offscreen buffer rotated by 180°...
    raw = env.sim.render(SIZE, SIZE, camera_name="agentview").astype(float)
    rotated_gap = np.abs(raw[::-1, ::-1] - obs.agentview).mean()
    assert rotated_gap < 2.0 < np.abs(raw - obs.agentview).mean()
    # ...which puts the bowl where a pinhole camera sees it upright (not upside down or mirrored).
    seg = env.sim.render(SIZE, SIZE, camera_name="agentview", segmentation=True)[::-1, ::-1]
    bowl_geoms = np.nonzero(env.sim.model.body_rootid[env.sim.model.geom_bodyid] == env.domain.obj_body_id[BOWL])[0]
    rows, cols = np.nonzero((seg[..., 0] == 5) & np.isin(seg[..., 1], bowl_geoms))  # 5 = mjOBJ_GEOM
    assert len(rows) > 20, "expected the bowl to be visible in agentview"
    lo, hi = Scene(env.domain).extent(BOWL)
    expected = project(env, "agentview", (lo + hi) / 2)
    assert np.linalg.norm([rows.mean(), cols.mean()] - expected) < 6, (rows.mean(), cols.mean(), expected)


def test_reset_is_reproducible(blind_env):
    first = blind_env.reset(3)
    for _ in range(5):
        blind_env.step([0.5, -0.5, 0.2, 0.0, 0.0, 0.3, 1.0])
    state = blind_env.sim_state()
    again = blind_env.reset(3)
    np.testing.assert_array_equal(first.proprio, again.proprio)
    for _ in range(5):
        blind_env.step([0.5, -0.5, 0.2, 0.0, 0.0, 0.3, 1.0])
    np.testing.assert_array_equal(state, blind_env.sim_state())
    assert first.agentview is None and first.wrist is None


def test_step_rejects_malformed_actions(blind_env):
    blind_env.reset(0)
    with pytest.raises(ValueError, match="7-vector"):
        blind_env.step(np.zeros(6))
    with pytest.raises(ValueError, match="7-vector"):
        blind_env.step([np.nan] * 7)
    with pytest.raises(ValueError, match="init state"):
        blind_env.reset(50)


def test_expert_solves_bowl_on_stove(blind_env):
    expert = ScriptedExpert(blind_env)
    episode = run_episode(blind_env, expert, 0)
    assert episode.success, f"not solved in {episode.steps} steps; phases {episode.phases}"
    assert episode.steps <= blind_env.max_steps
    assert [name for _, name in episode.phases][:5] == ["approach", "pregrasp", "descend", "close", "lift"]


def test_expert_actions_are_bounded_env_actions(blind_env):
    expert = ScriptedExpert(blind_env)
    obs = blind_env.reset(0)
    expert.reset()
    for _ in range(40):
        action = expert.act(obs)
        assert action.shape == (7,) and np.all(np.abs(action) <= 1.0) and action[6] in (-1.0, 1.0)
        obs, _ = blind_env.step(action)


def test_expert_solves_under_dart_noise_and_records_the_clean_action(blind_env):
    from bitvla_ros.sim.dart import NoisyExecution

    env = NoisyExecution(blind_env, sigma=0.1, noise_seed=0)
    expert = ScriptedExpert(env)
    labels, executed = [], []

    class Recording:  # what sim_node does: the label is the expert's action, the env perturbs it
        phase = property(lambda self: expert.phase)

        def reset(self):
            expert.reset()

        def act(self, obs):
            if env.last_executed is not None:
                executed.append(env.last_executed)
            labels.append(expert.act(obs))
            return labels[-1]

    episode = run_episode(env, Recording(), 0)
    assert episode.success, f"not solved under noise in {episode.steps} steps; phases {episode.phases}"
    executed.append(env.last_executed)
    labels, executed = np.array(labels), np.array(executed)
    assert labels.shape == executed.shape and np.all(np.abs(labels) <= 1.0)
    assert np.abs(executed[:, :6] - labels[:, :6]).mean() > 0.03  # the arm did not run the labels
    np.testing.assert_array_equal(executed[:, 6], labels[:, 6])


def test_expert_grasps_again_when_the_object_falls_from_the_hand(blind_env):
    """A slip during lift (teleported back to where it was grasped): the expert plans anew from the
    scene as it is and starts over, instead of carrying an empty hand to the target."""
    expert = ScriptedExpert(blind_env)
    sim = blind_env.sim
    state = {"dropped": False}

    class Slipping:
        phase = property(lambda self: expert.phase)

        def reset(self):
            expert.reset()

        def act(self, obs):
            if expert.phase == "lift" and "grasp" not in state:
                state["grasp"] = (obs.eef_pos[2], sim.data.qpos.copy())
            elif expert.phase == "lift" and not state["dropped"] and obs.eef_pos[2] > state["grasp"][0] + 0.05:
                body = blind_env.domain.obj_body_id[expert.plan.obj]
                adr = sim.model.jnt_qposadr[sim.model.body_jntadr[body]]
                sim.data.qpos[adr:adr + 7] = state["grasp"][1][adr:adr + 7]
                sim.data.qvel[:] = 0.0
                sim.forward()
                state["dropped"] = True
            return expert.act(obs)

    episode = run_episode(blind_env, Slipping(), 0)
    assert state["dropped"] and expert.regrasps == 1
    names = [name for _, name in episode.phases]
    assert names.count("approach") == 2 and names.index("lift") < names.index("approach", 1)
    assert episode.success, f"not solved after the slip in {episode.steps} steps; phases {episode.phases}"
