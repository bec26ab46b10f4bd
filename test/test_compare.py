"""`bitvla compare`: eval results side by side, with Fisher's exact test against the first run."""

import json
import math

import pytest

from bitvla_ros.cli import main
from bitvla_ros.sim.compare import compare, differing_settings, fisher_exact
from bitvla_ros.sim.evaluation import summarize


def _results(folder, outcomes: dict[str, list[bool]], **config):
    episodes = [{"instruction": task, "success": ok, "steps": 100} for task, oks in outcomes.items() for ok in oks]
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"config": {"seed": 1, "init_start": 40, **config},
                                                     "summary": summarize(episodes)}))
    return folder


def test_fisher_exact_matches_hand_computed_tables():
    # 3/3 vs 0/3: the observed table and its mirror are the two most extreme, each 1/C(6,3) = 1/20
    assert fisher_exact(3, 3, 0, 3) == pytest.approx(0.1)
    # a tea-tasting table, 4/4 vs 0/4: 2/C(8,4) = 2/70
    assert fisher_exact(4, 4, 0, 4) == pytest.approx(2 / 70)
    assert fisher_exact(5, 10, 5, 10) == pytest.approx(1.0)
    # 1/4 vs 3/4: hypergeometric over a in 0..4 with 4 successes in 8; P(1) = P(3) = 16/70, P(0) = P(4) = 1/70
    assert fisher_exact(1, 4, 3, 4) == pytest.approx((1 + 16 + 16 + 1) / 70)
    assert fisher_exact(24, 30, 18, 30) == pytest.approx(fisher_exact(18, 30, 24, 30))


def test_compare_keeps_shared_tasks_and_tests_against_the_first(tmp_path):
    a = _results(tmp_path / "a", {"stove": [True] * 9 + [False], "rack": [True] * 6 + [False] * 4})
    b = _results(tmp_path / "b", {"stove": [True] * 9 + [False], "rack": [False] * 10, "other": [True]})
    table = compare({"a": json.loads((a / "results.json").read_text()), "b": json.loads((b / "results.json").read_text())})
    assert list(table) == ["stove", "rack", "all tasks"]  # "other" is in one run only
    assert table["stove"]["b"]["p_vs_baseline"] == pytest.approx(1.0)
    assert table["rack"]["b"]["successes"] == 0 and table["rack"]["b"]["p_vs_baseline"] < 0.02
    assert table["rack"]["a"]["ci95"][0] < 0.6 < table["rack"]["a"]["ci95"][1]


def test_cli_prints_table_writes_chart_and_flags_differing_settings(tmp_path, capsys):
    a = _results(tmp_path / "fp", {"stove": [True, True, False]}, execute_steps=4)
    b = _results(tmp_path / "ternary", {"stove": [True, False, False]}, execute_steps=8)
    assert main(["compare", f"FP={a}", str(b / "results.json"), "--output", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "FP" in out and "ternary" in out and "p=" in out
    assert "execute_steps" in out  # the runs were not evaluated alike
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert saved["stove"]["ternary"]["successes"] == 1
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 1000
    assert differing_settings({"x": {"config": {"seed": 1}}, "y": {"config": {"seed": 1}}}) == {}
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "results.json" in capsys.readouterr().err
    assert not math.isnan(saved["stove"]["FP"]["p_vs_baseline"])
