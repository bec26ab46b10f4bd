"""The `bitvla` command: info and convert."""

import pytest

import tiny
from bitvla_ros.cli import main


def test_info_full_size_matches_the_published_parameter_counts(capsys):
    assert main(["info", "--preset", "bitvla-3b"]) == 0
    out = capsys.readouterr().out
    rows = {line[:34].strip(): line[34:].split() for line in out.splitlines() if line[:34].strip()}
    # reference/bitvla.md §1.10
    assert rows["LLM ternary linears"][0] == "2,084,044,800"
    assert rows["LLM token embedding"][0] == "328,355,840"
    assert rows["vision ternary linears"][0] == "395,845,632"
    assert rows["projector"][0] == "9,507,840"
    assert rows["action head"][0] == "59,059,207"
    assert rows["proprio projector"][0] == "6,579,200"
    assert rows["total"][0] == "2,885,187,751"
    # packed: 2 bits a ternary weight (+ a scale per matrix), int8 embedding rows (+ a scale per row)
    assert rows["LLM ternary linears"][3:5] == ["521.0", "MB"]
    assert rows["LLM token embedding"][3:5] == ["328.9", "MB"]
    assert "backend 'auto' -> cpu" in out or "backend 'auto' -> reference" in out  # cpu if its C++ builds


def test_convert_and_info_on_a_model_folder(tmp_path, capsys):
    src = tiny.write_published_checkpoint(tmp_path / "pub")
    assert main(["convert", str(src), str(tmp_path / "packed")]) == 0
    assert "wrote packed model" in capsys.readouterr().out
    assert main(["info", "--model", str(tmp_path / "packed")]) == 0
    out = capsys.readouterr().out
    assert "packed format" in out and "libero_spatial_no_noops" in out


def test_errors_are_one_line_not_tracebacks(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["info", "--model", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["info", "--preset", "bitvla-3b", "--model", "x"])
