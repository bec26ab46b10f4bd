"""Evaluation discipline: init-state splits, several env seeds in one eval (per seed and pooled),
`bitvla select` on validation states only, and which states `bitvla record` may use. The episodes
are faked at the in-process rollout's entry point, so no simulator is needed."""

import json
from types import SimpleNamespace

import pytest

from bitvla_ros.cli import build_parser, main
from bitvla_ros.ros.evaluate import EvalConfig
from bitvla_ros.ros.record import RecordConfig
from bitvla_ros.sim import rollout_inprocess
from bitvla_ros.sim.selection import candidates, choose
from bitvla_ros.sim.splits import check_apart, describe, parse_ranges, ranges_text, split_states

INSTRUCTIONS = {1: "put the bowl on the stove", 9: "put the wine bottle on the rack"}


def test_splits_and_ranges():
    assert list(split_states("val")) == list(split_states("validation")) == [35, 36, 37, 38, 39]
    assert list(split_states("test")) == list(range(40, 50)) and list(split_states("train")) == list(range(35))
    assert parse_ranges("0-3, 7,5-6") == [0, 1, 2, 3, 7, 5, 6]
    assert ranges_text([7, 0, 1, 2, 5]) == "0–2, 5, 7" and describe(range(33, 41)) == "33–40 (train, validation, test)"
    for bad in ("3-1", "a-b", ""):
        with pytest.raises(ValueError, match="expected"):
            parse_ranges(bad)
    with pytest.raises(ValueError, match="overlap the test states"):
        check_apart([38, 39, 40], range(40, 50), "states", "the test states", "fix")
    with pytest.raises(ValueError, match="unknown"):
        split_states("unknown")


def test_eval_config_takes_a_split_and_several_seeds():
    cfg = EvalConfig(model="m", output="o", split="validation", seeds=[0, 3])
    assert (cfg.init_start, cfg.episodes, cfg.seeds) == (35, 5, [0, 3])
    assert EvalConfig(model="m", output="o", split="test", init_start=40, episodes=10).episodes == 10
    with pytest.raises(ValueError, match="expected no --init-start"):
        EvalConfig(model="m", output="o", split="test", init_start=35)
    with pytest.raises(ValueError, match="distinct env seeds"):
        EvalConfig(model="m", output="o", seeds=[1, 1])
    with pytest.raises(ValueError, match="0–49"):
        EvalConfig(model="m", output="o", init_start=45, episodes=10)
    args = build_parser().parse_args(["eval", "--model", "m", "--output", "o", "--seeds", "1,2", "--split", "test"])
    assert (args.seeds, args.split) == ([1, 2], "test")
    assert build_parser().parse_args(["eval", "--model", "m", "--output", "o", "--seed", "5"]).seeds == [5]


@pytest.fixture
def fake_rollouts(monkeypatch):
    """The in-process path with a stand-in predictor and rollout: success depends on seed and
    execute_steps, so that per-seed figures and the selection have something to tell apart."""
    calls = []

    def run_in_process(predictor, suite, tasks, episodes, init_start, image_size, env_seed, max_steps=0,
                       execute_steps=8, video_dir=None, log=print, make_env=None):
        calls.append({"seed": env_seed, "init_start": init_start, "episodes": episodes, "video_dir": video_dir,
                      "execute_steps": execute_steps})
        records = [{"task_id": t, "init_state": init_start + i, "instruction": INSTRUCTIONS[t],
                    "success": (i + env_seed + execute_steps) % 3 != 0 if execute_steps != 4 else i % 5 != 0,
                    "steps": 100, "reason": "success", "wall_s": 1.0}
                   for t in tasks for i in range(episodes)]
        return records, [0.01] * len(records)

    predictor = SimpleNamespace(model=SimpleNamespace(backend_name="fake"), summary=lambda: "backend fake",
                                processor=SimpleNamespace(image_pipeline="siglip"), stats=SimpleNamespace(key="k"))
    monkeypatch.setattr(rollout_inprocess, "run_in_process", run_in_process)
    monkeypatch.setattr("bitvla_ros.model.predict.BitVLAPredictor.from_pretrained",
                        classmethod(lambda cls, *a, **k: predictor))
    return calls


def test_eval_runs_every_seed_and_reports_each_and_pooled(fake_rollouts, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tmp_path / "m"), "--output", str(out), "--in-process", "--tasks", "1,9",
                 "--split", "test", "--seeds", "1,2"]) == 0
    assert [c["seed"] for c in fake_rollouts] == [1, 1, 2, 2]  # one env per seed and task
    assert all((c["init_start"], c["episodes"]) == (40, 10) for c in fake_rollouts)
    assert fake_rollouts[0]["video_dir"] != fake_rollouts[2]["video_dir"]  # one video folder per seed
    result = json.loads((out / "results.json").read_text())
    assert result["evaluated_on"] == {"init_states": "40–49", "splits": ["test"], "seeds": [1, 2], "tasks": [1, 9],
                                      "episodes_per_seed": 20}
    assert {e["seed"] for e in result["episodes"]} == {1, 2} and len(result["episodes"]) == 40
    per_seed, pooled = result["per_seed"], result["summary"]["all tasks"]
    assert list(per_seed) == ["1", "2"] and all(r["all tasks"]["trials"] == 20 for r in per_seed.values())
    assert pooled["trials"] == 40
    assert pooled["successes"] == sum(r["all tasks"]["successes"] for r in per_seed.values())
    assert pooled["ci95"][0] < pooled["rate"] < pooled["ci95"][1]
    assert (out / "success.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "env seed 1:" in printed and "pooled over seeds [1, 2]" in printed


def test_select_chooses_on_validation_and_refuses_test_states(fake_rollouts, tmp_path, capsys):
    out = tmp_path / "select"
    common = ["select", "--model", str(tmp_path / "m"), "--output", str(out), "--in-process", "--tasks", "1,9"]
    assert main([*common, "--execute-steps", "8,4,2"]) == 0
    assert {(c["init_start"], c["episodes"], c["seed"]) for c in fake_rollouts} == {(35, 5, 0), (35, 5, 3)}
    sel = json.loads((out / "selection.json").read_text())
    assert sel["chosen"]["execute_steps"] == 4 and sel["chosen"]["label"] == "m/es4"
    assert sel["evaluated_on"]["splits"] == ["validation"] and sel["evaluated_on"]["seeds"] == [0, 3]
    rows = {r["label"]: r for r in sel["candidates"]}
    assert rows["m/es4"]["successes"] == max(r["successes"] for r in rows.values())
    assert rows["m/es4"]["p_vs_chosen"] == pytest.approx(1.0) and set(rows["m/es8"]["per_seed"]) == {"0", "3"}
    assert (out / "selection.png").stat().st_size > 1000
    assert "<- chosen" in capsys.readouterr().out

    ran = len(fake_rollouts)
    (tmp_path / "m").mkdir()
    assert main([*common, "--execute-steps", "8,4,2", "--apply"]) == 0  # resumed: all evaluated alike before
    assert len(fake_rollouts) == ran
    assert json.loads((tmp_path / "m" / "runtime.json").read_text()) == {"execute_steps": 4}  # travels with it

    capsys.readouterr()
    assert main([*common, "--init-start", "38", "--episodes", "5"]) == 2
    assert "overlap the test states" in capsys.readouterr().err
    assert main([*common, "--seeds", "0,1"]) == 2
    assert "overlap the test seeds" in capsys.readouterr().err
    assert len(fake_rollouts) == ran  # refused before any episode ran


def test_candidates_and_ties():
    names = [c.label for c in candidates(["runs/a/checkpoints/step_1", "runs/b/checkpoints/step_1"], [4, 8])]
    assert names == ["a_step_1/es4", "a_step_1/es8", "b_step_1/es4", "b_step_1/es8"]
    runs = {label: {"summary": {"all tasks": {"successes": k}}} for label, k in (("x", 3), ("y", 5), ("z", 5))}
    assert choose(runs) == "y"  # a tie goes to the one listed first


def test_record_stays_off_the_validation_and_test_states(tmp_path, capsys):
    cfg = RecordConfig(output="d", tasks=[1, 9])
    assert cfg.states_for(1) == list(range(35))
    cfg = RecordConfig(output="d", tasks=[1, 9], init_states=[0, 1], task_init_states={9: [5]}, seeds=[0, 4],
                       repeats=2, dart_noise=0.1)
    assert cfg.schedule()[:3] == [(0, 1, 0, 0), (0, 1, 0, 1), (0, 1, 1, 0)]
    assert len(cfg.schedule()) == 2 * (2 + 1) * 2 and cfg.schedule()[4] == (0, 9, 5, 0)
    with pytest.raises(ValueError, match="validation and test splits"):
        RecordConfig(output="d", episodes=40)  # 0-39: the old default reached into validation
    assert RecordConfig(output="d", episodes=40, allow_eval_states=True).states_for(1)[-1] == 39
    with pytest.raises(ValueError, match="overlap the test seeds"):
        RecordConfig(output="d", seeds=[0, 1])
    with pytest.raises(ValueError, match="same episode again"):
        RecordConfig(output="d", repeats=2)
    with pytest.raises(ValueError, match="not among the tasks"):
        RecordConfig(output="d", tasks=[1], task_init_states={4: [0]})
    assert main(["record", "--output", str(tmp_path / "d"), "--tasks", "1,9", "--init-states", "0-34",
                 "--init-states", "9=30-44"]) == 2
    err = capsys.readouterr().err
    assert "task 9: init states 35–44 overlap" in err and "--allow-eval-states" in err
    assert not (tmp_path / "d").exists()  # refused before anything started
