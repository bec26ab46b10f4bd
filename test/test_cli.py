"""The `bitvla` command: info and convert, and the flags derived from settings dataclasses."""

import argparse
from dataclasses import dataclass, fields

import pytest

import tiny
from bitvla_ros.arguments import add_arguments, cli_fields, from_arguments, setting
from bitvla_ros.cli import build_parser, main
from bitvla_ros.train.settings import DistillConfig, TrainConfig


def test_info_full_size_matches_the_published_parameter_counts(capsys):
    assert main(["info", "--preset", "bitvla-3b"]) == 0
    out = capsys.readouterr().out
    rows = {line[:34].strip(): line[34:].split() for line in out.splitlines() if line[:34].strip()}
    # the published parameter counts per part (docs/model.md)
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


# --- flags derived from the settings dataclasses ------------------------------------------------

@pytest.mark.parametrize("command,kind,required", [
    ("train", TrainConfig, ["--dataset", "d1", "--output", "o"]),
    ("distill", DistillConfig, ["--model", "m", "--output", "o"]),
])
def test_train_and_distill_flags_are_the_settings_fields(command, kind, required):
    parser = build_parser()
    args = parser.parse_args([command, *required])
    got = from_arguments(kind, args)
    first, second = (f.name for f in fields(kind)[:2])
    expected = kind(**{first: getattr(got, first), second: "o"})
    assert got == expected  # every default comes from the dataclass
    assert getattr(got, first) in (["d1"], "m")
    assert {f.name for f in cli_fields(kind)} <= set(vars(args))


def test_flag_forms_follow_the_field_types():
    args = build_parser().parse_args(["train", "--dataset", "a", "--dataset", "b", "--output", "o", "--no-image-aug",
                                      "--lr", "1e-3", "--steps", "7", "--init", "ckpt", "--fp-vision"])
    cfg = from_arguments(TrainConfig, args)
    assert cfg.dataset == ["a", "b"] and cfg.image_aug is False and cfg.fp_vision is True
    assert (cfg.lr, cfg.steps, cfg.init) == (1e-3, 7, "ckpt")
    args = build_parser().parse_args(["distill", "--model", "m", "--output", "o", "--images", "x", "y",
                                      "--align-weight", "0.5", "--eval-images", "9"])
    cfg = from_arguments(DistillConfig, args)
    assert cfg.images == ["x", "y"] and cfg.dataset is None and (cfg.align_weight, cfg.eval_images) == (0.5, 9)


def test_a_field_without_a_command_line_form_is_refused():
    @dataclass
    class Odd:
        table: dict = setting(default_factory=dict, help="no flag can say this")

    with pytest.raises(TypeError, match=r"Odd.table.*cli=False"):
        add_arguments(argparse.ArgumentParser(), Odd)
