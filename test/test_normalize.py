"""q01/q99 normalization of proprio and actions; the gripper is left alone; key resolution."""

import json

import numpy as np
import pytest

import tiny
from bitvla_ros.model.normalize import NormStats, NormStatsError

TABLE = {"libero_goal_no_noops": {
    "action": {"q01": [-1.0, 0.0, 2.0], "q99": [1.0, 4.0, 2.0], "min": [-2.0, 0.0, 2.0], "max": [2.0, 5.0, 2.0],
               "mask": [True, True, False]},
    "proprio": {"q01": [0.0, -2.0], "q99": [1.0, 2.0]}}}


def test_unnormalize_hand_computed_and_gripper_untouched():
    s = NormStats.load(TABLE, "libero_goal")  # resolves with the _no_noops suffix
    out = s.unnormalize_actions(np.array([[0.0, -1.0, 0.7], [1.0, 0.5, -0.3]]))
    assert out[0, :2] == pytest.approx([0.0, 0.0], abs=1e-6)  # ε = 1e-8 in the denominator
    assert out[1, :2] == pytest.approx([1.0, 3.0], abs=1e-6)
    assert out[:, 2].tolist() == [0.7, -0.3]  # mask False: passed through


def test_normalize_proprio_clips_to_unit_range():
    s = NormStats.load(TABLE)
    assert s.normalize_proprio([0.5, 0.0]) == pytest.approx([0.0, 0.0], abs=1e-6)
    assert s.normalize_proprio([5.0, -9.0]) == pytest.approx([1.0, -1.0])


def test_normalize_then_unnormalize_actions_round_trips_inside_bounds():
    s = NormStats.load(tiny.statistics(), tiny.STATS_KEY)
    rng = np.random.default_rng(0)
    a = rng.uniform(s.action_q01, s.action_q99, (5, 7))
    a[:, 6] = rng.integers(0, 2, 5)  # gripper 0/1
    back = s.unnormalize_actions(s.normalize_actions(a))
    assert back == pytest.approx(a, abs=1e-6)


def test_constant_action_dims_normalize_to_zero():
    s = NormStats.load(TABLE)
    # dim 2 is masked off (passed through); make a masked dim constant to check the rule
    table = json.loads(json.dumps(TABLE))
    table["libero_goal_no_noops"]["action"]["min"][1] = table["libero_goal_no_noops"]["action"]["max"][1] = 3.0
    s = NormStats.load(table)
    assert s.normalize_actions([[0.0, 3.0, 2.0]])[0, 1] == 0.0


def test_missing_key_lists_available_keys(tmp_path):
    (tmp_path / "dataset_statistics.json").write_text(json.dumps(TABLE | {"other": TABLE["libero_goal_no_noops"]}))
    with pytest.raises(NormStatsError, match=r"no statistics for unnorm key 'libero_10'; available keys: "
                                             r"\['libero_goal_no_noops', 'other'\]"):
        NormStats.load(tmp_path, "libero_10")
    with pytest.raises(NormStatsError, match="several datasets"):
        NormStats.load(tmp_path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset_statistics.json"):
        NormStats.load(tmp_path)


def test_dimension_mismatch_is_a_clear_error():
    s = NormStats.load(TABLE)
    with pytest.raises(ValueError, match="proprio has 3 values, the statistics expect 2"):
        s.normalize_proprio([1.0, 2.0, 3.0])
